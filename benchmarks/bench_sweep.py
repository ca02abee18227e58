"""Benchmark of the sweep machinery on synthetic faces, on the CPU.

    PYTHONPATH=. python benchmarks/bench_sweep.py [--n 600] [--trials 6 12 24] [--seeds 3] [--out runs/bench_sweep]

Prints, from one run:
1. Search: which scheduler finds the best model for the fewest trial-epochs. Real CVAE learning
   curves (val/mse per epoch, the space of sweeps/smoke.yaml on a grid: 6 learning rates x 5 β,
   each trained for the full budget once with `fit`) are recorded first, then every contender
   sweeps that space with 6, 12 and 24 trials and 3 search seeds, its trials replaying the recorded
   curves (so a sweep costs seconds and every contender sees the same numbers):
     - promotion ASHA + Optuna TPE (this project's default: jobs.search.PromotionASHA, through run_sweep)
     - the quota rule + TPE (decide on arrival, the rule promotion ASHA replaced; `QuotaOnArrival` below)
     - Ray's ASHAScheduler + TPE (asha.promotion: percentile)
     - Optuna's own SuccessiveHalvingPruner with TPE (an Optuna study, no Tune)
     - random search with the full budget (the reference)
   For each: the best val/mse found, the trial-epochs used, and how often the config that was best
   at full budget among those the sweep tried was stopped early. Target: within 1% of the
   full-budget best at <= 1/3 of its trial-epochs, for every trial count.
2. Overhead: what Ray Tune adds per trial and per report against the same loop run bare (trivial
   trials, so only Tune is measured), the same for a few real CVAE trials, and what that makes of a
   trial that lasts a minute. Target: under 5% of a one-minute trial.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import optuna  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402

import jobs.sweep  # noqa: E402
from celeb.config import config_from_dict  # noqa: E402
from celeb.data.dataset import load_data  # noqa: E402
from celeb.sweep.asha import Rungs, rung_milestones, score  # noqa: E402
from celeb.sweep.spec import base_trial_config, load_spec, trial_seeds  # noqa: E402
from celeb.training.loop import fit  # noqa: E402
from jobs.search import TIME_ATTR  # noqa: E402
from jobs.sweep import run_sweep, start_local_ray  # noqa: E402
from synthetic import make_data  # noqa: E402  (this folder)

SMOKE = REPO / "sweeps" / "smoke.yaml"
METRIC = "val/mse"
GRID = {"lr": [3.0e-4, 6.0e-4, 1.2e-3, 2.5e-3, 5.0e-3, 1.0e-2], "cvae.beta": [0.5, 1.0, 2.0, 4.0, 8.0]}
CONTENDERS = ("promotion", "quota", "percentile", "optuna_sh", "random_full")


def smoke_overrides(data: Path, storage: Path, name: str, epochs: int, **changes) -> dict:
    fixed = {**yaml.safe_load(SMOKE.read_text())["fixed"], "epochs": epochs, "max_train_batches": 6}
    return {"data_dir": str(data), "storage_path": str(storage), "name": name, "fixed": fixed,
            "max_concurrent": 2, "checkpoint": {"num_to_keep": 2}, **changes}


# ----------------------------------------------------------------------------- 1. search


def curve_key(lr: float, beta: float) -> str:
    return f"{lr:.6g}|{beta:.6g}"


def record_curves(data: Path, out: Path, epochs: int) -> dict[str, list[float]]:
    """val/mse per epoch of every grid config, trained once for the full budget (cached in `out`)."""
    path = out / f"curves_e{epochs}.json"
    if path.exists():
        return json.loads(path.read_text())
    spec = load_spec(SMOKE, smoke_overrides(data, out, "curves", epochs))
    faces = load_data(data, split="balanced", image_size=64, crop=148)
    curves = {}
    for i, (lr, beta) in enumerate(itertools.product(GRID["lr"], GRID["cvae.beta"])):
        config = config_from_dict({**base_trial_config(spec), "lr": lr, "cvae.beta": beta, "seed": trial_seeds(0, 1)[0]})
        history = fit(config, faces).history
        curves[curve_key(lr, beta)] = [float(row[METRIC]) for row in history]
        print(f"curve {i + 1}/{len(GRID['lr']) * len(GRID['cvae.beta'])}: lr {lr:g}, beta {beta:g}: "
              f"{METRIC} {curves[curve_key(lr, beta)][0]:.4f} -> {curves[curve_key(lr, beta)][-1]:.4f}", flush=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(curves))
    tmp.replace(path)
    return curves


def make_replay_trial(curves: dict[str, list[float]]):
    """A trial function that reports a recorded curve epoch by epoch, with checkpoints, so a
    paused trial resumes where it stopped, as a real one does."""

    def replay_trial(config: dict, experiment_path: str) -> None:
        checkpoint = tune.get_checkpoint()
        start = 0
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                start = json.loads(Path(d, "state.json").read_text())["epoch"]
        curve = curves[curve_key(config["lr"], config["cvae.beta"])]
        for epoch in range(start + 1, int(config["epochs"]) + 1):
            with tempfile.TemporaryDirectory() as d:
                Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
                tune.report({METRIC: curve[epoch - 1], TIME_ATTR: epoch}, checkpoint=tune.Checkpoint.from_directory(d))

    return replay_trial


class QuotaOnArrival(FIFOScheduler):
    """The quota rule promotion ASHA replaced (kept here only to compare): at each rung a trial goes
    on when it arrives among the rung's best ceil(n / η) so far and fewer than ceil(n / η) went on
    before it; otherwise it is stopped at once, since Tune's stop-based rules cannot wait."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int) -> None:
        super().__init__()
        self.rungs = Rungs(rung_milestones(grace_period, max_t, reduction_factor), reduction_factor)
        self.mode = "min"

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        self.mode = mode or self.mode
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        milestone = self.rungs.rung_reached(trial.trial_id, int(result[TIME_ATTR]))
        if milestone is None:
            return TrialScheduler.CONTINUE
        value = score(result.get(self.metric), self.mode)
        self.rungs.record(trial.trial_id, milestone, value)
        recorded = self.rungs.values[milestone]
        quota = math.ceil(len(recorded) / self.rungs.reduction_factor)
        if len(self.rungs.promoted[milestone]) < quota and value >= sorted(recorded.values(), reverse=True)[quota - 1]:
            self.rungs.promote(trial.trial_id, milestone)
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP


