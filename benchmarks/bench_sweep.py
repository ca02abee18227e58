"""Benchmark of the sweep machinery on synthetic faces, on the CPU.

    PYTHONPATH=. python benchmarks/bench_sweep.py [--n 600] [--trials 12] [--epochs 9] [--out runs/bench_sweep]

Prints, from one run:
1. Search: ASHA + Optuna against random search with the full budget and the same number of trials
   (the same CVAE space as sweeps/smoke.yaml): trial-epochs spent and best val/loss of each.
   Targets: ASHA + Optuna within 2% of the full-budget best with at most 1/3 of its trial-epochs.
2. Overhead: what Ray Tune adds per trial and per report against the same loop run bare (trivial
   trials, so only Tune is measured), the same for a few real CVAE trials, and what that makes of a
   trial that lasts a minute. Target: under 5% of a one-minute trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from ray import tune  # noqa: E402

from celeb.config import config_from_dict  # noqa: E402
from celeb.data.dataset import load_data  # noqa: E402
from celeb.training.loop import fit  # noqa: E402
from jobs.sweep import run_sweep, start_local_ray  # noqa: E402
from synthetic import make_data  # noqa: E402  (this folder)

SMOKE = REPO / "sweeps" / "smoke.yaml"


def smoke_overrides(data: Path, storage: Path, name: str, epochs: int, **changes) -> dict:
    fixed = {**yaml.safe_load(SMOKE.read_text())["fixed"], "epochs": epochs, "max_train_batches": 6}
    return {"data_dir": str(data), "storage_path": str(storage), "name": name, "fixed": fixed,
            "max_concurrent": 2, "checkpoint": {"num_to_keep": 2}, **changes}


def search_comparison(data: Path, storage: Path, trials: int, epochs: int, reduction_factor: int,
                      promotion: str) -> dict:
    asha = run_sweep(SMOKE, overrides=smoke_overrides(
        data, storage, "asha_optuna", epochs, num_trials=trials,
        asha={"max_t": epochs, "grace_period": 1, "reduction_factor": reduction_factor, "promotion": promotion}))
    full = run_sweep(SMOKE, overrides=smoke_overrides(
        data, storage, "random_full", epochs, num_trials=trials, searcher="random", asha=None))
    return {name: {"trial_epochs": int(table["epochs_run"].sum()), "best": float(table["best"].min())}
            for name, table in (("asha_optuna", asha), ("random_full", full))}


def trivial_trial(config: dict) -> None:
    """`reports` reports, each with a tiny checkpoint, timing its own loop (reported at the end)."""
    started = time.perf_counter()
    for epoch in range(1, int(config["epochs"]) + 1):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"val/loss": 1.0 / epoch, "epoch": epoch, "loop_s": time.perf_counter() - started},
                        checkpoint=tune.Checkpoint.from_directory(d))


def bare_loop(reports: int) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as keep:
        for epoch in range(1, reports + 1):
            with tempfile.TemporaryDirectory() as d:
                Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
                shutil.copytree(d, Path(keep, f"checkpoint_{epoch:06d}"))  # what Tune does with it
    return time.perf_counter() - started


def tune_overhead(data: Path, storage: Path) -> dict:
    out = {}
    # Per trial: 12 one-report trials, one at a time.
    k = 12
    started = time.perf_counter()
    run_sweep(SMOKE, check_data=False, trainable=trivial_trial, overrides=smoke_overrides(
        data, storage, "overhead_trials", 1, num_trials=k, searcher="random", asha=None, max_concurrent=1))
    out["per_trial_s"] = (time.perf_counter() - started - bare_loop(1) * k) / k
    # Per report: one trial with 200 reports (each with a checkpoint), timed inside the trial.
    r = 200
    table = run_sweep(SMOKE, check_data=False, trainable=trivial_trial, overrides=smoke_overrides(
        data, storage, "overhead_reports", r, num_trials=1, searcher="random", asha=None, max_concurrent=1))
    history = json.loads((Path(table["checkpoint"].iloc[0]).parent / "result.json").read_text().splitlines()[-1])
    out["per_report_s"] = (history["loop_s"] - bare_loop(r)) / r
    # Real CVAE trials: the same 3 configs bare (in this process) and under Tune, one at a time.
    epochs, points = 3, [{"lr": 1e-3, "cvae.beta": b} for b in (0.5, 1.0, 2.0)]
    overrides = smoke_overrides(data, storage, "overhead_real", epochs, num_trials=len(points), searcher="random",
                                asha=None, max_concurrent=1, optuna={"points_to_evaluate": points})
    from celeb.sweep.spec import base_trial_config, load_spec, trial_seeds

    spec = load_spec(SMOKE, overrides)
    started = time.perf_counter()
    for point in points:
        config = config_from_dict({**base_trial_config(spec), **point, "seed": trial_seeds(0, 1)[0]})
        fit(config, load_data(data, split="balanced", image_size=64, crop=148), on_epoch_end=lambda m, c: None)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    run_sweep(SMOKE, overrides=overrides)
    tuned = time.perf_counter() - started
    out.update(real_bare_s=bare, real_tune_s=tuned, real_trials=len(points), real_epochs=epochs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="synthetic faces (default 600)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=9, help="full budget per trial (ASHA's max_t)")
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA's (default 3)")
    parser.add_argument("--promotion", choices=("quota", "percentile"), default="quota",
                        help="ASHA's promotion rule (default quota; percentile is Ray's own)")
    parser.add_argument("--search-only", action="store_true", help="skip the Tune overhead measurement")
    parser.add_argument("--out", default="runs/bench_sweep")
    args = parser.parse_args()

    root = Path(args.out).resolve()
    storage = root / f"sweeps-{time.strftime('%Y%m%d-%H%M%S')}"
    data = make_data(root, args.n)
    start_local_ray(num_cpus=2)
    search = search_comparison(data, storage, args.trials, args.epochs, args.reduction_factor, args.promotion)
    overhead = None if args.search_only else tune_overhead(data, storage)

    a, f = search["asha_optuna"], search["random_full"]
    print("\n=== search (CVAE, synthetic faces, CPU) ===")
    for name, row in search.items():
        print(f"{name:12s}  trial-epochs {row['trial_epochs']:4d}  best val/loss {row['best']:.2f}")
    gap = a["best"] / f["best"] - 1
    share = a["trial_epochs"] / f["trial_epochs"]
    print(f"ASHA+Optuna ({args.promotion} promotion, reduction factor {args.reduction_factor}, {args.trials} trials, "
          f"{args.epochs} epochs): best {100 * gap:+.2f}% vs full budget (target <= +2%), "
          f"{100 * share:.0f}% of its trial-epochs (target <= 33%)")
    if overhead is None:
        print(f"\nexperiments: {storage}")
        return

    print("\n=== Ray Tune overhead ===")
    print(f"per trial (trivial trials, reused workers): {overhead['per_trial_s']:.2f} s")
    print(f"per report (with a checkpoint):              {1000 * overhead['per_report_s']:.1f} ms")
    extra = overhead["real_tune_s"] - overhead["real_bare_s"]
    print(f"real CVAE trials: {overhead['real_trials']} x {overhead['real_epochs']} epochs, bare "
          f"{overhead['real_bare_s']:.1f} s, under Tune {overhead['real_tune_s']:.1f} s "
          f"(+{extra / overhead['real_trials']:.2f} s per trial, sweep start-up included)")
    for reports in (10, 60):
        share = (overhead["per_trial_s"] + reports * overhead["per_report_s"]) / 60.0
        print(f"a 60 s trial with {reports} reports: Tune adds {100 * share:.1f}% (target < 5%)")
    print(f"\nexperiments: {storage}")


if __name__ == "__main__":
    main()
