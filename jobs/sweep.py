"""The sweep driver: a checked spec -> a Ray Tune run -> a ranked table of trials.

    python -m jobs.sweep sweeps/smoke.yaml [--resume] [--address auto] [--set data_dir=demo/data]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.sweep sweeps/x.yaml

The spec is checked first (celeb.sweep.spec.load_spec) and the data dir opened, so a typo fails once, on
the driver, before any trial starts. Then one Tune run (its searcher and scheduler are in
jobs.search): `SeededOptunaSearch` (or seeded random search) proposes configs, `PromotionASHA`
pauses trials at its rungs and promotes the best of each rung later (with `asha.promotion:
percentile`, Ray's `ASHAScheduler` stops poor ones instead; metric and mode are set once, in
TuneConfig), at most `max_concurrent` trials run at once, each trial gets `resources`, a failing trial is
retried from its newest complete checkpoint up to `max_failures` times, and the best `num_to_keep`
checkpoints per trial are kept. With `resources.fuse` > 1 the trials of each GPU train as one
fused model (jobs.fused); the driver tells the groups which trials Tune ended and ends the groups
with the sweep. The driver writes every trial's W&B run from the trial's folder
(jobs.records). At the end the trials are ranked from their folders (celeb.sweep.ranking.rank_trials),
printed and written to <experiment>/ranking.csv, with a line on the W&B records.

Resuming (`--resume`, after the driver or the head was killed) continues the same experiment dir:
finished trials are not run again, unfinished and errored ones continue from their checkpoints.
What Tune itself restores, and what this module adds:
- the searcher: Tune pickles it with the experiment state, so the Optuna study (every trial and
  intermediate value, and the sampler's RNG) and this module's repeat bookkeeping come back;
- the scheduler: Tune does NOT save it, so ASHA would restart with empty rungs and judge resumed
  trials against nothing. `SchedulerState`, a Tune callback (callbacks are checkpointed), saves
  ASHA's rungs, waiting trials and promotions and puts them back; paused trials stay paused
  until promoted.
- the trials: each continues from its newest complete checkpoint on disk, even one Tune's last
  snapshot did not know (jobs.resume); a checkpoint Tune deleted but its snapshot still names gets
  a placeholder, so Tune does not refuse the restore; a trial started after the last snapshot is
  adopted by the new trial the searcher suggests for the same config.
ASHA-stopped trials: Ray's OptunaSearch tells Optuna they are COMPLETE with an early-rung value, so
TPE would mix short and full runs; `SeededOptunaSearch` tells Optuna they are PRUNED instead.

Reproducibility: the same spec and seeds give the same sampled configs with `searcher: optuna` only
at `max_concurrent: 1` (with more, the order in which trials finish changes what TPE has seen when
it suggests); `searcher: random` gives the same configs at any concurrency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import TrialScheduler

from celeb import storage
from celeb.config import parse_override
from celeb.data.dataset import load_data
from celeb.seeds import trial_seeds
from celeb.sweep.ranking import format_table, rank_trials, summarize_configs
from celeb.sweep.spec import (SweepSpec, SweepSpecError, base_trial_config, describe, load_spec,
                              train_config_from_trial, trial_dirname)
from celeb.training import runfolder
from jobs import internals
from jobs.records import REPORT_FILE, WandbRecords, read_report
from jobs.resume import fill_pruned_checkpoints, remove_placeholders, write_orphans
from jobs.search import (TIME_ATTR, SchedulerState, make_scheduler, make_searcher, scheduler_limits_concurrency,
                         search_space)
from jobs.fused import TRIAL_CPU, FusedMembers, end_groups
from jobs.trial import train_fused_trial, train_trial

SPEC_FILE = "sweep_spec.json"
RANKING_FILE = "ranking.csv"
CONFIG_RANKING_FILE = "ranking_by_config.csv"


def trial_folder(trial: Any) -> str:
    return trial_dirname(trial.trial_id)


# ----------------------------------------------------------------------------- building the Tune run


def make_trainable(spec: SweepSpec, trainable: Callable | None = None):
    """The trial function (config, experiment_path) with the spec's experiment folder and resources.

    With resources.fuse > 1 it is jobs.trial.train_fused_trial, whose process only relays epochs
    (TRIAL_CPU): the spec's cpu and gpu go to each fused group (jobs.fused) instead."""
    r = spec.resources
    if r.fuse > 1 and trainable is None:
        fused = tune.with_parameters(train_fused_trial, experiment_path=spec.experiment_path, sweep=spec.name,
                                     fuse=r.fuse, wait_s=r.fuse_wait_s, group_cpu=r.cpu, group_gpu=r.gpu)
        return tune.with_resources(fused, {"cpu": TRIAL_CPU, "gpu": 0})
    trainable = tune.with_parameters(trainable or train_trial, experiment_path=spec.experiment_path)
    return tune.with_resources(trainable, {"cpu": r.cpu, "gpu": r.gpu})


