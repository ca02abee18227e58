"""Finding checkpoints: every folder holding both state.pt and meta.json, as one leaderboard row each.

A local run (runs/<run>/checkpoints/epoch_NNN/) and a Ray Tune trial (<sweep>/<trial>/checkpoint_00000K/)
are read the same way; only meta.json is read to build the table. A root may be a local folder or a
URI (s3://, gs://, ...): everything is listed and read through celeb.storage, and a checkpoint of a
URI root is named by its URI.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from celeb import storage
from celeb.config import LATENT_TASKS, config_from_dict, flatten
from celeb.models import config_beta
from celeb.training import sealed
from celeb.training.checkpoint import META_FILE, STATE_FILE

ID_COLUMNS = ("rank", "trial", "epoch", "step", "task", "seed", "checkpoint")
# Config values worth a column even when every trial shares them (a reader wants to see the β).
INTERESTING_KEYS = ("cvae.beta", "cvae.beta_norm", "cvae.capacity", "cvae.latent_dim", "cvae.width",
                    "classifier.backbone", "classifier.dropout", "lr", "batch_size", "weight_decay")
TASK_SECTIONS = {"cvae": ("cvae.",), "nvae": ("cvae.", "nvae."), "classifier": ("classifier.",)}  # the config each uses


def find_checkpoints(roots: Sequence[str | Path]) -> pd.DataFrame:
    """One row per checkpoint folder (state.pt + meta.json) under `roots`, by trial then epoch.

    Columns: trial (the run dir or Tune trial dir's name), checkpoint (its folder), epoch, step,
    task, seed, the config values that are interesting or vary between checkpoints (dotted keys,
    lists joined by ", "), the effective KL weight `beta` of CVAE rows, and every scalar metric of
    meta.json (a metric named like a config key, i.e. the scheduled `lr`, becomes `train/lr`).
    """
    found = [directory for given in roots for directory in checkpoints_under(given) if not torn(directory)]
    trials = [trial_dir(d) for d in found]
    rows, seen = [], set()
    for directory, trial, name in zip(found, trials, trial_names(trials)):
        meta = read_meta(directory)
        key = (storage.canonical(trial), meta.get("epoch"))
        if key in seen:  # a Tune trial may also hold fit()'s own copy of the same checkpoint
            continue
        seen.add(key)
        rows.append(checkpoint_row(name, directory, meta))
    return checkpoint_table(rows)


def checkpoints_under(given: str | Path) -> list[str]:
    """The checkpoint folders under one root the user named, with a clear error when there are none."""
    root = storage.location(given)
    if not storage.exists(root):
        raise FileNotFoundError(f"{root} not found; pass a run dir, a sweep dir or a folder holding them")
    dirs = checkpoint_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"no checkpoints under {root}: looked for folders holding both {STATE_FILE} and "
                                f"{META_FILE} (runs/<run>/checkpoints/epoch_NNN or <sweep>/<trial>/checkpoint_*)")
    return dirs


def torn(directory: str) -> bool:
    """Whether a checkpoint's manifest says it was cut short (a file missing or short); it is then left
    out, with a warning. A folder with no manifest at all (written before checkpoints were sealed)
    is kept: its state.pt is checked when its card loads it."""
    try:
        sealed.check(directory, hashes=False)
    except sealed.IncompleteFolderError as error:
        if not storage.exists(storage.join(directory, sealed.MANIFEST_FILE)):
            return False  # no manifest: written before checkpoints were sealed
        warnings.warn(f"left out {directory}: {error}", stacklevel=3)
        return True
    return False


def checkpoint_dirs(root: str | Path) -> list[str]:
    """Folders under (or equal to) `root` that hold both state.pt and meta.json, in tree order."""
    return storage.folders_with(root, (META_FILE, STATE_FILE))


def trial_dir(checkpoint: str | Path) -> str:
    """The run or trial a checkpoint belongs to: runs/<run>/checkpoints/epoch_N -> runs/<run>;
    <sweep>/<trial>/checkpoint_N -> <sweep>/<trial>."""
    parent = storage.parent(checkpoint)
    return storage.parent(parent) if storage.name(parent) == "checkpoints" else parent


def trial_names(dirs: Sequence[str | Path]) -> list[str]:
    """Each trial dir's name, with its parent's name in front where two different dirs share one."""
    names = [storage.name(d) for d in dirs]
    owners: dict[str, set[str]] = {}
    for d, name in zip(dirs, names):
        owners.setdefault(name, set()).add(storage.canonical(d))
    return [name if len(owners[name]) == 1 else f"{storage.name(storage.parent(d))}/{name}"
            for d, name in zip(dirs, names)]


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint folder, with a clear error when it is not the file save_checkpoint writes."""
    path = storage.join(directory, META_FILE)
    try:
        text = storage.read_text(path)
        if text is None:
            raise FileNotFoundError(f"{path} not found: {directory} is not a checkpoint folder")
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the checkpoint is damaged: delete {directory} "
                         "or copy it again from the sweep's storage") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "epoch" not in meta:
        raise ValueError(f"{path} lacks the 'epoch' and 'config' of a celeb checkpoint; is {directory} one?")
    return meta


def checkpoint_row(trial: str, directory: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard row (config values under "config" until `checkpoint_table` picks the columns)."""
    config = flatten(meta["config"])
    task = config.get("task", "cvae")
    other_sections = tuple({p for prefixes in TASK_SECTIONS.values() for p in prefixes} - set(TASK_SECTIONS[task]))
    own = {k: v for k, v in config.items() if not k.startswith(other_sections) and k not in ("task", "seed")}
    row = {"trial": trial, "checkpoint": str(directory), "epoch": meta["epoch"], "step": meta.get("step"),
           "task": task, "seed": config.get("seed"), "config": own}
    metrics = {(f"train/{k}" if k in row["config"] else k): v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and k not in ("epoch", "step")}
    if task in LATENT_TASKS and "beta" not in metrics:
        metrics["beta"] = config_beta(config_from_dict(meta["config"]))
    row["metrics"] = metrics
    return row


def checkpoint_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame: id columns, then config columns (interesting, then varying), then metrics."""
    chosen = table_config_keys(rows)
    metric_keys = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    metric_keys = sorted(metric_keys, key=lambda k: not k.startswith("val/"))  # stable: val/ first
    records = []
    for row in rows:
        record = {k: row[k] for k in ID_COLUMNS if k in row}
        record.update({k: cell(row["config"].get(k)) for k in chosen})
        record.update({k: row["metrics"].get(k, math.nan) for k in metric_keys})
        records.append(record)
    columns = [c for c in ID_COLUMNS if c != "rank"] + chosen + metric_keys
    table = pd.DataFrame.from_records(records, columns=columns)
    table = table.dropna(axis=1, how="all")  # e.g. cvae.beta_norm when no trial set it
    return table.sort_values(["trial", "epoch"], kind="stable").reset_index(drop=True)


def table_config_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The config keys that get a column: the interesting ones, then those that vary between rows."""
    config_keys = list(dict.fromkeys(k for row in rows for k in row["config"]))

    def distinct(key: str) -> int:  # among the rows of the tasks that have the key
        return len({json.dumps(row["config"][key], default=str) for row in rows if key in row["config"]})

    varying = [k for k in config_keys if distinct(k) > 1]
    return [k for k in INTERESTING_KEYS if k in config_keys] + [k for k in varying if k not in INTERESTING_KEYS]


def cell(value: Any) -> Any:
    """A config value as one table cell (lists joined by ", ")."""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return value
