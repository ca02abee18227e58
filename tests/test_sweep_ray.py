"""Sweeps on a real (local) Ray: seeds, ASHA -> Optuna pruning, retries, --resume, a lost node.

Most tests run the real driver (jobs.sweep.run_sweep) with a toy trainable that behaves like
jobs.trial.train_trial (one report + checkpoint per epoch, resumes from tune.get_checkpoint()) but
trains nothing, so Ray itself is what is tested; one slow test runs the real trial on tiny data.
All Ray clusters here are on 127.0.0.1 with RAY_AUTH_MODE set explicitly.
"""

from __future__ import annotations

import glob
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")
from ray import cloudpickle, tune  # noqa: E402

from celeb.records import audit  # noqa: E402
from celeb.seeds import trial_seeds  # noqa: E402
from celeb.sweep.spec import load_spec  # noqa: E402
from celeb.training import runfolder, sealed  # noqa: E402
from celeb.training.loop import NonFiniteLossError  # noqa: E402
from celeb.training.runfolder import scalar_values as scalar_metrics  # noqa: E402
from jobs.internals import check_internals  # noqa: E402
from jobs.search import (PausedAwareLimiter, PromotionASHA, SeededOptunaSearch, make_scheduler,  # noqa: E402
                         make_searcher, search_space)
from jobs.sweep import run_sweep, start_local_ray  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOY_DIR_ENV = "CELEB_TEST_TOY_DIR"
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules


# ----------------------------------------------------------------------------- the toy trainable


def toy_trial(config: dict, experiment_path: str) -> None:
    """Like train_trial without training: loss falls with epochs and is best at lr=10^-2.5, low beta.

    It keeps its run folder and sealed checkpoints as the real trial does (a row per epoch at step
    10·epoch, a traversal panel every odd epoch) and starts through jobs.resume. Control files in
    $CELEB_TEST_TOY_DIR: `fail_once` makes each trial raise once at epoch 2; `tear_once` makes each
    trial crash once right after its epoch-2 checkpoint was stored, with that stored copy cut short;
    `sleep` holds seconds to wait per epoch. cvae.beta > 7.5 fails at epoch 2 as a NaN loss would,
    every time. (It imports no torch, to keep workers light.)
    """
    from PIL import Image

    from celeb.training import runfolder, sealed
    from celeb.sweep.spec import trial_dirname
    from jobs.resume import resume_checkpoint

    control = Path(os.environ[TOY_DIR_ENV])
    trial_id = tune.get_context().get_trial_id()
    folder = Path(experiment_path) / trial_dirname(trial_id)
    with resume_checkpoint(str(folder), folder, config) as state:
        start = json.loads((state / "state.json").read_text())["epoch"] if state is not None else 0
    sleep = float((control / "sleep").read_text()) if (control / "sleep").exists() else 0.0
    for epoch in range(start + 1, int(config["epochs"]) + 1):
        if epoch == 2 and config["cvae.beta"] > 7.5:  # what jobs.trial raises for a NonFiniteLossError
            raise RuntimeError("NonFiniteLossError: the loss became nan during training at epoch 2")
        marker = control / f"failed_{trial_id}"
        if epoch == 2 and (control / "fail_once").exists() and not marker.exists():
            marker.write_text("")
            raise RuntimeError("injected failure")
        time.sleep(sleep)
        loss = (math.log10(config["lr"]) + 2.5) ** 2 + config["cvae.beta"] / 10 + 1 / epoch + (config["seed"] % 97) / 1e4
        step = 10 * epoch
        if epoch % 2 == 1:
            panel = runfolder.image_file(folder, "traversal", step)
            panel.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (20 * epoch, 0, 0)).save(panel)
        runfolder.append_row(folder, {"step": step, "epoch": epoch, "val/mse": loss, "start": start})
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            sealed.seal(d, {"epoch": epoch})
            tune.report({"val/mse": loss, "epoch": epoch, "start": start,
                         "node": ray.get_runtime_context().get_node_id()},
                        checkpoint=tune.Checkpoint.from_directory(d))
        torn = control / f"torn_{trial_id}"
        if epoch == 2 and (control / "tear_once").exists() and not torn.exists():
            torn.write_text("")
            stored = next(p for p in folder.glob("checkpoint_*") if sealed.check(p)["epoch"] == 2)
            (stored / "state.json").write_text("{")  # the copy to storage was cut short
            raise RuntimeError("injected crash while the checkpoint was stored")


def toy_spec(tmp_path: Path, name: str, **changes) -> Path:
    raw = {
        "name": name, "task": "cvae", "data_dir": str(tmp_path / "no-data"), "metric": "val/mse", "mode": "min",
        "num_trials": 3, "max_concurrent": 1, "searcher": "optuna", "resources": {"cpu": 1},
        "fixed": {"epochs": 3, "device": "cpu"},
        "search": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                   "cvae.beta": {"type": "uniform", "low": 0.5, "high": 7.0}},
        "asha": {"max_t": 3, "grace_period": 1, "reduction_factor": 2},
        "seeds": {"sweep_seed": 0, "repeats": 1},
        "storage_path": str(tmp_path / "runs"), "max_failures": 1, "checkpoint": {"num_to_keep": 2},
        "wandb": {"mode": "offline", "project": "celeb-test"},
    }
    raw.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def experiment(spec_path: Path) -> Path:
    return Path(load_spec(spec_path).experiment_path)


