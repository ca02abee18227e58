"""All of CelebA through every step on one node: time and peak memory of each, at full size.

    python benchmarks/bench_scale.py [--n 202599] [--identities 10177] [--out DIR] [--steps ...]
    python benchmarks/bench_scale.py --n 3000          # a quick run of every step

Each step runs as its own process, as a user runs it, while a sampler reads the memory of its whole
process tree from /proc every 0.2 s. It prints, per step: wall time, the peak of the tree's
proportional set size (PSS: pages shared between processes, like a memory-mapped cache's, count
once in the sum) and the peak resident set of its largest process (RSS, what `/usr/bin/time -v`
calls maximum resident set size).

Steps (`--steps`, default all, in this order):
  synth      `celeb synth --n N --identities I`
  prepare64  `celeb prepare --size 64` (crop 148)
  split      `celeb split --strategy balanced`
  loader     one epoch of float batches (256) over the train split at 64 px (placement auto -> ram)
  prepare299 `celeb prepare --size 299 --crop 178`: the Inception size, every image decoded from its
             JPEG (all of CelebA: 54 GB, more than this machine's RAM)
  stream     images/s of one epoch streamed from the 299-px cache (>= 20,000 images, its pages dropped
             from the page cache first with posix_fadvise), against the same rows from RAM
  packed     4 trials' loaders at once on one node, each an epoch over the 64-px train split: the
             tree's peak PSS, for this tree and (with --before-tree, a checkout of an older commit) the old loader
  review     `celeb review` of a sweep of 100 trials (copies of one small trained checkpoint with
             different metrics), top 5 cards
Targets (2 cores): synth <= 15 min; prepare64 <= 4 min and <= 4 GB; split <= 1 min; prepare299 of all
images without holding the cache in RAM; review of 100 trials <= 5 min.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELEB = [sys.executable, "-m", "celeb"]
STEPS = ("synth", "prepare64", "split", "loader", "prepare299", "stream", "packed", "review")
TRIALS = 100
PACKED = 4


# ----------------------------------------------------------------------------- measuring a process tree


@dataclass
class Measured:
    seconds: float
    peak_pss_gb: float
    peak_rss_gb: float
    output: str


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> Measured:
    """Run `command`, sampling its process tree's PSS (sum) and RSS (largest) until it exits."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, cwd=cwd)
    peaks = {"pss": 0, "rss": 0}
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        pids = _tree(process.pid)
        peaks["pss"] = max(peaks["pss"], sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
        peaks["rss"] = max(peaks["rss"], max(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids))
        time.sleep(0.2)
    reader.join()
    seconds = time.perf_counter() - started
    text = "".join(output)
    if process.returncode != 0:
        raise SystemExit(f"bench_scale: {' '.join(command)} failed ({process.returncode}):\n{text[-3000:]}")
    return Measured(seconds, peaks["pss"] / 1e6, peaks["rss"] / 1e6, text)


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


# ----------------------------------------------------------------------------- the steps' scripts

LOADER_EPOCH = """
    import os, sys, time
    from pathlib import Path
    if os.environ.get("CELEB_TREE"):  # run that checkout's celeb, not the editable install's
        sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
        sys.path.insert(0, os.environ["CELEB_TREE"])
    data_dir, placement, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    try:
        from celeb.data.dataset import load_data
        from celeb.data.loader import BatchLoader
        new = True
    except ImportError:  # an older tree (--before-tree): flat modules, the loader copies its rows
        from celeb.dataset import load_data
        from celeb.loader import BatchLoader
        new = False
    data = load_data(data_dir, image_size=int(sys.argv[4]) if len(sys.argv) > 4 else 64)
    rows = data.indices("train")
    started = time.perf_counter()
    kwargs = {"placement": placement} if new else {}
    loader = BatchLoader(data.images, data.labels, rows, 256, seed=0, **kwargs)
    built = time.perf_counter() - started
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        started = time.perf_counter()
        n = sum(len(x) for x, _ in loader)
        seconds = time.perf_counter() - started
        print(f"epoch {epoch}: {n} images in {seconds:.2f} s = {n / seconds:,.0f} images/s")
    print(f"built in {built:.2f} s; placement {getattr(loader, 'placement', 'copy into RAM (old loader)')}")
"""

STREAM_EPOCH = """
    import gc, json, os, sys, time
    import numpy as np
    from celeb.data.cache import open_cache
    from celeb.data.loader import BatchLoader, RowReader
    cache, count = sys.argv[1], int(sys.argv[2])
    def mapped():  # a fresh mapping: pages an earlier one touched would stay mapped and could not be dropped
        return open_cache(cache)[0]
    def drop_page_cache():
        images = mapped()
        fd = os.open(images.filename, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    def epoch(images, placement, output):
        loader = BatchLoader(images, None, rows, 64, seed=0, placement=placement, output=output)
        started = time.perf_counter()
        n = sum(len(x) for x, _ in loader)
        return n / (time.perf_counter() - started)
    rows = np.arange(min(len(mapped()), count))
    in_ram = np.empty((len(rows), *mapped().shape[1:]), np.uint8)
    RowReader(mapped()).read(rows, in_ram)  # a private in-RAM copy, read without mapping the file
    figures = {}
    for output in ("uint8", "float"):
        for placement in ("stream", "ram"):
            drop_page_cache()
            figures[f"{placement}_cold_{output}"] = epoch(mapped(), placement, output)
            gc.collect()  # unmap the pages the ram placement touched before the next drop
        figures[f"in_ram_{output}"] = epoch(in_ram, "ram", output)
    gb = len(rows) * in_ram[0].nbytes / 1e9
    print(json.dumps({"images": len(rows), "gb": round(gb, 2), **{k: round(v) for k, v in figures.items()}}))
"""

MAKE_SWEEP = """
    import json, shutil, sys
    from pathlib import Path
    from celeb.training import sealed
    source, sweep, trials = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    for t in range(trials):
        target = sweep / f"trial_{t:05d}" / "checkpoint_000000"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("manifest.json"))
        meta = json.loads((target / "meta.json").read_text())
        meta["metrics"] = {**meta["metrics"], "val/mse": meta["metrics"]["val/mse"] * (1 + t / 1000),
                           "val/loss": meta["metrics"]["val/loss"] * (1 + (t * 7919 % 100) / 1000)}
        meta["config"]["seed"] = t
        (target / "meta.json").write_text(json.dumps(meta))
        sealed.seal(target, {"epoch": meta["epoch"], "step": meta["step"]})
"""


# ----------------------------------------------------------------------------- running


def run_steps(args: argparse.Namespace) -> dict[str, Measured]:
    out = Path(args.out)
    celeba, data = out / "celeba", out / "data"
    results: dict[str, Measured] = {}

    def step(name: str, command: list[str], env: dict[str, str] | None = None) -> Measured | None:
        if name not in args.steps:
            return None
        shown = "python -c <script>" if command[1] == "-c" else " ".join(command[1:5])
        print(f"[{name}] {shown} ...", flush=True)
        results[name] = measure(command, env)
        m = results[name]
        print(f"[{name}] {m.seconds:.1f} s, peak PSS {m.peak_pss_gb:.2f} GB, largest RSS {m.peak_rss_gb:.2f} GB",
              flush=True)
        return m

    step("synth", CELEB + ["synth", str(celeba), "--n", str(args.n), "--identities", str(args.identities),
                           "--seed", "0"])
    step("prepare64", CELEB + ["prepare", str(celeba), "--out", str(data), "--size", "64"])
    step("split", CELEB + ["split", str(data), "--strategy", "balanced", "--seed", "0"])
    step("loader", python(LOADER_EPOCH, str(data), "auto", "2"))
    if "prepare299" in args.steps:
        need = args.n * 299 * 299 * 3 * 1.02
        free = shutil.disk_usage(out).free
        if free < need:
            raise SystemExit(f"bench_scale: the 299-px cache of {args.n:,} images needs {need / 1e9:.0f} GB "
                             f"and {out} has {free / 1e9:.0f} GB free; use a smaller --n or another --out")
    step("prepare299", CELEB + ["prepare", str(celeba), "--out", str(data), "--size", "299", "--crop", "178"])
    step("stream", python(STREAM_EPOCH, str(data / "cache" / "c178_s299"), "20000"))
    if "packed" in args.steps:
        results["packed"] = packed(data, REPO)
        if args.before_tree:
            results["packed_before"] = packed(data, Path(args.before_tree))
    if "review" in args.steps:
        sweep = out / "sweep100"
        shutil.rmtree(sweep, ignore_errors=True)
        run = out / "one_run"
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run(CELEB + ["train", "cvae", "configs/cvae_debug.yaml", "--set", f"data.data_dir={data}",
                                "--set", "epochs=1", "--set", "max_train_batches=5", "--run-dir", str(run)],
                       cwd=REPO, check=True, capture_output=True)
        checkpoint = sorted((run / "checkpoints").iterdir())[-1]
        subprocess.run(python(MAKE_SWEEP, str(checkpoint), str(sweep), str(TRIALS)), cwd=REPO, check=True)
        step("review", CELEB + ["review", str(sweep), "--metric", "val/mse", "--top", "5", "--data-dir", str(data)])
        html = sweep / "review" / "review.html"
        if html.exists():
            print(f"[review] page {html.stat().st_size / 1e6:.1f} MB, {TRIALS} trials", flush=True)
    return results


def packed(data: Path, tree: Path) -> Measured:
    """PACKED loader processes at once, each two epochs over the train split, as one measured tree."""
    workers = " & ".join(f"{sys.executable} -c {_quote(textwrap.dedent(LOADER_EPOCH))} {data} auto 2"
                         for _ in range(PACKED))
    print(f"[packed] {PACKED} loaders from {tree} ...", flush=True)
    m = measure(["bash", "-c", f"{workers} & wait"], env={"CELEB_TREE": str(tree)}, cwd=tree)
    print(f"[packed] {m.seconds:.1f} s, peak PSS of the {PACKED} {m.peak_pss_gb:.2f} GB, "
          f"largest RSS {m.peak_rss_gb:.2f} GB", flush=True)
    return m


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=202_599)
    parser.add_argument("--identities", type=int, default=None, help="default: n / 19.9, like CelebA")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--before-tree", default=None,
                        help="a checkout of an older commit: the packed step also runs its loader")
    args = parser.parse_args()
    args.identities = args.identities or max(1, round(args.n / 19.9))
    temporary = args.out is None
    args.out = args.out or tempfile.mkdtemp(prefix="bench-scale-")
    try:
        results = run_steps(args)
    finally:
        if temporary:
            shutil.rmtree(args.out, ignore_errors=True)
    print(f"\n{args.n:,} images, {args.identities:,} identities, {os.cpu_count()} cores\n")
    print("| step | wall | peak PSS (tree) | largest RSS |\n|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m.seconds:.1f} s | {m.peak_pss_gb:.2f} GB | {m.peak_rss_gb:.2f} GB |")
    for name in ("loader", "stream", "packed", "packed_before"):
        if name in results:
            lines = [line for line in results[name].output.splitlines() if line.strip()][-4:]
            print(f"\n{name}:\n  " + "\n  ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