def check_fused_capacity(spec: SweepSpec) -> None:
    """Fused groups are started by trials as they need them, one per GPU (or per `resources.cpu`
    CPUs without GPUs); a sweep that runs more trials at once than its groups can hold would leave
    the extra trials waiting on a group that can never start, so it is refused."""
    r = spec.resources
    if r.fuse == 1:
        return
    available = ray.cluster_resources()
    groups = int(available.get("GPU", 0) // r.gpu) if r.gpu else int(available.get("CPU", 0) // (r.cpu + TRIAL_CPU))
    if spec.max_concurrent > r.fuse * groups:
        raise SweepSpecError(f"{spec.source}: max_concurrent {spec.max_concurrent} is more than the "
                             f"{groups} fused group(s) this cluster can hold take ({r.fuse} trials each, "
                             f"{r.gpu:g} GPU and {r.cpu:g} CPU per group); lower max_concurrent to "
                             f"{max(1, r.fuse * groups)} or add GPUs")


def make_callbacks(spec: SweepSpec, scheduler: TrialScheduler | None) -> list[tune.Callback]:
    """The driver's callbacks: W&B records written from the trial folders, ASHA's saved rungs, and
    (fused trials) telling the groups which trials Tune has ended."""
    callbacks: list[tune.Callback] = [FusedMembers(spec.name)] if spec.resources.fuse > 1 else []
    if spec.wandb.mode != "disabled":
        callbacks.append(WandbRecords(spec.wandb, spec.experiment_path, spec.name, spec.metric, spec.mode))
    if scheduler is not None:
        callbacks.append(SchedulerState(scheduler))
    return callbacks


def build_tuner(spec: SweepSpec, trainable: Callable | None = None) -> tune.Tuner:
    """A fresh Tuner for `spec` (use `restore_tuner` to continue an existing experiment).

    `trainable` replaces jobs.trial.train_trial (tests and benchmarks); it gets the spec's resources.
    """
    scheduler = make_scheduler(spec)
    searcher, num_samples, extra_space = make_searcher(spec, scheduler)
    return tune.Tuner(
        make_trainable(spec, trainable),
        param_space={**search_space(spec), **extra_space},
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples,
                                    max_concurrent_trials=None if scheduler_limits_concurrency(spec) else spec.max_concurrent,
                                    reuse_actors=spec.reuse_actors, trial_dirname_creator=trial_folder),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=spec.storage_path,
            sync_config=tune.SyncConfig(sync_artifacts=True),  # trial dirs (W&B offline runs, panels) to storage
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.num_to_keep,
                                                    checkpoint_score_attribute=spec.metric,
                                                    checkpoint_score_order=spec.mode),
            callbacks=make_callbacks(spec, scheduler)))


def restore_tuner(spec: SweepSpec, trainable: Callable | None = None) -> tune.Tuner:
    """The Tuner of an interrupted sweep: finished trials stay, the others continue from checkpoints."""
    path = spec.experiment_path
    if not tune.Tuner.can_restore(path):
        raise SweepSpecError(f"{spec.source}: --resume: no sweep to resume at {path} (no experiment state "
                             "there); run without --resume to start it")
    stored = read_stored_spec(spec)
    if stored is not None:
        changed = sorted(k for k in set(stored) | set(spec_record(spec))
                         if stored.get(k) != spec_record(spec).get(k))
        if changed:
            raise SweepSpecError(f"{spec.source}: --resume: the spec changed since the sweep started "
                                 f"({', '.join(changed)} differ from {path}/{SPEC_FILE}); a resumed sweep "
                                 "keeps its search space, so restore the spec or start a sweep with a new name")
    # Trials Tune's last snapshot does not know (started just before a killed driver) are listed,
    # so that the new trials the searcher suggests for their configs adopt them (jobs.resume).
    write_orphans(path, tune.ExperimentAnalysis(path).results)
    fill_pruned_checkpoints(path)
    return tune.Tuner.restore(path, make_trainable(spec, trainable), resume_unfinished=True, resume_errored=True)