def folder_rows(experiment_dir: Path) -> dict[str, list[dict]]:
    """trial id -> every row its run folder holds (metrics.jsonl, repeats included), in order."""
    return {d.name.removeprefix("trial_"): runfolder.read_rows(d) for d in sorted(experiment_dir.glob("trial_*"))}


def starts_of(experiment_dir: Path, trial_id: str) -> list[int]:
    """The epoch each start of the trial continued from (0: from the beginning)."""
    return [s["from_epoch"] for s in runfolder.read_starts(experiment_dir / f"trial_{trial_id}")]


def assert_records_complete(experiment_dir: Path, table: pd.DataFrame) -> None:
    """Every trial's W&B record (all its offline segments, merged by step as `wandb sync` does) holds
    every epoch its folder finished, with the same values, and every panel, each once; and the
    run ended finished (failed for a failed trial)."""
    assert len(table), "no trials"
    for _, trial in table.iterrows():
        result = audit(experiment_dir / f"trial_{trial['trial_id']}", scalars=["epoch", "val/mse"])
        assert result.epochs >= 1 and result.missing_epochs == [] and result.missing_panels == [], (trial, result)
        assert result.repeated_steps == 0, (trial, result)
        assert result.state == ("failed" if trial["status"] == "error" else "finished"), (trial, result)
        if trial["status"] != "error":
            assert result.epochs == trial["epochs_run"]


def results_of(experiment_dir: Path) -> dict[str, list[dict]]:
    """trial id -> its result rows (result.json), in order."""
    out = {}
    for trial_dir in sorted(experiment_dir.glob("trial_*")):
        path = trial_dir / "result.json"
        lines = path.read_text().splitlines() if path.exists() else []
        out[trial_dir.name.removeprefix("trial_")] = [json.loads(line) for line in lines if line.strip()]
    return out


def study_of(experiment_dir: Path) -> optuna.Study:
    newest = sorted(glob.glob(str(experiment_dir / "searcher-state-*.pkl")))[-1]
    with open(newest, "rb") as f:
        return pickle.load(f)["_ot_study"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module (2 CPUs, loopback, auth mode explicit), with the toy's control dir."""
    control = tmp_path_factory.mktemp("toy")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", TOY_DIR_ENV, "TUNE_GLOBAL_CHECKPOINT_S")}
    os.environ.update({"RAY_AUTH_MODE": "disabled", TOY_DIR_ENV: str(control), "TUNE_GLOBAL_CHECKPOINT_S": "1"})
    ray.shutdown()
    start_local_ray(num_cpus=2)
    yield control
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def toy_control(local_ray):
    for name in ("fail_once", "sleep"):
        (local_ray / name).unlink(missing_ok=True)
    return local_ray


# ----------------------------------------------------------------------------- searcher, without Ray


def drive(searcher: SeededOptunaSearch, n: int, epochs: int = 3) -> list[dict]:
    """Run `n` trials through a searcher one at a time (what max_concurrent=1 does) on a toy objective."""
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        loss = (math.log10(config["lr"]) + 2.5) ** 2 + config["cvae.beta"] / 10
        for epoch in range(1, epochs):
            searcher.on_trial_result(f"t{i}", {"val/mse": loss + 1 / epoch, "epoch": epoch})
        searcher.on_trial_complete(f"t{i}", {"val/mse": loss + 1 / epochs, "epoch": epochs})
    return configs


def seeded_searcher(tmp_path: Path, seed: int, repeats: int = 1, full_epochs: int | None = 3) -> SeededOptunaSearch:
    spec = load_spec(toy_spec(tmp_path, "s"))
    searcher = SeededOptunaSearch(seeds=trial_seeds(0, repeats), full_epochs=full_epochs, seed=seed)
    searcher.set_search_properties("val/mse", "min", search_space(spec))
    return searcher


def test_optuna_suggestions_repeat_with_the_seed_past_the_random_startup(tmp_path):
    first = drive(seeded_searcher(tmp_path, seed=3), 14)  # TPE takes over after 10 random trials
    assert drive(seeded_searcher(tmp_path, seed=3), 14) == first
    assert drive(seeded_searcher(tmp_path, seed=4), 14)[:3] != first[:3]


def test_repeats_share_a_config_and_use_the_fixed_seeds(tmp_path):
    searcher = seeded_searcher(tmp_path, seed=0, repeats=3)
    configs = drive(searcher, 6)
    seeds = trial_seeds(0, 3)
    assert [c["seed"] for c in configs] == seeds + seeds
    strip = [{k: v for k, v in c.items() if k != "seed"} for c in configs]
    assert strip[0] == strip[1] == strip[2] != strip[3] == strip[4] == strip[5]
    trials = searcher._ot_study.trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_short_trials_are_pruned_in_the_study_and_full_ones_complete(tmp_path):
    searcher = seeded_searcher(tmp_path, seed=0)
    for trial_id, epochs in (("a", 3), ("b", 1)):
        config = searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, {"val/mse": config["lr"], "epoch": epochs})
    searcher.suggest("c")
    searcher.on_trial_complete("c", {"val/mse": 1.0, "epoch": 2}, error=True)
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.FAIL]
    assert searcher._ot_study.trials[1].intermediate_values == {1: pytest.approx(searcher._ot_study.trials[1].params["lr"])}