def tune_contender(name: str, curves: dict, data: Path, storage: Path, trials: int, seed: int, epochs: int,
                   reduction_factor: int) -> list[dict]:
    """One sweep of a Tune contender over the replayed curves: per trial its config and epochs run."""
    asha = {"max_t": epochs, "grace_period": 1, "reduction_factor": reduction_factor}
    changes = {"promotion": {"asha": {**asha, "promotion": "pause"}},
               "quota": {"asha": {**asha, "promotion": "percentile"}},
               "percentile": {"asha": {**asha, "promotion": "percentile"}},
               "random_full": {"asha": None, "searcher": "random"}}[name]
    overrides = smoke_overrides(data, storage, f"{name}_t{trials}_s{seed}", epochs, num_trials=trials, max_concurrent=1,
                                search={k: {"type": "choice", "values": v} for k, v in GRID.items()},
                                optuna={"seed": seed}, seeds={"sweep_seed": seed, "repeats": 1},
                                wandb={"mode": "disabled"}, **changes)
    patch = (mock.patch.object(jobs.sweep, "make_scheduler",  # the one contender the project no longer ships
                               lambda spec: QuotaOnArrival(epochs, 1, reduction_factor))
             if name == "quota" else contextlib.nullcontext())
    with patch:
        table = run_sweep(SMOKE, check_data=False, trainable=make_replay_trial(curves), overrides=overrides)
    return [{"config": curve_key(row["lr"], row["cvae.beta"]), "epochs": int(row["epochs_run"])}
            for _, row in table.iterrows()]


