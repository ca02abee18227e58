"""`celeb review` and `celeb traverse`: finding and ranking the checkpoints of local runs and Tune trials,
the rule against ranking on a loss with another KL weight, export -> load round trips, the
self-contained review page (rendered in headless Chromium, also with 100 trials), sweeps read at a
URI (file:// and fsspec's memory://, as s3:// and gs://) and the CLI."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from celeb import storage
from celeb.training.checkpoint import META_FILE, STATE_FILE, list_checkpoints
from celeb.cli import main
from celeb.config import config_from_dict
from celeb.training import sealed
from celeb.data.dataset import load_data
from celeb.review import (RankingWarning, export_checkpoint, find_checkpoints, infer_mode, load_model,
                          rank_checkpoints, trial_names, write_review)
from celeb.training.loop import fit
from celeb.training.sealed import MANIFEST_FILE

CVAE_TRIALS = {  # trial dir -> overrides: two local runs and one Tune trial, with different β
    "run_b1": {"cvae.beta": 1.0, "cvae.width": 4, "cvae.latent_dim": 4, "lr": 1e-3},
    "run_b4": {"cvae.beta": 4.0, "cvae.width": 8, "cvae.latent_dim": 6, "lr": 3e-3},
    "trial_00003": {"cvae.beta": 2.0, "cvae.width": 4, "cvae.latent_dim": 5, "lr": 2e-3},
}
EVAL_IMAGES = 200


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(synthetic_data) -> Path:
    return synthetic_data


def tiny_config(data_dir: Path, task: str = "cvae", **overrides):
    base = {"task": task, "device": "cpu", "epochs": 2, "batch_size": 16, "max_train_batches": 2, "num_recon": 4,
            "data.data_dir": str(data_dir), "cvae.conditions": ["Male", "Smiling"], "cvae.panel_every": 0}
    return config_from_dict({**base, **overrides})


@pytest.fixture(scope="module")
def roots(data_dir, tmp_path_factory) -> dict[str, Path]:
    """Real checkpoints: sweep/ holds two local runs (runs/<run>/checkpoints/epoch_NNN), tune/ one trial in
    Ray Tune's layout (<sweep>/<trial>/checkpoint_00000K + params.json), cls/ one classifier run."""
    base = tmp_path_factory.mktemp("checkpoints")
    data = load_data(data_dir, "balanced", 64, 148)
    for name, overrides in CVAE_TRIALS.items():
        run_dir = base / ("sweep" if name.startswith("run") else "work") / name
        fit(tiny_config(data_dir, **overrides), data, run_dir=run_dir)
    trial = base / "tune" / "cvae_sweep" / "trial_00003"
    for k, checkpoint in enumerate(list_checkpoints(base / "work" / "trial_00003" / "checkpoints")):
        shutil.copytree(checkpoint, trial / f"checkpoint_{k:06d}")
    (trial / "params.json").write_text(json.dumps({"cvae.beta": 2.0, "seed": 0}))
    fit(tiny_config(data_dir, "classifier", epochs=1), data, run_dir=base / "cls" / "run_c")
    return {"sweep": base / "sweep", "tune": base / "tune", "cls": base / "cls"}


@pytest.fixture(scope="module")
def table(roots) -> pd.DataFrame:
    return find_checkpoints([roots["sweep"], roots["tune"]])


# ----------------------------------------------------------------------------- finding