def test_spec_promotion_picks_the_scheduler():
    from ray.tune.schedulers import ASHAScheduler

    spec = load_spec(REPO / "sweeps" / "smoke.yaml")
    scheduler = make_scheduler(spec)
    assert isinstance(scheduler, PromotionASHA)  # the default
    assert scheduler.rule.rungs.milestones == [1, 2] and scheduler.max_running == spec.max_concurrent
    searcher, _, _ = make_searcher(spec, scheduler)
    assert isinstance(searcher, PausedAwareLimiter) and searcher.max_concurrent == spec.max_concurrent
    percentile = load_spec(REPO / "sweeps" / "smoke.yaml", overrides={
        "asha": {"max_t": 3, "grace_period": 1, "reduction_factor": 2, "promotion": "percentile"}})
    assert type(make_scheduler(percentile)) is ASHAScheduler
    assert isinstance(make_searcher(percentile, make_scheduler(percentile))[0], SeededOptunaSearch)


def test_the_ray_internals_this_project_uses_are_still_there():
    check_internals()  # raises naming each one an upgrade moved


def test_a_moved_ray_internal_is_named(monkeypatch):
    from jobs import internals

    monkeypatch.setattr(internals, "ray_constants", object())
    with pytest.raises(RuntimeError, match=r"ENABLE_RAY_CLUSTER.*pin ray back"):
        check_internals()


def test_sweep_overrides_are_parsed_as_the_trainer_overrides_are():
    from jobs.sweep import parse_overrides

    assert parse_overrides(["data_dir=demo/data", "num_trials=8", "asha={max_t: 3}"]) == {
        "data_dir": "demo/data", "num_trials": 8, "asha": {"max_t": 3}}
    with pytest.raises(ValueError, match="'num_trials' is not KEY=VALUE"):
        parse_overrides(["num_trials"])
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_overrides(["fixed={a: [1"])


def test_trial_errors_survive_pickling_and_metrics_are_scalars():
    error = NonFiniteLossError(2, 10, float("nan"), 1e-3, Path("ckpt/epoch_001"), global_step=30)
    again = pickle.loads(pickle.dumps(error))  # how Ray carries a trial's error to the driver
    assert type(again) is NonFiniteLossError and str(again) == str(error)
    assert "the loss became nan" in str(again) and again.last_checkpoint == Path("ckpt/epoch_001")
    assert scalar_metrics({"val/loss": np.float32(0.5), "epoch": 3, "ok": True, "val/kl_per_dim": [0.1, 0.2],
                           "image": np.zeros((4, 4, 3))}) == {"val/loss": 0.5, "epoch": 3, "ok": True}


# ----------------------------------------------------------------------------- sweeps on Ray


def test_sweep_ranks_trials_writes_csv_and_prunes_asha_stops_in_optuna(tmp_path, toy_control):
    good = {"lr": 10 ** -2.5, "cvae.beta": 0.5}
    bad = {"lr": 1e-4, "cvae.beta": 7.0}  # worse at every epoch: ASHA stops it at the first rung
    spec = toy_spec(tmp_path, "rank", num_trials=3, optuna={"points_to_evaluate": [good, bad]})
    table = run_sweep(spec, check_data=False, trainable=toy_trial)

    exp = experiment(spec)
    on_disk = pd.read_csv(exp / "ranking.csv")
    assert len(table) == len(on_disk) == 3 and list(on_disk["trial_id"]) == list(table["trial_id"])
    assert list(table["best"]) == sorted(table["best"])
    best = table.iloc[0]
    assert best["lr"] == pytest.approx(good["lr"]) and best["status"] == "complete" and best["epochs_run"] == 3
    assert Path(best["checkpoint"], "state.json").exists()
    stopped = table[np.isclose(table["lr"], bad["lr"])].iloc[0]
    assert stopped["status"] == "stopped" and stopped["epochs_run"] == 1
    assert set(table["seed"]) == {trial_seeds(0, 1)[0]}  # the seed is stored in every trial's config

    trials = study_of(exp).trials
    assert [t.params for t in trials[:2]] == [good, bad]
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    assert trials[1].state == optuna.trial.TrialState.PRUNED and list(trials[1].intermediate_values) == [1]
    # The stopped trial's W&B record is as complete as the finished ones' (the driver writes them).
    assert_records_complete(exp, table)


