"""The function Ray Tune runs for one trial: its config -> TrainConfig -> data -> `celeb.training.loop.fit`.

The trial writes its run folder (celeb.training.runfolder: metrics.jsonl, panels, tables) inside the
sweep's experiment folder, or in its working dir, which Tune syncs there, when the sweep is kept
on an object store. Each epoch, `fit` writes the epoch's row and panels, then a sealed checkpoint,
then calls back here, and the epoch's scalar metrics go to `tune.report` with that checkpoint.
Images and per-dimension lists stay out of `tune.report` (Tune's loggers cannot take them).

The trial never talks to W&B: the driver writes each trial's W&B run from its folder
(jobs.records), so Tune may end this process at any moment without losing a record. A NaN loss
(NonFiniteLossError) fails the trial like any error. A (re)started trial continues from its newest
complete checkpoint (jobs.resume), so `fit` goes on exactly where it stopped.

With `resources.fuse` > 1, `train_fused_trial` runs instead: the trial's epochs are trained by a
fused group on its node's GPU (jobs.fused), which writes the same folder and checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from celeb import logs, storage
from celeb.data.dataset import load_data
from celeb.seeds import seed_everything
from celeb.sweep.spec import train_config_from_trial, trial_dirname
from celeb.training.loop import fit
from celeb.training.runfolder import scalar_values
from celeb.training.tracking import LocalTracker
from jobs.fused import report_epochs
from jobs.resume import resume_checkpoint


def train_trial(config: dict[str, Any], experiment_path: str) -> None:
    """Train one sampled config; `config` holds flat dotted trainer keys, including its `seed`.

    `experiment_path`: the sweep's experiment folder (a local path or a URI).
    """
    logs.show()
    seed_everything(int(config["seed"]))  # actors are reused across trials: start from a known RNG state
    train_config = train_config_from_trial(config)
    d = train_config.data
    data = load_data(Path(d.data_dir), split=d.split, image_size=d.image_size, crop=d.crop)
    folder, run_dir = trial_folders(experiment_path)

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        tune.report(scalar_values(metrics), checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    with resume_checkpoint(folder, run_dir, config) as state:
        fit(train_config, data, tracker=LocalTracker(run_dir), on_epoch_end=report, state=state)


def train_fused_trial(config: dict[str, Any], experiment_path: str, sweep: str, fuse: int, wait_s: float,
                      group_cpu: float, group_gpu: float) -> None:
    """Train one sampled config as a member of a fused group (jobs.fused) of up to `fuse` trials on
    this node's GPU: the group trains it; this function reports its epochs, as `train_trial` does."""
    logs.show()
    train_config_from_trial(config)  # a bad config fails here, in the trial, not in the group
    folder, run_dir = trial_folders(experiment_path)
    with resume_checkpoint(folder, run_dir, config) as state:
        report_epochs(sweep, tune.get_context().get_trial_id(), config, run_dir, state, fuse, wait_s,
                      group_cpu, group_gpu)


def trial_folders(experiment_path: str) -> tuple[str, Path]:
    """The trial's folder in the sweep's storage, and the local folder it writes (the same folder
    on local storage; the working dir, which Tune syncs there, on an object store)."""
    folder = storage.join(experiment_path, trial_dirname(tune.get_context().get_trial_id()))
    return folder, Path.cwd() if storage.is_uri(folder) else Path(folder)