def test_find_checkpoints_reads_local_runs_and_tune_trials(table):
    assert set(table["trial"]) == set(CVAE_TRIALS)
    for _, row in table.iterrows():
        folder = Path(row["checkpoint"])
        assert (folder / STATE_FILE).is_file() and (folder / META_FILE).is_file()
        meta = json.loads((folder / META_FILE).read_text())
        assert row["epoch"] == meta["epoch"] and row["val/mse"] == meta["metrics"]["val/mse"]
    by_trial = table.drop_duplicates("trial").set_index("trial")
    for name, overrides in CVAE_TRIALS.items():
        for key, value in overrides.items():
            assert by_trial.loc[name, key] == value, (name, key)
    assert (by_trial["beta"] == by_trial["cvae.beta"]).all()  # the effective KL weight of each trial
    assert {"task", "seed", "batch_size", "val/loss", "val/mig_fixed", "train/lr"} <= set(table.columns)
    assert "val/kl_per_dim" not in table  # lists stay in meta.json
    tune_rows = table[table["trial"] == "trial_00003"]
    assert all(Path(c).name.startswith("checkpoint_") for c in tune_rows["checkpoint"])


def test_find_checkpoints_errors_name_the_folder(tmp_path):
    (tmp_path / "empty" / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoints under .*empty: looked for folders holding both "
                                                r"state.pt and meta.json"):
        find_checkpoints([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="nowhere not found"):
        find_checkpoints([tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=f"file://{tmp_path}/nowhere not found"):
        find_checkpoints([f"file://{tmp_path}/nowhere"])
    with pytest.raises(FileNotFoundError, match=f"no checkpoints under file://{tmp_path}/empty: looked for"):
        find_checkpoints([f"file://{tmp_path}/empty"])
    broken = tmp_path / "broken" / "checkpoints" / "epoch_001"
    broken.mkdir(parents=True)
    (broken / STATE_FILE).write_bytes(b"x")
    (broken / META_FILE).write_text('{"epoch": 1, "config": ')
    with pytest.raises(ValueError, match=r"epoch_001/meta.json is not valid JSON"):
        find_checkpoints([tmp_path / "broken"])


def test_trial_names_are_dir_names_disambiguated_by_parent():
    assert trial_names([Path("a/x"), Path("b/x"), Path("a/y")]) == ["a/x", "b/x", "y"]


# ----------------------------------------------------------------------------- ranking


def test_mode_is_inferred_from_the_metric_name():
    assert [infer_mode(m) for m in ("val/loss", "val/mse", "train/recon", "val/kl", "val/neg_elbo")] == ["min"] * 5
    assert [infer_mode(m) for m in ("val/mig_fixed", "val/balanced_accuracy", "val/auroc", "dci_score")] == ["max"] * 4
    assert infer_mode("val/active_dims") is None and infer_mode("epoch") is None


def test_rank_min_max_and_explicit_mode(table):
    lowest_first = rank_checkpoints(table, "val/mse")
    assert lowest_first.attrs["mode"] == "min"
    assert lowest_first["val/mse"].is_monotonic_increasing
    assert lowest_first["rank"].tolist() == list(range(1, len(table) + 1))
    highest_first = rank_checkpoints(table, "val/mig_fixed")
    assert highest_first.attrs["mode"] == "max" and highest_first["val/mig_fixed"].is_monotonic_decreasing
    assert rank_checkpoints(table, "val/mse", mode="max")["val/mse"].is_monotonic_decreasing
    assert rank_checkpoints(table, "val/active_dims", mode="max")["val/active_dims"].is_monotonic_decreasing


def test_checkpoints_without_the_metric_rank_last_without_a_rank(table):
    unevaluated = table.iloc[:1].assign(**{"val/mse": np.nan, "trial": "unevaluated"})
    ranked = rank_checkpoints(pd.concat([unevaluated, table], ignore_index=True), "val/mse")
    assert ranked["trial"].iloc[-1] == "unevaluated" and pd.isna(ranked["rank"].iloc[-1])
    assert ranked["rank"].iloc[:-1].tolist() == list(range(1, len(table) + 1))


def test_unknown_metric_lists_the_available_ones(table):
    with pytest.raises(ValueError, match=r"'val/ms'; did you mean val/mse.*available: .*val/loss.*val/mig_fixed"):
        rank_checkpoints(table, "val/ms")
    with pytest.raises(ValueError, match="pass --mode min or --mode max"):
        rank_checkpoints(table, "val/active_dims")
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        rank_checkpoints(table, "val/mse", mode="lowest")


def test_neg_elbo_is_refused_when_trials_used_another_kl_weight(table):
    with pytest.raises(ValueError, match=r"refusing to rank on val/neg_elbo: it weighs the KL by 1, but 2 trial\(s\) "
                                         r"trained with another KL weight \(β = 2.0, 4.0.*val/mse or val/mig_fixed"):
        rank_checkpoints(table, "val/neg_elbo")
    with pytest.raises(ValueError, match="refusing to rank on train/neg_elbo"):
        rank_checkpoints(table.assign(**{"train/neg_elbo": 1.0}), "train/neg_elbo")
    beta_one = table[table["beta"] == 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: every trial's objective is the ELBO
        ranked = rank_checkpoints(beta_one, "val/neg_elbo")
    assert ranked["val/neg_elbo"].is_monotonic_increasing


def test_val_loss_across_different_betas_comes_with_a_note(table):
    with pytest.warns(RankingWarning, match=r"different β \(1 to 4\).*partly ranks β"):
        ranked = rank_checkpoints(table, "val/loss")
    assert len(ranked.attrs["notes"]) == 1 and ranked["val/loss"].is_monotonic_increasing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rank_checkpoints(table, "val/mse").attrs["notes"] == []


# ----------------------------------------------------------------------------- export and load


def test_export_then_load_gives_the_same_model(table, data_dir, tmp_path):
    best = rank_checkpoints(table, "val/mse").iloc[0]
    out = export_checkpoint(best["checkpoint"], tmp_path / "export" / "best.pt")
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["best.pt"]  # one file, no temporary left
    from_file, from_dir = load_model(out), load_model(best["checkpoint"])
    meta = json.loads((Path(best["checkpoint"]) / META_FILE).read_text())
    assert from_file.config == from_dir.config == config_from_dict(meta["config"])
    assert from_file.metrics == meta["metrics"] and from_file.epoch == meta["epoch"] == best["epoch"]
    assert from_file.source == str(Path(best["checkpoint"]).resolve()) and from_file.code == meta["code"]
    assert not from_file.model.training and not from_dir.model.training

    data = load_data(data_dir, "balanced", 64, 148)
    rows = data.indices("val")[:8]
    x = torch.from_numpy(np.ascontiguousarray(data.images[rows])).permute(0, 3, 1, 2).float() / 255
    cond = torch.from_numpy(data.labels[rows][:, list(data.attribute_index(["Male", "Smiling"]))]).float()
    with torch.no_grad():
        assert torch.equal(from_file.model.reconstruct(x, cond), from_dir.model.reconstruct(x, cond))
        assert torch.equal(from_file.model.encode(x, cond)[0], from_dir.model.encode(x, cond)[0])


def test_load_of_a_corrupt_or_missing_file_is_a_clear_error(table, tmp_path):
    exported = export_checkpoint(table.iloc[0]["checkpoint"], tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=rf"{bad.name} is corrupt or truncated.*export it again"):
            load_model(bad)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {}, "config": {}, "epoch": 1, "extra": Path("x")}, pickled)  # a Path is not weights-only
    with pytest.raises(ValueError, match="holds Python objects besides tensors"):
        load_model(pickled)
    tensor_only = tmp_path / "tensor.pt"
    torch.save({"weights": torch.zeros(3)}, tensor_only)
    with pytest.raises(ValueError, match="holds no celeb model"):
        load_model(tensor_only)
    with pytest.raises(FileNotFoundError, match="missing.pt not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "not_a_checkpoint").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint folder"):
        load_model(tmp_path / "not_a_checkpoint")


def test_classifier_checkpoint_loads_in_eval_mode(roots):
    loaded = load_model(find_checkpoints([roots["cls"]]).iloc[0]["checkpoint"])
    assert loaded.task == "classifier" and not loaded.model.training
    with torch.no_grad():
        assert loaded.model(torch.rand(2, 3, 64, 64)).logits.shape == (2, 40)


# ----------------------------------------------------------------------------- the page in a browser


def chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("headless Chromium is not installed (CI installs it)")


def browse(page: Path, profile: Path, *args: str, fragment: str = "") -> str:
    """Run headless Chromium on a local page (no network); return what it printed (the DOM for --dump-dom)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    done = subprocess.run([chromium(), *flags, *args, page.resolve().as_uri() + fragment],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Board(HTMLParser):
    """The leaderboard rows of a dumped DOM: (trial, hidden, [cell sort keys]) in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, bool, list[str]]] = []
        self.body_attrs: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body_attrs = attrs
        elif tag == "tr" and "data-trial" in attrs:
            self.rows.append((attrs["data-trial"], "hidden" in attrs, []))
        elif tag == "td" and self.rows and "data-v" in attrs:
            self.rows[-1][2].append(attrs["data-v"])