# ----------------------------------------------------------------------------- running and ranking


def run_sweep(spec_path: str | Path, resume: bool = False, address: str | None = None,
              overrides: dict[str, Any] | None = None, check_data: bool = True,
              trainable: Callable | None = None) -> pd.DataFrame:
    """Run (or `resume`) the sweep in `spec_path`; return the ranked trials (also in ranking.csv).

    `address`: a Ray cluster to join ("auto", "ray://..." or host:port); default: the cluster in
    RAY_ADDRESS (as under `ray job submit`), else an embedded local Ray bound to 127.0.0.1.
    `overrides` replace top-level spec keys (e.g. {"data_dir": ...}). `check_data=False` skips
    opening the data dir on the driver, and `trainable` replaces jobs.trial.train_trial (both for
    tests and benchmarks).
    """
    spec = load_spec(spec_path, overrides)
    if check_data:
        check_data_dir(spec)
    print(describe(spec), flush=True)
    started_ray = init_ray(address)
    try:
        check_fused_capacity(spec)
        if resume:
            tuner = restore_tuner(spec, trainable)
        else:
            if tune.Tuner.can_restore(spec.experiment_path) or read_stored_spec(spec) is not None:
                raise SweepSpecError(f"{spec.source}: a sweep named '{spec.name}' already exists at "
                                     f"{spec.experiment_path}; pass --resume to continue it, or change 'name'")
            write_to_storage(spec.experiment_path, SPEC_FILE, json.dumps(spec_record(spec), indent=2))
            tuner = build_tuner(spec, trainable)
        storage.write_text(storage.join(spec.experiment_path, REPORT_FILE), "")  # this session's report, once written
        results = tuner.fit()
        remove_placeholders(spec.experiment_path)
    finally:
        if spec.resources.fuse > 1:
            end_groups(spec.name)
        if started_ray:
            ray.shutdown()
    records = read_report(spec.experiment_path)
    if records is not None:
        print(records.describe(spec.experiment_path))
    table = rank_trials(ranking_rows(results, spec), spec.metric, spec.mode)
    write_to_storage(spec.experiment_path, RANKING_FILE, table.to_csv(index=False))
    print(f"\n{spec.name}: {len(table)} trials ranked by {spec.mode} {spec.metric} "
          f"-> {spec.experiment_path}/{RANKING_FILE}")
    print(format_table(table))
    if spec.seeds.repeats > 1:
        summary = summarize_configs(table, spec.mode)
        write_to_storage(spec.experiment_path, CONFIG_RANKING_FILE, summary.to_csv(index=False))
        print(f"\nby config (mean over {spec.seeds.repeats} seeds) -> {spec.experiment_path}/{CONFIG_RANKING_FILE}")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    return table


def init_ray(address: str | None) -> bool:
    """Join or start Ray; True when this call started it (so the caller shuts it down)."""
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        start_local_ray()
    return True


