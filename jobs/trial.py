"""The function Ray Tune runs for one trial: its config -> TrainConfig -> data -> `celeb.train.fit`.

Each epoch, `fit` writes a checkpoint dir and calls back here; the epoch's scalar metrics go to
`tune.report` with that dir as the checkpoint (Tune copies it to the sweep's storage). Images and
per-dimension lists stay out of `tune.report` (Tune's loggers cannot take them). A NaN loss
(NonFiniteLossError) fails the trial like any error. When Tune restarts a trial after a failure, a
lost node or a `--resume`, `tune.get_checkpoint()` returns its last checkpoint and `fit` continues
from it exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from celeb.dataset import load_data
from celeb.sweep import train_config_from_trial
from celeb.train import fit, seed_everything


def train_trial(config: dict[str, Any]) -> None:
    """Train one sampled config; `config` holds flat dotted trainer keys, including its `seed`."""
    seed_everything(int(config["seed"]))  # actors are reused across trials: start from a known RNG state
    train_config = train_config_from_trial(config)
    d = train_config.data
    data = load_data(Path(d.data_dir), split=d.split, image_size=d.image_size, crop=d.crop)

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        tune.report(scalar_metrics(metrics), checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        fit(train_config, data, on_epoch_end=report)
    else:
        with checkpoint.as_directory() as state:
            fit(train_config, data, on_epoch_end=report, state=Path(state))


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float | int | bool]:
    """The numbers among an epoch's metrics (lists, arrays and images are left out)."""
    scalars: dict[str, float | int | bool] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
            value = value.item()
        if isinstance(value, (bool, int, float)):
            scalars[key] = value
    return scalars