def parse(dom: str) -> Board:
    board = Board()
    board.feed(dom)
    return board


def assert_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"""url\(\s*["']?(https?:)?//|@import""", text, re.I)


def assert_not_blank(png: Path) -> None:
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (1000, 1400)
    not_background = (np.abs(pixels - pixels[0, 0]).sum(axis=2) > 30).mean()
    assert not_background > 0.05 and pixels.std() > 20


def test_cli_review_writes_leaderboard_page_and_export(roots, table, tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["review", str(roots["sweep"]), str(roots["tune"]), "--metric", "val/mse", "--top", "2",
                 "--out", str(out), "--export", str(tmp_path / "best.pt"), "--images", str(EVAL_IMAGES)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(table)} checkpoints of 3 trials, ranked by val/mse (min)" in printed
    for path in (out / "review.html", out / "leaderboard.csv", tmp_path / "best.pt"):
        assert str(path) in printed and path.is_file()

    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == len(table) and board["rank"].tolist() == list(range(1, len(table) + 1))
    assert board["val/mse"].is_monotonic_increasing
    assert load_model(tmp_path / "best.pt").source == str(Path(board["checkpoint"].iloc[0]).resolve())

    page = (out / "review.html").read_text()
    assert_self_contained(page)
    assert page.count('<article class="card"') == 2
    best_two = board.drop_duplicates("trial")["trial"].head(2).tolist()
    assert [m for m in re.findall(r'<article class="card" id="card-\d" data-trial="([^"]+)"', page)] == best_two
    assert page.count('data-panel="traversal"') == 2 and page.count('data-panel="kl_per_dim"') == 2
    assert "Ranked by <code>val/mse</code> (min" in page and str(tmp_path / "best.pt") in page

    # The page is served best first; the hash asks the JS to sort worst first and filter on β.
    dom = browse(out / "review.html", tmp_path / "profile", "--dump-dom",
                 fragment="#sort=val/mse&dir=desc&q=cvae.beta>1")
    rendered = parse(dom)
    assert rendered.body_attrs.get("data-state") == "ready", rendered.body_attrs.get("data-error")
    assert [trial for trial, _, _ in rendered.rows] == board["trial"].tolist()[::-1]
    assert [float(cells[3]) for _, _, cells in rendered.rows] == board["val/mse"].tolist()[::-1]
    shown = [trial for trial, hidden, _ in rendered.rows if not hidden]
    assert sorted(shown) == sorted(table.loc[table["cvae.beta"] > 1, "trial"]) and len(shown) < len(table)
    assert f'data-shown="{len(shown)}"' in dom

    browse(out / "review.html", tmp_path / "profile", "--screenshot=" + str(tmp_path / "shot.png"),
           "--window-size=1400,1000")
    assert_not_blank(tmp_path / "shot.png")


class Texts(HTMLParser):
    """Every text node (with its innermost open tag) and every attribute of a page, unescaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.texts: list[tuple[str, str]] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, name, value) for name, value in attrs]
        if tag not in ("meta", "img", "input"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]

    def handle_data(self, data):
        self.texts.append((self.open[-1] if self.open else "", data))


def test_page_escapes_hostile_values_exactly_once(table):
    """A trial name, config value, note, root or export path holding markup reaches the page as text:
    escaped once (no injected tag, nothing double-escaped), and the static CSS and JS are inlined verbatim."""
    from importlib import resources

    from celeb.review import Card, render_page

    hostile = """<script>alert('x')</script> & "q" &amp;"""
    rows = table.assign(**{"classifier.backbone": hostile})
    rows.loc[0, ["trial", "val/mse"]] = [hostile, -1.0]  # the best row, so it is also in the headline
    ranked = rank_checkpoints(rows, "val/mse")
    card = Card(row=ranked.iloc[0].to_dict(), config={"data": {"data_dir": hostile}}, note=hostile)
    page = render_page(ranked, [card], roots=[hostile], notes=[hostile], export=Path(hostile))

    assert page.count("<script") == 1 and "alert('x')" not in page and "<script>alert" not in page
    assert "&amp;lt;" not in page and "&amp;amp;amp;" not in page  # the value's own "&amp;" is escaped once
    parsed = Texts()
    parsed.feed(page)
    assert ("h3", f"#1 {hostile}") in parsed.texts
    shown_in = [tag for tag, text in parsed.texts if text == hostile]
    assert shown_in.count("code") == 2 and shown_in.count("b") == 1  # the root, the export; the best trial
    assert shown_in.count("td") == 1 + len(rows)  # the trial's cell and every backbone cell
    assert shown_in.count("p") == 1 and shown_in.count("li") == 1  # the card's note and the page's
    assert ("pre", yaml.safe_dump(card.config, sort_keys=False)) in parsed.texts
    assert ("article", "data-trial", hostile) in parsed.attrs and ("tr", "data-trial", hostile) in parsed.attrs
    assert ("td", "data-v", hostile) in parsed.attrs
    static = resources.files("celeb.review") / "static"
    for name in ("review.css", "review.js"):
        assert (static / name).read_text(encoding="utf-8") in page


def test_classifier_cards_have_metrics_and_no_panels(roots, tmp_path):
    result = write_review([roots["cls"]], tmp_path, "val/balanced_accuracy", top=1, progress=False)
    assert result.leaderboard.attrs["mode"] == "max" and result.cards[0].review is None and not result.notes
    page = result.html.read_text()
    assert 'data-panel="' not in page and "val/balanced_accuracy</th><td>" in page
    assert "backbone: small" in page  # the config is on the card


def test_face_panels_are_jpeg_unless_lossless_and_lossless_keeps_every_pixel(roots, tmp_path):
    from celeb.training.tracking import as_image_array

    for lossless in (False, True):
        result = write_review([roots["sweep"]], tmp_path / str(lossless), "val/mse", top=1, progress=False,
                              num_eval_images=EVAL_IMAGES, lossless=lossless)
        page = result.html.read_text()
        urls = dict(re.findall(r'data-panel="(\w+)"[^>]* src="data:image/(\w+);base64,', page))
        assert urls["kl_per_dim"] == "png"
        assert urls["traversal"] == urls["reconstructions"] == ("png" if lossless else "jpeg")
    encoded = re.search(r'data-panel="traversal"[^>]* src="data:image/png;base64,([^"]+)"', page).group(1)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))
    assert np.array_equal(shown, as_image_array(result.cards[0].review.images["traversal"]))


def test_a_card_whose_data_is_gone_says_so_and_the_review_goes_on(roots, tmp_path):
    moved = tmp_path / "sweep" / "moved_run" / "checkpoints" / "epoch_002"
    shutil.copytree(find_checkpoints([roots["sweep"]]).iloc[0]["checkpoint"], moved)
    state, seal = torch.load(moved / STATE_FILE, weights_only=True), sealed.check(moved)
    state["config"]["data"]["data_dir"] = str(tmp_path / "gone")
    torch.save(state, moved / STATE_FILE)
    sealed.seal(moved, seal)  # rewritten whole, so sealed again
    result = write_review([tmp_path / "sweep"], tmp_path / "out", "val/mse", top=1, progress=False)
    assert "no panels" in result.cards[0].note and "--data-dir" in result.cards[0].note
    assert "no panels" in result.html.read_text()
    with pytest.raises(FileNotFoundError, match="--data-dir .*nowhere not found"):
        write_review([tmp_path / "sweep"], tmp_path / "out", "val/mse", data_dir=tmp_path / "nowhere")


def test_page_with_100_trials_renders_every_row(roots, tmp_path):
    """100 trials x 2 checkpoints: the real CVAE trials first, the rest meta.json-only fakes ranked after them."""
    sweep = tmp_path / "sweep100"
    for root in (roots["sweep"], roots["tune"]):
        shutil.copytree(root, sweep / root.name)
    real = find_checkpoints([sweep])
    template = json.loads((Path(real.iloc[0]["checkpoint"]) / META_FILE).read_text())
    rng = np.random.default_rng(0)
    for t in range(100 - real["trial"].nunique()):
        for epoch in (1, 2):
            folder = sweep / "fake" / f"trial_{t:05d}" / f"checkpoint_{epoch - 1:06d}"
            folder.mkdir(parents=True)
            meta = json.loads(json.dumps(template))
            meta["epoch"] = epoch
            meta["config"]["cvae"]["beta"] = float(rng.choice([0.5, 1.0, 2.0, 4.0, 8.0]))
            meta["metrics"]["val/mse"] = float(real["val/mse"].max() + 0.01 + rng.random())
            (folder / META_FILE).write_text(json.dumps(meta))
            (folder / STATE_FILE).write_bytes(b"fake: never loaded unless in the top trials")

    result = write_review([sweep], tmp_path / "out", "val/mse", top=4, progress=False,
                          num_eval_images=EVAL_IMAGES)
    table = result.leaderboard
    assert table["trial"].nunique() == 100 and len(table) >= 197
    assert [card.review is not None for card in result.cards] == [True, True, True, False]
    assert "corrupt" in result.cards[3].note  # a fake made the top 4: its card says why it has no panels
    page = result.html
    assert page.stat().st_size < 10_000_000
    assert_self_contained(page.read_text())

    rendered = parse(browse(page, tmp_path / "profile", "--dump-dom", fragment="#best=1"))
    assert rendered.body_attrs.get("data-state") == "ready", rendered.body_attrs.get("data-error")
    assert len(rendered.rows) == len(table)
    assert sum(not hidden for _, hidden, _ in rendered.rows) == 100  # best checkpoint per trial
    browse(page, tmp_path / "profile", "--screenshot=" + str(tmp_path / "shot.png"), "--window-size=1400,1000")
    assert_not_blank(tmp_path / "shot.png")


# ----------------------------------------------------------------------------- sweeps at a URI


@pytest.fixture(scope="module", params=["file", "memory"])
def remote(request, roots, tmp_path_factory):
    """Copies of sweep/ and tune/ on a file system the review reaches only through celeb.storage: pyarrow's
    file:// (FileSystem.from_uri, the way s3:// and gs:// go) or fsspec's memory:// (nothing on the disk)."""
    if request.param == "file":
        base = f"file://{tmp_path_factory.mktemp('uri')}"
    else:
        base = f"memory://celeb-review-{tmp_path_factory.mktemp('memory').name}"
    for name in ("sweep", "tune"):
        storage.copy_dir(roots[name], storage.join(base, name))
    yield base
    storage.delete_dir(base)


def local_twin(path: str, remote: str, roots) -> str:
    """The local folder a path of the `remote` copy was copied from."""
    return path.replace(remote, str(roots["sweep"].parent), 1)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_review_of_a_uri_root_has_the_local_leaderboard(roots, remote, tmp_path):
    local = write_review([roots["sweep"], roots["tune"]], tmp_path / "local", "val/mse", top=0, progress=False)
    at_uri = write_review([storage.join(remote, "sweep"), storage.join(remote, "tune")], storage.join(remote, "out"),
                          "val/mse", top=0, progress=False)
    assert at_uri.csv == storage.join(remote, "out", "leaderboard.csv")
    assert storage.list_names(storage.join(remote, "out")) == ["leaderboard.csv", "review.html"]
    local_board = pd.read_csv(local.csv)
    uri_board = pd.read_csv(io.StringIO(storage.read_text(at_uri.csv)))
    assert len(uri_board) == len(local_board) > 0
    pd.testing.assert_frame_equal(uri_board.drop(columns="checkpoint"), local_board.drop(columns="checkpoint"))
    assert uri_board["checkpoint"].str.startswith(remote + "/").all()
    assert [local_twin(c, remote, roots) for c in uri_board["checkpoint"]] == local_board["checkpoint"].tolist()


def test_cards_and_export_read_the_weights_at_the_uri(roots, remote, tmp_path):
    result = write_review([storage.join(remote, "sweep")], tmp_path / "out", "val/mse", top=1,
                          export=tmp_path / "best.pt", progress=False, num_eval_images=EVAL_IMAGES, all_metrics=False)
    best = result.leaderboard.iloc[0]["checkpoint"]
    assert best.startswith(storage.join(remote, "sweep") + "/") and result.export == tmp_path / "best.pt"
    assert result.cards[0].review is not None and not result.cards[0].note  # panels of the model at the URI
    exported, twin = load_model(tmp_path / "best.pt"), load_model(local_twin(best, remote, roots))
    assert exported.source == best and exported.epoch == twin.epoch and exported.config == twin.config
    assert same_weights(exported.model, twin.model)

    to_uri = export_checkpoint(best, storage.join(remote, "exports", "best.pt"))
    assert to_uri == storage.join(remote, "exports", "best.pt")
    for loaded in (load_model(to_uri), load_model(best), load_model(storage.join(best, STATE_FILE))):
        assert loaded.source == best and loaded.code == twin.code and not loaded.model.training
        assert same_weights(loaded.model, twin.model)


def test_torn_checkpoints_at_a_uri_are_treated_as_local_ones(roots, remote, tmp_path):
    """A copy cut short before state.pt is no checkpoint, nor one whose manifest says a file is short; one
    without a manifest is listed (as checkpoints from before sealing are), at a URI exactly as locally."""
    local = tmp_path / "torn"
    shutil.copytree(roots["sweep"], local / "sweep")
    complete = list_checkpoints(local / "sweep" / "run_b1" / "checkpoints")[-1]
    for trial, missing in (("cut_before_state", STATE_FILE), ("cut_before_manifest", MANIFEST_FILE)):
        torn = local / "sweep" / trial / "checkpoints" / complete.name
        shutil.copytree(complete, torn)
        (torn / missing).unlink()
    short = local / "sweep" / "state_cut_short" / "checkpoints" / complete.name
    shutil.copytree(complete, short)
    with open(short / STATE_FILE, "r+b") as f:
        f.truncate(100)
    storage.copy_dir(local, storage.join(remote, "torn"))
    with pytest.warns(UserWarning, match=r"left out .*state_cut_short.*state\.pt has 100 bytes"):
        local_table = find_checkpoints([local])
    with pytest.warns(UserWarning, match=r"left out .*state_cut_short"):
        uri_table = find_checkpoints([storage.join(remote, "torn")])
    assert "cut_before_state" not in set(uri_table["trial"]) and "cut_before_manifest" in set(uri_table["trial"])
    assert "state_cut_short" not in set(uri_table["trial"]) | set(local_table["trial"])
    pd.testing.assert_frame_equal(uri_table.drop(columns="checkpoint"), local_table.drop(columns="checkpoint"))


def test_cli_review_of_a_uri_root_writes_a_local_folder_named_after_the_sweep(remote, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.chdir(tmp_path)
    sweep, export = storage.join(remote, "sweep"), storage.join(remote, "cli", "best.pt")
    assert main(["review", sweep, "--metric", "val/mse", "--top", "0", "--export", export]) == 0
    printed = capsys.readouterr().out
    assert f"{sweep} is remote storage: the review goes to the local folder ./review-sweep" in printed
    assert "page:        review-sweep/review.html" in printed and (tmp_path / "review-sweep" / "review.html").is_file()
    board = pd.read_csv(tmp_path / "review-sweep" / "leaderboard.csv")
    assert board["checkpoint"].str.startswith(sweep + "/").all()
    assert f"exported:    {export} " in printed and load_model(export).source == board["checkpoint"].iloc[0]


# ----------------------------------------------------------------------------- the CLI


def test_cli_traverse_writes_panels_and_dimension_table(table, tmp_path, capsys):
    checkpoint = Path(table[table["trial"] == "run_b4"].iloc[0]["checkpoint"])
    exported = export_checkpoint(checkpoint, tmp_path / "b4.pt")
    # Collapse latent dim 5 (mu = 0, logvar = 0: KL exactly 0) so the model has an inactive dim to leave out.
    state = torch.load(exported, weights_only=True)
    for row in (5, 6 + 5):
        state["model"]["to_posterior.weight"][row] = 0.0
        state["model"]["to_posterior.bias"][row] = 0.0
    torch.save(state, exported)

    assert main(["traverse", str(exported), "--faces", "2", "--steps", "3", "--images", str(EVAL_IMAGES)]) == 0
    out = tmp_path / "b4_traverse"
    printed = capsys.readouterr().out
    assert "5 of 6 latent dims active" in printed and str(out) in printed
    for name in ("traversal.png", "conditions.png", "reconstructions.png", "kl_per_dim.png", "dimensions.csv"):
        assert (out / name).is_file(), name
    dims = pd.read_csv(out / "dimensions.csv")
    assert dims["dim"].tolist()[-1] == 5 and dims["kl"].iloc[-1] == 0.0 and not dims["active"].iloc[-1]
    assert dims["kl"].is_monotonic_decreasing and sorted(dims["dim"]) == list(range(6))
    assert Image.open(out / "traversal.png").height == 2 + 6 * (64 + 2)  # one row per dim, the inactive one greyed
    assert Image.open(out / "reconstructions.png").size == (2 + 2 * 66, 2 + 2 * 66)  # 2 faces above 2 reconstructions

    assert main(["traverse", str(exported), "--out", str(tmp_path / "active"), "--faces", "2", "--steps", "3",
                 "--active-only", "--images", str(EVAL_IMAGES)]) == 0
    assert Image.open(tmp_path / "active" / "traversal.png").height == 2 + 5 * (64 + 2)


def test_cli_errors_are_one_clear_line(roots, table, tmp_path, capsys):
    assert main(["review", str(roots["sweep"]), "--metric", "val/msee", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("celeb review: error: no checkpoint reports the metric 'val/msee'; did you mean val/mse")
    assert "\n" not in error
    assert main(["review", str(roots["sweep"]), "--metric", "val/neg_elbo", "--out", str(tmp_path)]) == 2
    assert "refusing to rank on val/neg_elbo" in capsys.readouterr().err
    classifier = find_checkpoints([roots["cls"]]).iloc[0]["checkpoint"]
    assert main(["traverse", classifier]) == 2
    assert "is a classifier checkpoint; `celeb traverse` needs a cvae or nvae checkpoint" in capsys.readouterr().err
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 64)
    assert main(["traverse", str(tmp_path / "broken.pt")]) == 2
    assert "broken.pt is corrupt or truncated" in capsys.readouterr().err