def optuna_contender(curves: dict, trials: int, seed: int, epochs: int, reduction_factor: int) -> list[dict]:
    """Optuna's own early stopping: TPE with the SuccessiveHalvingPruner, one trial at a time."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1,
                                                                              reduction_factor=reduction_factor))
    tried = []

    def objective(trial: optuna.Trial) -> float:
        curve = curves[curve_key(trial.suggest_categorical("lr", GRID["lr"]),
                                 trial.suggest_categorical("cvae.beta", GRID["cvae.beta"]))]
        record = {"config": curve_key(trial.params["lr"], trial.params["cvae.beta"]), "epochs": 0}
        tried.append(record)
        for epoch in range(1, epochs + 1):
            record["epochs"] = epoch
            trial.report(curve[epoch - 1], epoch)
            if epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return curve[epochs - 1]

    study.optimize(objective, n_trials=trials)
    return tried


def sweep_outcome(tried: list[dict], curves: dict, epochs: int) -> dict:
    """Best value found (the best epoch any trial reached), trial-epochs, and whether the config
    best at full budget among those tried was stopped early."""
    best = min(min(curves[t["config"]][:t["epochs"]]) for t in tried if t["epochs"])
    truly_best = min(tried, key=lambda t: min(curves[t["config"]]))
    return {"best": best, "own_full_best": min(curves[truly_best["config"]]),
            "trial_epochs": sum(t["epochs"] for t in tried),
            "best_stopped": any(t["config"] == truly_best["config"] and t["epochs"] < epochs for t in tried)
            and not any(t["config"] == truly_best["config"] and t["epochs"] == epochs for t in tried)}


def search_comparison(data: Path, storage: Path, curves: dict, trial_counts: list[int], seeds: int, epochs: int,
                      reduction_factor: int) -> dict[tuple[str, int], list[dict]]:
    outcomes: dict[tuple[str, int], list[dict]] = {}
    for trials, seed, name in itertools.product(trial_counts, range(seeds), CONTENDERS):
        tried = (optuna_contender(curves, trials, seed, epochs, reduction_factor) if name == "optuna_sh" else
                 tune_contender(name, curves, data, storage, trials, seed, epochs, reduction_factor))
        outcomes.setdefault((name, trials), []).append(sweep_outcome(tried, curves, epochs))
    return outcomes


def print_search(outcomes: dict, curves: dict, trial_counts: list[int], epochs: int) -> None:
    """One row per trial count and contender, means over the search seeds. `vs full`: the best found
    against full-budget random search's (same trials, same seed); `vs own`: against the best the
    same sweep's configs reach at full budget (what the early stopping alone cost)."""
    grid_best = min(min(c) for c in curves.values())
    print(f"\n=== search (CVAE curves on synthetic faces, {METRIC}, {epochs} epochs full budget, "
          f"{len(curves)} configs, best of all {grid_best:.5f}) ===")
    print("trials  contender     best (mean)   vs full (worst)     vs own (worst)    trial-epochs  share  "
          "best config stopped early")
    for trials in trial_counts:
        full = outcomes[("random_full", trials)]
        for name in CONTENDERS:
            rows = outcomes[(name, trials)]
            gaps = [r["best"] / f["best"] - 1 for r, f in zip(rows, full)]
            own = [r["best"] / r["own_full_best"] - 1 for r in rows]
            shares = [r["trial_epochs"] / f["trial_epochs"] for r, f in zip(rows, full)]
            print(f"{trials:6d}  {name:12s}  {statistics.mean(r['best'] for r in rows):.5f}   "
                  f"{100 * statistics.mean(gaps):+6.2f}% ({100 * max(gaps):+6.2f}%)  "
                  f"{100 * statistics.mean(own):+6.2f}% ({100 * max(own):+6.2f}%)  "
                  f"{statistics.mean(r['trial_epochs'] for r in rows):12.1f}  {100 * statistics.mean(shares):4.0f}%  "
                  f"{sum(r['best_stopped'] for r in rows)} of {len(rows)}")


# ----------------------------------------------------------------------------- 2. overhead


def trivial_trial(config: dict, experiment_path: str = "") -> None:
    """`reports` reports, each with a tiny checkpoint, timing its own loop (reported at the end)."""
    started = time.perf_counter()
    for epoch in range(1, int(config["epochs"]) + 1):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({METRIC: 1.0 / epoch, TIME_ATTR: epoch, "loop_s": time.perf_counter() - started},
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
    parser.add_argument("--trials", type=int, nargs="+", default=[6, 12, 24], help="trials per sweep (default 6 12 24)")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per trial count (default 3)")
    parser.add_argument("--epochs", type=int, default=9, help="full budget per trial (ASHA's max_t)")
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA's (default 3)")
    parser.add_argument("--search-only", action="store_true", help="skip the Tune overhead measurement")
    parser.add_argument("--out", default="runs/bench_sweep")
    args = parser.parse_args()

    root = Path(args.out).resolve()
    storage = root / f"sweeps-{time.strftime('%Y%m%d-%H%M%S')}"
    data = make_data(root, args.n)
    curves = record_curves(data, root, args.epochs)
    start_local_ray(num_cpus=2)
    outcomes = search_comparison(data, storage, curves, args.trials, args.seeds, args.epochs, args.reduction_factor)
    print_search(outcomes, curves, args.trials, args.epochs)
    if args.search_only:
        print(f"\nexperiments: {storage}")
        return
    overhead = tune_overhead(data, storage)
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
