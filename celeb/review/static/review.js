// The review page's leaderboard: sorting, filtering, the best-per-trial switch, and the lightbox for the
// card panels. State lives in the URL's hash (#sort=<column>&dir=asc|desc&q=<filter>&best=1), so a view
// can be shared as a link. Inlined into review.html by templates/review.html.j2 (the page is one file).
// body[data-state] turns "ready" once set up, or "error" (with data-error) so a headless test can tell.
(function () {
  try {
    var table = document.getElementById("board"), tbody = table.tBodies[0];
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var rows = Array.prototype.slice.call(tbody.rows);
    var names = heads.map(function (th) { return th.textContent; });
    var filter = document.getElementById("filter"), bestOnly = document.getElementById("best-only");
    var count = document.getElementById("count"), state = {sort: null, dir: "asc", q: "", best: false};

    function readHash() {
      var params = new URLSearchParams(location.hash.slice(1));
      state.sort = params.get("sort"); state.dir = params.get("dir") === "desc" ? "desc" : "asc";
      state.q = params.get("q") || ""; state.best = params.get("best") === "1";
      filter.value = state.q; bestOnly.checked = state.best;
    }
    function writeHash() {
      var params = new URLSearchParams();
      if (state.sort !== null) { params.set("sort", state.sort); params.set("dir", state.dir); }
      if (state.q) params.set("q", state.q);
      if (state.best) params.set("best", "1");
      history.replaceState(null, "", "#" + params.toString());
    }
    function key(row, col) { return row.cells[col].getAttribute("data-v"); }
    function sortRows() {
      var col = names.indexOf(state.sort);
      heads.forEach(function (th) { th.removeAttribute("data-dir"); });
      if (col < 0) return;
      heads[col].setAttribute("data-dir", state.dir);
      var numeric = heads[col].getAttribute("data-type") === "num", sign = state.dir === "desc" ? -1 : 1;
      var order = rows.map(function (row, i) { return [row, i]; });
      order.sort(function (a, b) {
        var x = key(a[0], col), y = key(b[0], col);
        if (x === "" || y === "") return (x === "") - (y === "") || a[1] - b[1];  // blanks last
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return sign * c || a[1] - b[1];
      });
      order.forEach(function (pair) { tbody.appendChild(pair[0]); });
    }
    function matches(row, term) {
      var m = term.match(/^(.+?)(<=|>=|=|<|>)(.+)$/);
      var col = m ? names.indexOf(m[1]) : -1;
      if (col < 0) return row.textContent.toLowerCase().indexOf(term) >= 0;
      var v = key(row, col), x = parseFloat(v), y = parseFloat(m[3]);
      if (m[2] === "=") return isNaN(y) ? v.toLowerCase() === m[3] : x === y;
      if (v === "" || isNaN(x) || isNaN(y)) return false;
      return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y}[m[2]];
    }
    function filterRows() {
      var terms = state.q.toLowerCase().split(/\s+/).filter(Boolean), shown = 0;
      rows.forEach(function (row) {
        var ok = (!state.best || row.getAttribute("data-best") === "1") &&
                 terms.every(function (t) { return matches(row, t); });
        row.hidden = !ok; shown += ok;
      });
      count.textContent = shown + " of " + rows.length + " checkpoints";
      count.setAttribute("data-shown", shown);
    }
    function update() { sortRows(); filterRows(); writeHash(); }

    heads.forEach(function (th, i) {
      th.addEventListener("click", function () {
        state.dir = state.sort === names[i] && state.dir === "asc" ? "desc" : "asc";
        state.sort = names[i]; update();
      });
    });
    filter.addEventListener("input", function () { state.q = filter.value; update(); });
    bestOnly.addEventListener("change", function () { state.best = bestOnly.checked; update(); });
    var box = document.getElementById("lightbox"), big = box.querySelector("img");
    Array.prototype.forEach.call(document.querySelectorAll("img.panel"), function (img) {
      img.addEventListener("click", function () { big.src = img.src; box.hidden = false; });
    });
    box.addEventListener("click", function () { box.hidden = true; });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") box.hidden = true; });
    readHash(); update();
    document.body.setAttribute("data-state", "ready");
  } catch (err) {
    document.body.setAttribute("data-state", "error");
    document.body.setAttribute("data-error", String(err));
  }
})();
