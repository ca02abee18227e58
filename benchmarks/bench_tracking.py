"""What tracking costs a trial: the same CVAE run with and without its records.

    python benchmarks/bench_tracking.py [--n 3000] [--epochs 6] [--width 16]

A trial never starts W&B (the sweep driver writes each trial's W&B run from its folder, see
jobs.records), so what a trial pays for its records is its run folder: metrics rows, the
reconstruction panel each evaluation, the traversal panels and dimension table every
`cvae.panel_every` evaluations (PNG and CSV files, via LocalTracker). This runs one local trial
(about a minute on 2 CPU cores at the defaults) twice on synthetic faces: bare (NullTracker, no
panels), then as a sweep trial records itself, and prints both times and the difference in %.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from celeb.config import config_from_dict
from celeb.data.dataset import load_data
from celeb.training.loop import fit
from celeb.training.tracking import LocalTracker

from synthetic import make_data  # this folder


def timed_run(config: dict, data, run_dir: Path | None) -> float:
    started = time.perf_counter()
    fit(config_from_dict(config), data, tracker=LocalTracker(run_dir) if run_dir else None, run_dir=run_dir)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="celeb-bench-tracking-") as tmp:
        data_dir = make_data(Path(tmp), args.n)
        data = load_data(data_dir)
        config = {"task": "cvae", "device": "cpu", "epochs": args.epochs, "batch_size": 64,
                  "cvae.width": args.width, "cvae.latent_dim": 16, "cvae.conditions": ["Male"],
                  "data.data_dir": str(data_dir)}
        bare = timed_run({**config, "num_recon": 0, "cvae.panel_every": 0}, data, None)
        recorded = timed_run(config, data, Path(tmp) / "run")
    print(f"{args.epochs} epochs, k={args.width}: bare {bare:.1f} s, with its records {recorded:.1f} s "
          f"(+{100 * (recorded - bare) / bare:.1f}%, {recorded - bare:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