def test_promotion_asha_pauses_at_rungs_and_resumes_promoted_trials_from_their_checkpoints(tmp_path, toy_control):
    # the toy's value is beta / 10 + 1 / epoch here; one trial at a time, rungs at epochs 1 and 2
    betas = [3.0, 0.5, 6.0, 5.0]
    spec = toy_spec(tmp_path, "promote", num_trials=4, fixed={"epochs": 4, "device": "cpu"},
                    asha={"max_t": 4, "grace_period": 1, "reduction_factor": 2},
                    optuna={"points_to_evaluate": [{"lr": 10 ** -2.5, "cvae.beta": b} for b in betas]})
    table = run_sweep(spec, check_data=False, trainable=toy_trial)
    exp = experiment(spec)
    by_beta = {round(row["cvae.beta"], 3): row for _, row in table.iterrows()}
    # β 3 waits at rung 1 (alone there, 0 of 1 may go on); β 0.5 goes on at once (the best of 2) and
    # waits at rung 2; β 6 and β 5 wait at rung 1. With all 4 recorded, rung 1 closes: its best 2 (β 0.5
    # and β 3) go on, so β 3 is promoted and resumes from its epoch-1 checkpoint, and β 6 and β 5 stop.
    # At rung 2 β 3 is behind β 0.5, whose promotion it was waiting for: β 3 stops, β 0.5 finishes.
    assert {b: by_beta[b]["epochs_run"] for b in betas} == {3.0: 2, 0.5: 4, 6.0: 1, 5.0: 1}
    assert table["epochs_run"].sum() == 8  # of 16 at full budget
    assert {b: starts_of(exp, by_beta[b]["trial_id"]) for b in betas} == {3.0: [0, 1], 0.5: [0, 2], 6.0: [0], 5.0: [0]}
    for b in betas:  # paused trials went on from their checkpoints: no epoch ran twice
        assert [r["epoch"] for r in folder_rows(exp)[by_beta[b]["trial_id"]]] == list(range(1, by_beta[b]["epochs_run"] + 1))
    assert table.iloc[0]["cvae.beta"] == 0.5 and table.iloc[0]["status"] == "complete"
    states = {t.params["cvae.beta"]: t.state for t in study_of(exp).trials}
    assert states == {0.5: optuna.trial.TrialState.COMPLETE, **{b: optuna.trial.TrialState.PRUNED for b in (3.0, 6.0, 5.0)}}
    assert_records_complete(exp, table)  # each paused trial kept one W&B run across its pauses


def test_same_spec_and_seed_give_the_same_trials(tmp_path, toy_control):
    runs = {}
    for name, searcher, concurrent, seed in [("opt_a", "optuna", 1, 0), ("opt_b", "optuna", 1, 0),
                                             ("rnd_a", "random", 2, 0), ("rnd_b", "random", 2, 0),
                                             ("rnd_c", "random", 2, 1)]:
        spec = toy_spec(tmp_path, name, searcher=searcher, max_concurrent=concurrent, num_trials=3,
                        fixed={"epochs": 1, "device": "cpu"}, asha=None, seeds={"sweep_seed": seed, "repeats": 1},
                        wandb={"mode": "disabled"})
        table = run_sweep(spec, check_data=False, trainable=toy_trial)
        runs[name] = sorted(zip(table["lr"].round(12), table["cvae.beta"].round(12), table["seed"]))
    assert [t.params for t in study_of(tmp_path / "runs" / "opt_a").trials] == \
           [t.params for t in study_of(tmp_path / "runs" / "opt_b").trials]
    assert runs["opt_a"] == runs["opt_b"]
    assert runs["rnd_a"] == runs["rnd_b"]  # BasicVariantGenerator: reproducible at any concurrency
    assert runs["rnd_c"] != runs["rnd_a"]