def start_local_ray(**init_kwargs: Any) -> None:
    """An embedded single-node Ray whose ports all listen on 127.0.0.1 only.

    Ray binds to loopback only when it takes multi-node clusters to be off on this machine
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); otherwise its gRPC ports listen on every interface
    whatever the node IP. Ray reads that flag when it is imported, so it is set here both for the
    processes Ray starts and in this process's copy of Ray's constants. Token auth stays as
    RAY_AUTH_MODE says (on by default for a local ray.init). address="local": a new Ray, never a
    cluster an earlier run left registered in /tmp/ray.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    internals.bind_local_ray_to_loopback()
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **init_kwargs)


def check_data_dir(spec: SweepSpec) -> None:
    """Open the data the trials will train on (table, split, cache) so a missing piece fails now."""
    if "://" in spec.data_dir:
        return
    data = train_config_from_trial(base_trial_config(spec)).data  # the fixed keys over the trainer's defaults
    load_data(Path(spec.data_dir), split=data.split, image_size=data.image_size, crop=data.crop)


def ranking_rows(results: tune.ResultGrid, spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per trial for celeb.sweep.ranking.rank_trials: Tune's results for the config and the status;
    the trial's own folder for its epochs and the checkpoint of its best one (after a resume from
    an older experiment snapshot, Tune's record of a trial can lack epochs its folder holds)."""
    seeds = trial_seeds(spec.seeds.sweep_seed, spec.seeds.repeats)
    rows = []
    for result in results:
        config = result.config or {}
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
        folder = storage.join(spec.experiment_path, trial_dirname(trial_id))
        epochs = runfolder.epoch_rows(runfolder.read_rows(folder))
        if not epochs and result.metrics_dataframe is not None:  # a trainable that keeps no run folder
            epochs = [{**row, runfolder.STEP: i} for i, row in enumerate(result.metrics_dataframe.to_dict("records"))]
        best = runfolder.best_row(epochs, spec.metric, spec.mode)
        epochs_run = max((int(row.get(TIME_ATTR, 0)) for row in epochs), default=0)
        checkpoint = runfolder.checkpoint_of_epoch(folder, best[TIME_ATTR]) if best else None
        if checkpoint is None and result.best_checkpoints:  # a trainable that seals no checkpoints
            try:
                checkpoint = result.get_best_checkpoint(spec.metric, spec.mode).path
            except (RuntimeError, KeyError, ValueError):
                checkpoint = result.checkpoint.path if result.checkpoint else None
        seed = config.get("seed")
        full = spec.asha.max_t if spec.asha else spec.epochs
        status = "error" if result.error else ("complete" if epochs_run >= full else "stopped")
        rows.append({
            "trial_id": trial_id, "status": status, "params": {p.name: config.get(p.name) for p in spec.search},
            "seed": seed, "repeat": seeds.index(seed) if seed in seeds else None,
            "best": float(best[spec.metric]) if best else None, "best_epoch": best.get(TIME_ATTR) if best else None,
            "epochs_run": epochs_run, "checkpoint": checkpoint,
            "error": _first_line(result.error)})
    return rows


def _first_line(error: BaseException | None) -> str | None:
    if error is None:
        return None
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


# ----------------------------------------------------------------------------- experiment-dir files


def spec_record(spec: SweepSpec) -> dict[str, Any]:
    """The spec as plain JSON-able values (without where it was read from), to compare on --resume."""
    record = dataclasses.asdict(spec)
    record.pop("source")
    record["num_to_keep"] = record.pop("checkpoint")["num_to_keep"]  # the file's shape before the section
    record["resources"].pop("gpu_memory_gb")  # only a check before the start; it may be added on --resume
    record.pop("wandb")  # where results are tracked may change on --resume
    return json.loads(json.dumps(record))


def read_stored_spec(spec: SweepSpec) -> dict[str, Any] | None:
    text = read_from_storage(spec.experiment_path, SPEC_FILE)
    return json.loads(text) if text is not None else None


def write_to_storage(experiment: str, name: str, text: str) -> None:
    """Write a small text file into the experiment dir (local: atomically; or s3:// / gs://)."""
    storage.write_text(storage.join(experiment, name), text)


def read_from_storage(experiment: str, name: str) -> str | None:
    return storage.read_text(storage.join(experiment, name))


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="a sweep spec, e.g. sweeps/smoke.yaml")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this spec")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (auto, host:port, ray://...); default: RAY_ADDRESS or a local Ray")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a top-level spec key, e.g. --set data_dir=demo/data (repeatable)")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items -> {key: value}, each value parsed as YAML (celeb.config.parse_override)."""
    return dict(parse_override(item) for item in items)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_sweep(args.spec, resume=args.resume, address=args.address, overrides=parse_overrides(args.set))
    except (SweepSpecError, FileNotFoundError, ValueError) as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
