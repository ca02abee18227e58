"""The run folder: what one run (a `celeb train` run, or one trial of a sweep) leaves on disk, and its readers.

    metrics.jsonl                       one JSON object per epoch, with the trainer's "step" (appended)
    metrics.csv                         the same rows' scalar columns (celeb.training.tracking.LocalTracker)
    images/<name>_step<NNNNNNN>.png     every panel logged, by step (<name>.png: the latest)
    tables/<name>_step<NNNNNNN>.csv     every table logged, by step (<name>.csv: the latest)
    starts.jsonl                        one line per start of a trial: the checkpoint it resumed from
    checkpoint_NNNNNN/                  a sweep trial's checkpoints, as Tune stores them (sealed)
    checkpoints/epoch_NNN/              a local run's checkpoints (sealed)
    wandb/                              the run's W&B record, written from the files above (celeb.records)

The folder is the run's source of truth. The trial writes it before each report, and it travels
with the trial's checkpoints; its W&B record and the sweep's ranking are derived from it, so
whatever ends the trial's process, nothing it finished is lost. A run that repeats an epoch (it
resumed from an older checkpoint) appends that epoch's row again: `epoch_rows` keeps the first row
of each step. Names with "/" are stored with "_" (e.g. "val/x" -> "val_x").

This module imports neither torch nor wandb; it reads through celeb.storage, so a folder on an
object store reads the same as a local one.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celeb import storage
from celeb.training import sealed

METRICS_FILE = "metrics.jsonl"
STARTS_FILE = "starts.jsonl"
IMAGES_DIR = "images"
TABLES_DIR = "tables"
TUNE_CHECKPOINT_PREFIX = "checkpoint_"  # how Tune names the checkpoints it stores in a trial's folder
STEP = "step"  # every row's trainer step: the x-axis of every chart, and W&B's step
_LOGGED = re.compile(r"^(?P<name>.+)_step(?P<step>\d{7,})\.(?P<ext>png|csv)$")


def safe_name(name: str) -> str:
    return name.replace("/", "_")


def image_file(folder: str | os.PathLike[str], name: str, step: int | None = None) -> Path:
    """Where the image `name` of `step` is kept (step None: the latest copy at the top of the folder)."""
    if step is None:
        return Path(folder) / f"{safe_name(name)}.png"
    return Path(folder) / IMAGES_DIR / f"{safe_name(name)}_step{int(step):07d}.png"


def table_file(folder: str | os.PathLike[str], name: str, step: int | None = None) -> Path:
    """Where the table `name` of `step` is kept (step None: the latest copy at the top of the folder)."""
    if step is None:
        return Path(folder) / f"{safe_name(name)}.csv"
    return Path(folder) / TABLES_DIR / f"{safe_name(name)}_step{int(step):07d}.csv"


def append_line(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one JSON line to a local file, durably (flushed and fsynced).

    A line cut short by a killed writer is dropped first, so the next line never joins onto it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), allow_nan=True) + "\n"
    with open(path, "a+b") as f:
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                text = f.read()
                f.truncate(text.rfind(b"\n") + 1)
        f.seek(0, os.SEEK_END)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file ([] when it does not exist).

    A last line cut short (its writer was killed mid-write) is left out; a bad line elsewhere is an
    error naming the file and the line.
    """
    text = storage.read_text(path)
    if text is None:
        return []
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: the write was cut short
                break
            raise ValueError(f"{path}, line {number}: not a JSON object ({error.msg}); the file is damaged. "
                             "Remove that line to read the rest") from None
    return records


def append_row(folder: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append one epoch's row (it must hold its "step") to folder/metrics.jsonl."""
    if STEP not in row:
        raise ValueError(f"a run-folder row needs its {STEP!r}; got keys {sorted(row)}")
    append_line(Path(folder) / METRICS_FILE, row)


def read_rows(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every row of folder/metrics.jsonl as written, repeats included, in order."""
    return read_lines(storage.join(folder, METRICS_FILE))


def epoch_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The first row of each step, by step: one per finished epoch, however often an epoch was run."""
    first: dict[int, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(int(row[STEP]), dict(row))
    return [first[step] for step in sorted(first)]


def repeated_steps(rows: Iterable[Mapping[str, Any]]) -> int:
    """How many rows repeat an earlier row's step (epochs run more than once)."""
    steps = [int(row[STEP]) for row in rows]
    return len(steps) - len(set(steps))


def logged_files(folder: str | os.PathLike[str], kind: str = IMAGES_DIR) -> dict[int, dict[str, str]]:
    """step -> {name: path} of every image (kind "images") or table (kind "tables") kept by step."""
    found: dict[int, dict[str, str]] = {}
    directory = storage.join(folder, kind)
    for file_name in storage.list_names(directory, dirs=False):
        match = _LOGGED.match(file_name)
        if match:
            found.setdefault(int(match["step"]), {})[match["name"]] = storage.join(directory, file_name)
    return found


def best_row(rows: Sequence[Mapping[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The epoch row with the best finite `metric` ("min" or "max"); the earliest wins a tie.

    The one best-epoch rule: `fit` (its best checkpoint and early stopping), the W&B summary and
    the sweep's ranking all use it.
    """
    scored = [row for row in rows if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return dict(pick(scored, key=lambda row: row[metric]))


def tune_checkpoint_dirs(folder: str | os.PathLike[str]) -> list[str]:
    """The checkpoint_NNNNNN folders Tune keeps in a sweep trial's folder, by name."""
    return [storage.join(folder, name) for name in storage.list_names(folder, dirs=True)
            if name.startswith(TUNE_CHECKPOINT_PREFIX)]


def checkpoint_of_epoch(folder: str | os.PathLike[str], epoch: int) -> str | None:
    """The complete checkpoint of `epoch` kept in a run folder (a sweep trial's checkpoint_*, Tune's,
    or a local run's checkpoints/epoch_*), or None."""
    candidates = tune_checkpoint_dirs(folder)
    candidates += [storage.join(folder, "checkpoints", name)
                   for name in storage.list_names(storage.join(folder, "checkpoints"), dirs=True)]
    for path in candidates:
        try:
            if sealed.check(path, hashes=False).get("epoch") == epoch:
                return path
        except sealed.IncompleteFolderError:
            continue
    return None


def record_start(folder: str | os.PathLike[str], start: Mapping[str, Any]) -> None:
    """Note one start of a run in folder/starts.jsonl (e.g. from_epoch, checkpoint, fallback)."""
    append_line(Path(folder) / STARTS_FILE, start)


def read_starts(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return read_lines(storage.join(folder, STARTS_FILE))


def scalar_values(metrics: Mapping[str, Any]) -> dict[str, int | float | bool]:
    """The numbers and bools among `metrics` (0-d numpy or torch values become Python numbers);
    lists (e.g. val/kl_per_dim), strings and images are left out."""
    scalars: dict[str, int | float | bool] = {}
    for name, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()
        if isinstance(value, (bool, int, float)):
            scalars[name] = value
    return scalars