def test_failing_trials_retry_from_their_checkpoint_then_fail_alone(tmp_path, toy_control):
    (toy_control / "fail_once").write_text("")
    ok, nan = {"lr": 1e-3, "cvae.beta": 1.0}, {"lr": 1e-3, "cvae.beta": 7.9}
    spec = toy_spec(tmp_path, "faults", searcher="random", num_trials=2, max_concurrent=2, max_failures=2, asha=None,
                    optuna={"points_to_evaluate": [ok, nan]},
                    search={"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                            "cvae.beta": {"type": "uniform", "low": 0.5, "high": 8.0}})
    table = run_sweep(spec, check_data=False, trainable=toy_trial)

    by_beta = {round(row["cvae.beta"], 3): row for _, row in table.iterrows()}
    good, bad = by_beta[1.0], by_beta[7.9]
    assert good["status"] == "complete" and good["epochs_run"] == 3
    assert bad["status"] == "error" and "loss became nan" in bad["error"]
    exp = experiment(spec)
    rows = folder_rows(exp)
    assert [r["epoch"] for r in rows[good["trial_id"]]] == [1, 2, 3]  # no epoch trained twice
    assert [r["start"] for r in rows[good["trial_id"]]] == [0, 1, 1]  # the retry began at epoch 1's checkpoint
    assert starts_of(exp, bad["trial_id"]) == [0, 1, 1]  # 1 try + max_failures retries, each from the last checkpoint
    assert_records_complete(exp, table)  # the NaN trial's run holds its good epoch and ended failed


DRIVER = """\
import sys
sys.path.insert(0, {tests!r})
import test_sweep_ray
from ray import cloudpickle
cloudpickle.register_pickle_by_value(test_sweep_ray)
from jobs.sweep import run_sweep
run_sweep({spec!r}, check_data=False, trainable=test_sweep_ray.toy_trial)
"""


def newest_checkpoint_epochs(experiment_dir: Path) -> dict[str, int]:
    """trial id -> the epoch of its newest complete checkpoint on disk (0: none)."""
    out = {}
    for trial_dir in sorted(experiment_dir.glob("trial_*")):
        choice = sealed.newest_complete(trial_dir.glob("checkpoint_*"))
        out[trial_dir.name.removeprefix("trial_")] = int(choice.meta["epoch"]) if choice.path else 0
    return out


def kill_driver_mid_sweep(tmp_path: Path, spec: Path, ready, **env_extra: str) -> None:
    """Run the sweep's driver in its own process and SIGKILL it once `ready(snapshot)` holds."""
    exp = experiment(spec)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(REPO / "tests"), spec=str(spec)))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # its own wandb service, killed with it
    env.update({"RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO), **env_extra})
    driver = subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            if ready(experiment_state(exp)):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep did not get far enough to be interrupted")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()


def test_resume_after_the_driver_is_killed_costs_at_most_the_epoch_in_progress(tmp_path, toy_control):
    (toy_control / "sleep").write_text("0.5")
    spec = toy_spec(tmp_path, "resume", num_trials=5, max_concurrent=2, fixed={"epochs": 3, "device": "cpu"},
                    asha={"max_t": 3, "grace_period": 1, "reduction_factor": 2})
    exp = experiment(spec)
    # kill once a trial has left its slot (paused at a rung or ended) and another is part-way: running,
    # with 1 or 2 of its 3 epochs in its folder
    def part_way(snapshot: dict[str, str]) -> bool:
        if not {"PAUSED", "TERMINATED"} & set(snapshot.values()):
            return False
        rows = folder_rows(exp)
        return any(status == "RUNNING" and 1 <= len(rows.get(trial, [])) < 3 for trial, status in snapshot.items())

    kill_driver_mid_sweep(tmp_path, spec, part_way)
    snapshot = experiment_state(exp)  # what Tune resumes from: its last experiment snapshot
    on_disk = newest_checkpoint_epochs(exp)  # what the trials had stored, which may be newer
    before = folder_rows(exp)
    starts_before = {t: len(starts_of(exp, t)) for t in before}

    (toy_control / "sleep").write_text("0")
    table = run_sweep(spec, resume=True, check_data=False, trainable=toy_trial)

    after = folder_rows(exp)
    assert len(table) == 5 and set(snapshot) <= set(table["trial_id"])  # no trial lost, none extra
    interrupted = [t for t, status in snapshot.items() if status != "TERMINATED" and before.get(t)]
    assert interrupted, "no trial was interrupted part-way"
    for trial_id, status in snapshot.items():
        if status == "TERMINATED":
            assert after[trial_id] == before[trial_id]  # finished trials did not run again
    for trial_id in interrupted:
        restarts = starts_of(exp, trial_id)[starts_before[trial_id]:]
        if not restarts:
            continue  # ASHA stopped it on its resumed result
        # it went on from its newest complete checkpoint, even where Tune's snapshot knew an older one
        assert restarts[0] == on_disk[trial_id] >= 1, (trial_id, restarts, on_disk[trial_id])
        rows = after[trial_id]
        assert runfolder.repeated_steps(rows) <= 1  # at most the epoch in progress ran twice...
        by_step = {}
        for row in rows:  # ... with the same numbers
            assert by_step.setdefault(row["step"], row["val/mse"]) == row["val/mse"]
    assert_records_complete(exp, table)
    study = study_of(exp)
    assert len(study.trials) == 5 and all(t.state.is_finished() for t in study.trials)
    with open(sorted(glob.glob(str(exp / "callback-states-*.pkl")))[-1], "rb") as f:
        rule = next(state["promotion"] for state in pickle.load(f).values() if state and "promotion" in state)
    recorded = set().union(*(set(r) for r in rule["rungs"]["values"].values()))
    # ASHA's rungs from before the kill came back (Tune alone restores an empty scheduler, and only
    # resumed trials would be recorded again)
    assert {t for t, status in snapshot.items() if status in ("PAUSED", "TERMINATED")} <= recorded


def test_a_trial_started_after_the_last_snapshot_is_adopted_not_redone(tmp_path, toy_control):
    (toy_control / "sleep").write_text("1.0")
    spec = toy_spec(tmp_path, "orphan", num_trials=2, fixed={"epochs": 4, "device": "cpu"}, asha=None)
    exp = experiment(spec)

    def second_trial_checkpointed_unknown_to_tune(snapshot):
        # Tune snapshots when a trial checkpoints num_to_keep (2) times, else at most every 1000 s
        # here: the second trial starts after the first ends, and is not in any snapshot yet
        unknown = [t for t in exp.glob("trial_*") if t.name.removeprefix("trial_") not in snapshot]
        return snapshot and any(sealed.newest_complete(t.glob("checkpoint_*")).path for t in unknown)

    kill_driver_mid_sweep(tmp_path, spec, second_trial_checkpointed_unknown_to_tune, TUNE_GLOBAL_CHECKPOINT_S="1000")
    snapshot = experiment_state(exp)
    (orphan,) = [t for t in exp.glob("trial_*") if t.name.removeprefix("trial_") not in snapshot]
    orphan_epochs = len(runfolder.read_rows(orphan))
    (toy_control / "sleep").write_text("0")
    table = run_sweep(spec, resume=True, check_data=False, trainable=toy_trial)

    assert len(table) == 2 and orphan.name.removeprefix("trial_") not in set(table["trial_id"])
    (adopter,) = [t for t in table.itertuples() if t.trial_id not in snapshot]
    assert adopter.status == "complete" and adopter.epochs_run == 4
    (start,) = runfolder.read_starts(exp / f"trial_{adopter.trial_id}")
    assert start["adopted"] == str(orphan) and start["from_epoch"] >= 1  # it went on where the orphan stopped
    rows = folder_rows(exp)[adopter.trial_id]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and orphan_epochs >= start["from_epoch"]
    assert (orphan / "adopted_by.json").exists() and not (orphan / "wandb" / "ledger.json").exists()
    assert_records_complete(exp, table)  # the adopter's run holds all four epochs; the orphan got no run


def test_a_torn_checkpoint_is_never_resumed_from(tmp_path, toy_control):
    (toy_control / "tear_once").write_text("")
    try:
        spec = toy_spec(tmp_path, "torn", num_trials=1, fixed={"epochs": 4, "device": "cpu"}, asha=None,
                        max_failures=1)
        table = run_sweep(spec, check_data=False, trainable=toy_trial)
    finally:
        (toy_control / "tear_once").unlink()
    exp = experiment(spec)
    (trial,) = table.itertuples()
    assert trial.status == "complete" and trial.epochs_run == 4
    starts = runfolder.read_starts(exp / f"trial_{trial.trial_id}")
    assert [s["from_epoch"] for s in starts] == [0, 1]  # Tune handed it the torn epoch-2 copy; it took epoch 1's
    epochs = {s["from_epoch"]: s for s in starts}
    torn_dir, good_dir = epochs[1]["tune_checkpoint"], epochs[1]["checkpoint"]
    assert torn_dir != good_dir and Path(good_dir).parent == Path(torn_dir).parent == exp / f"trial_{trial.trial_id}"
    note = epochs[1]["fallback"]
    assert f"checkpoint {torn_dir} is incomplete" in note and f"previous complete checkpoint {good_dir}" in note
    rows = folder_rows(exp)[trial.trial_id]
    assert [r["epoch"] for r in rows] == [1, 2, 2, 3, 4]  # epoch 2, whose checkpoint was torn, ran again
    assert_records_complete(exp, table)


def experiment_state(experiment_dir: Path) -> dict[str, str]:
    """trial id -> status in the newest experiment-state snapshot ({} before the first)."""
    paths = sorted(glob.glob(str(experiment_dir / "experiment_state-*.json")))
    if not paths:
        return {}
    try:
        state = json.loads(Path(paths[-1]).read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    trials = (json.loads(trial) for trial, _ in state["trial_data"])
    return {t["trial_id"]: t["status"] for t in trials}


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net")
def test_the_embedded_ray_listens_on_loopback_only(local_ray):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    gcs_port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
    raylet_port = ray.nodes()[0]["NodeManagerPort"]
    for port in (gcs_port, raylet_port):
        addresses = listening_addresses(port)
        assert addresses and addresses <= loopback, (port, addresses)


def test_unknown_trainer_key_fails_before_any_trial(tmp_path, local_ray):
    spec = toy_spec(tmp_path, "typo", fixed={"epochs": 3, "cvae.bta": 2.0})
    with pytest.raises(ValueError, match=r"'cvae\.bta'.*typo\.yaml|typo\.yaml.*'cvae\.bta'"):
        run_sweep(spec, check_data=False, trainable=toy_trial)
    assert not (tmp_path / "runs" / "typo").exists()


def test_a_second_start_or_a_resume_of_nothing_is_refused(tmp_path, local_ray):
    spec = toy_spec(tmp_path, "twice", num_trials=1, fixed={"epochs": 1, "device": "cpu"}, asha=None)
    with pytest.raises(ValueError, match="no sweep to resume"):
        run_sweep(spec, resume=True, check_data=False, trainable=toy_trial)
    run_sweep(spec, check_data=False, trainable=toy_trial)
    with pytest.raises(ValueError, match="already exists.*--resume"):
        run_sweep(spec, check_data=False, trainable=toy_trial)
    changed = toy_spec(tmp_path, "twice", num_trials=2, fixed={"epochs": 1, "device": "cpu"}, asha=None)
    with pytest.raises(ValueError, match="num_trials"):
        run_sweep(changed, resume=True, check_data=False, trainable=toy_trial)


# ----------------------------------------------------------------------------- the real trial


@pytest.mark.slow
def test_smoke_spec_trains_real_trials_and_resumes_nothing_twice(tmp_path, local_ray, synthetic_data):
    overrides = {"data_dir": str(synthetic_data), "storage_path": str(tmp_path / "runs"), "num_trials": 2,
                 "fixed": {**yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())["fixed"],
                           "epochs": 2, "max_train_batches": 2, "batch_size": 16, "cvae": {"latent_dim": 4, "width": 4}},
                 "asha": {"max_t": 2, "grace_period": 1, "reduction_factor": 2},
                 "wandb": {"mode": "offline", "project": "celeb-test"}}
    table = run_sweep(REPO / "sweeps" / "smoke.yaml", overrides=overrides)
    assert len(table) == 2 and table["best"].notna().all()
    assert np.isclose(table["lr"], 1e-3).any()  # optuna.points_to_evaluate came first
    exp = tmp_path / "runs" / "smoke"
    rows = results_of(exp)
    for trial_id, history in rows.items():
        assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
        assert all(isinstance(v, (int, float, bool, str, type(None))) for r in history for v in r.values()
                   if not isinstance(v, dict))  # scalars only (no per-dim lists, no images)
        assert "val/kl_per_dim" not in history[-1]
    best = table.iloc[0]
    assert (Path(best["checkpoint"]) / "state.pt").exists()
    params = json.loads((exp / f"trial_{best['trial_id']}" / "params.json").read_text())
    assert params["seed"] == trial_seeds(0, 1)[0] and params["data.data_dir"] == str(synthetic_data)
    # Each trial: its panels and dimension table in its dir, and a complete W&B record grouped by sweep,
    # the trials ASHA stopped included.
    assert_records_complete(exp, table)
    for trial_id, history in rows.items():
        trial_dir = exp / f"trial_{trial_id}"
        assert (trial_dir / "traversal.png").exists() and (trial_dir / "dimensions.csv").exists()
        assert all("val/mig_fixed" in r for r in history)
        result = audit(trial_dir)  # every scalar of every epoch, and the panels
        assert result.missing_epochs == [] and result.missing_panels == [] and result.panels >= 2
        recorded = result.recorded
        assert {s["run"]["run_group"] for s in recorded.segments} == {"smoke"}
        assert {s["run"]["project"] for s in recorded.segments} == {"celeb-test"}
        assert {s["run"]["run_id"] for s in recorded.segments} == {trial_id}
        assert any(row.get("traversal._type") == "image-file" for row in recorded.rows.values())
        assert any(row.get("dimensions._type") == "table-file" for row in recorded.rows.values())
        last = recorded.segments[-1]
        assert last["config"]["seed"] == trial_seeds(0, 1)[0] and last["state"] == "finished"
        assert last["summary"]["best/val/mse"] == pytest.approx(min(r["val/mse"] for r in history))
    # Resuming a finished sweep runs nothing again.
    run_sweep(REPO / "sweeps" / "smoke.yaml", resume=True, overrides=overrides)
    assert results_of(exp) == rows


@pytest.mark.slow
def test_fused_trials_train_as_they_do_alone_and_leave_their_group_when_asha_stops_them(
        tmp_path, local_ray, synthetic_data):
    """Up to 3 trials at a time as one fused model (on the CPU here): each reports the losses it
    gets alone, ASHA stops some (they leave at once: the driver tells the group, long before
    fuse_wait_s), a fourth joins a running group, and the group ends with the sweep."""
    from celeb.data.dataset import load_data
    from celeb.training.loop import fit
    from celeb.training.tracking import read_metrics
    from celeb.sweep.spec import train_config_from_trial

    fixed = {**yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())["fixed"], "epochs": 3,
             "max_train_batches": 2, "batch_size": 16, "cvae": {"latent_dim": 4, "width": 4}}
    overrides = {"data_dir": str(synthetic_data), "storage_path": str(tmp_path / "runs"), "name": "fused",
                 "num_trials": 4, "max_concurrent": 3, "searcher": "random", "fixed": fixed,
                 "resources": {"cpu": 1, "gpu": 0, "fuse": 3, "fuse_wait_s": 300},
                 "asha": {"max_t": 3, "grace_period": 1, "reduction_factor": 2}, "wandb": {"mode": "disabled"}}
    started = time.monotonic()
    table = run_sweep(REPO / "sweeps" / "smoke.yaml", overrides=overrides)
    assert time.monotonic() - started < 250  # no stopped trial was waited for until fuse_wait_s
    assert len(table) == 4 and table["best"].notna().all()
    data = load_data(synthetic_data)
    epochs_run = []
    for trial_dir in sorted((tmp_path / "runs" / "fused").glob("trial_*")):
        history = read_metrics(trial_dir)
        config = train_config_from_trial(json.loads((trial_dir / "params.json").read_text()))
        alone = fit(config, data).history
        epochs_run.append(len(history))
        assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
        for mine, theirs in zip(history, alone):
            for key in ("train/loss", "val/loss", "val/kl"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-5), (trial_dir.name, key)
    assert min(epochs_run) < 3 and max(epochs_run) == 3  # ASHA stopped some, others ran in full
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == "celeb-fused"]


