"""The function Ray Tune runs for one trial: its config -> TrainConfig -> data -> `celeb.train.fit`.

Each epoch, `fit` writes a checkpoint dir and calls back here; the epoch's scalar metrics go to
`tune.report` with that dir as the checkpoint (Tune copies it to the sweep's storage). Images and
per-dimension lists stay out of `tune.report` (Tune's loggers cannot take them); they go to the
trial's trackers instead: its working dir (metrics.jsonl, traversal.png, dimensions.csv, ...,
synced to storage) and one W&B run per trial, grouped by sweep, offline unless WANDB_API_KEY is
set. A W&B problem never fails a trial (celeb.tracking.WandbTracker). A NaN loss
(NonFiniteLossError) fails the trial like any error. When Tune restarts a trial after a failure, a
lost node or a `--resume`, `tune.get_checkpoint()` returns its last checkpoint and `fit` continues
from it exactly, logging into the same W&B run (its id is the trial id).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import tune

from celeb.dataset import load_data
from celeb.sweep import WandbSettings, train_config_from_trial, trial_dirname
from celeb.tracking import LocalTracker, MultiTracker, WandbTracker, scalar_values
from celeb.checkpoint import checkpoint_name
from celeb.config import TrainConfig
from celeb.train import fit, seed_everything


def train_trial(config: dict[str, Any], wandb: WandbSettings | None = None, experiment_dir: str | None = None) -> None:
    """Train one sampled config; `config` holds flat dotted trainer keys, including its `seed`.

    `experiment_dir`: the sweep's experiment folder when it is on a local or shared file system;
    the trial's panels and W&B run are then written straight into its trial folder there.
    """
    seed_everything(int(config["seed"]))  # actors are reused across trials: start from a known RNG state
    train_config = train_config_from_trial(config)
    d = train_config.data
    data = load_data(Path(d.data_dir), split=d.split, image_size=d.image_size, crop=d.crop)

    settings = wandb or WandbSettings(mode="disabled")
    local, remote = trial_trackers(config, settings, experiment_dir)
    history: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        history.append(scalar_values(metrics))
        if metrics["epoch"] == train_config.epochs:
            # Tune ends the trial inside its last report (SystemExit), and may tear the worker down
            # right after: close the W&B run first, so its offline file is complete.
            close_run(remote, history, train_config, checkpoint_dir if settings.log_checkpoint else None)
        tune.report(scalar_values(metrics), checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    # Tune keeps the checkpoints; fit keeps its own copy only when the best one is to be uploaded.
    run_dir = Path.cwd() / "fit" if settings.log_checkpoint else None
    tracker = MultiTracker(local, remote)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            fit(train_config, data, tracker=tracker, on_epoch_end=report, run_dir=run_dir)
        else:
            with checkpoint.as_directory() as state:
                fit(train_config, data, tracker=tracker, on_epoch_end=report, state=Path(state), run_dir=run_dir)
    except SystemExit as stop:  # how tune.report ends a trial that ASHA stopped at a rung
        close_run(remote, history, train_config, exit_code=0 if stop.code in (0, None) else 1)
        raise
    except BaseException:
        close_run(remote, history, train_config, exit_code=1)
        raise
    close_run(remote, history, train_config)  # early stopping ended it before its last epoch


def close_run(remote: WandbTracker, history: list[dict[str, Any]], config: TrainConfig,
              last_checkpoint: Path | None = None, exit_code: int = 0) -> None:
    """Summary (the best epoch's metrics), the best checkpoint as an artifact if given, then finish.

    `last_checkpoint` is the folder of the last epoch; the best one is its sibling (fit keeps both).
    """
    if not remote.active:
        remote.finish(exit_code=exit_code)
        return
    summary = summary_metrics(history, config.early_stopping_metric, config.early_stopping_mode)
    remote.set_summary(summary)
    if last_checkpoint is not None and summary.get("best_epoch") is not None:
        best = Path(last_checkpoint).parent / checkpoint_name(int(summary["best_epoch"]))
        if best.exists():
            remote.log_checkpoint(best, name=f"model-{tune.get_context().get_trial_id()}", metadata=summary)
    remote.finish(exit_code=exit_code)


def trial_trackers(config: dict[str, Any], settings: WandbSettings,
                   experiment_dir: str | None = None) -> tuple[LocalTracker, WandbTracker]:
    """The trial's folder tracker and its W&B run (id = trial id, so a restarted trial continues it).

    The folder is the trial's own in a local experiment dir, so W&B's last records (written after the
    last report, when Tune may already be syncing the trial) land there directly; otherwise (cloud
    storage) it is the trial's working dir, which Tune syncs to storage (sync_artifacts).
    """
    context = tune.get_context()
    run_dir = Path(experiment_dir) / trial_dirname(context.get_trial_id()) if experiment_dir else Path(os.getcwd())
    remote = WandbTracker(project=settings.project, entity=settings.entity, mode=settings.mode,
                          group=context.get_experiment_name(), name=context.get_trial_name(),
                          run_id=context.get_trial_id(), config=config, run_dir=run_dir,
                          tags=settings.tags, job_type=str(config.get("task", "")))
    return LocalTracker(run_dir), remote


def summary_metrics(history: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The W&B summary: the best epoch by `metric` and its scalars as best/<name> (last values stay as they are)."""
    scored = [row for row in history if metric in row]
    if not scored:
        return {"best_epoch": None}
    best = (min if mode == "min" else max)(scored, key=lambda row: row[metric])
    return {"best_epoch": best["epoch"], **{f"best/{k}": v for k, v in best.items()}}