@pytest.mark.slow
def test_the_nvae_sweep_spec_runs_ranked_by_bits_per_dim(tmp_path, local_ray, synthetic_data):
    spec = yaml.safe_load((REPO / "sweeps" / "nvae.yaml").read_text())
    fixed = {**spec["fixed"], "epochs": 2, "max_train_batches": 2, "batch_size": 16, "eval_batch_size": 64,
             "num_recon": 0, "cvae": {**spec["fixed"]["cvae"], "latent_dim": 4, "width": 4, "panel_every": 0},
             "nvae": {"scales": 1, "groups": 1, "latent_channels": 2, "cells": 1}}
    overrides = {"data_dir": str(synthetic_data), "storage_path": str(tmp_path / "runs"), "num_trials": 2,
                 "max_concurrent": 2, "resources": {"cpu": 1, "gpu": 0}, "fixed": fixed,
                 "asha": {"max_t": 2, "grace_period": 1, "reduction_factor": 2}, "wandb": {"mode": "disabled"}}
    table = run_sweep(REPO / "sweeps" / "nvae.yaml", overrides=overrides)
    assert len(table) == 2 and table["best"].between(1, 12).all()  # bits per sub-pixel, not nats per image
    assert table["best"].is_monotonic_increasing  # ranked, lowest bits/dim first
    rows = results_of(tmp_path / "runs" / "nvae")
    assert all("val/kl_top" in r and "val/bits_per_dim" in r for history in rows.values() for r in history)


# ----------------------------------------------------------------------------- a lost node


@pytest.mark.slow
def test_trials_on_a_lost_node_finish_elsewhere_from_their_checkpoints(tmp_path, toy_control):
    from ray.cluster_utils import Cluster

    (toy_control / "sleep").write_text("1.0")
    ray.shutdown()  # this test needs its own multi-node cluster; the module's Ray comes back after
    # start_local_ray set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, so these nodes listen on 127.0.0.1 only
    node = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0})
    try:
        workers = [cluster.add_node(**node, num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1")  # the driver's node is loopback too
        victim = workers[0].node_id
        spec = toy_spec(tmp_path, "nodes", searcher="random", num_trials=2, max_concurrent=2, max_failures=3,
                        asha=None, fixed={"epochs": 5, "device": "cpu"})
        exp = experiment(spec)

        def remove_victim_mid_run():
            deadline = time.time() + 120
            while time.time() < deadline:
                on_victim = [rows for rows in results_of(exp).values() if rows and rows[-1]["node"] == victim]
                if on_victim and on_victim[0][-1]["epoch"] >= 2:
                    cluster.remove_node(workers[0])  # its trials fail and move to the other worker
                    return
                time.sleep(0.2)

        remover = threading.Thread(target=remove_victim_mid_run)
        remover.start()
        table = run_sweep(spec, check_data=False, trainable=toy_trial)
        remover.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
        start_local_ray(num_cpus=2)

    assert (table["status"] == "complete").all() and (table["epochs_run"] == 5).all()
    moved = [rows for rows in results_of(exp).values() if rows[0]["node"] == victim]
    assert moved, "no trial ran on the removed node"
    for rows in moved:
        first = [r["epoch"] for r in rows if r["node"] == victim]
        later = [r for r in rows if r["node"] != victim]
        assert first == list(range(1, len(first) + 1))
        assert later and later[0]["start"] >= 1  # picked up from its checkpoint on another node, not from scratch
        # An epoch reported just before the node died, whose checkpoint had not reached storage, runs
        # again (Tune's at-least-once); everything from the checkpoint on runs once, and nothing is lost.
        assert [r["epoch"] for r in later] == list(range(later[0]["start"] + 1, 6))
        assert later[0]["start"] <= first[-1]
    assert_records_complete(exp, table)


# ----------------------------------------------------------------------------- the demo's claim


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The demo's data: 3,000 synthetic faces of 1,000 people, prepared (with their true factors) and split."""
    from celeb.cli import main

    root = tmp_path_factory.mktemp("demo")
    assert main(["synth", str(root / "celeba"), "--n", "3000", "--identities", "1000", "--seed", "0"]) in (0, None)
    assert main(["prepare", str(root / "celeba"), "--out", str(root / "data")]) in (0, None)
    assert main(["split", str(root / "data"), "--strategy", "balanced", "--seed", "0"]) in (0, None)
    return root / "data"


@pytest.mark.slow
def test_demo_sweep_review_top_checkpoint_labels_dims_with_their_true_factors(tmp_path, local_ray, demo_data):
    """The demo's sweep (its first two configs, β = 1 and 4), then `celeb review` by MIG: the top-ranked
    checkpoint labels at least three latent dims with the true generative factor of their attribute."""
    from celeb.review import write_review

    assert (demo_data / "factors.parquet").exists()  # celeb prepare copied the truth beside the table
    overrides = {"data_dir": str(demo_data), "storage_path": str(tmp_path / "runs"), "num_trials": 2,
                 "wandb": {"mode": "disabled"}}
    table = run_sweep(REPO / "sweeps" / "demo.yaml", overrides=overrides)
    assert sorted(table["cvae.beta"]) == [1.0, 4.0]
    result = write_review([tmp_path / "runs" / "demo"], tmp_path / "review", "val/mig_fixed", top=1,
                          export=tmp_path / "best.pt", progress=False, all_metrics=False)
    top = result.cards[0].review
    matched = top.dimensions[top.dimensions["label_matches"]]
    assert len(matched) >= 3, top.dimensions[["dim", "label", "true_factor", "label_matches"]]
    assert top.metrics["true_factor_matches"] == len(matched)
    assert result.export.exists() and result.leaderboard.iloc[0]["val/mig_fixed"] == pytest.approx(table["best"].max())
