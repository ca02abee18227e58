"""Where a (re)started trial continues: the newest complete checkpoint it has, wherever it is kept.

Tune hands a restarted trial the checkpoint its last experiment snapshot registered. The snapshot
is written every few seconds at most, so after a killed driver it can be older than checkpoints
the trial had already stored in its folder; and a checkpoint can be cut short while it is copied
to storage. So the trial looks at every checkpoint it has, Tune's and those in its folder, and
continues from the newest complete one (celeb.training.sealed), saying which newer ones it passed over
and why. Every start is noted in the run folder's starts.jsonl (celeb.training.runfolder).

Tune deletes a trial's older checkpoints as newer ones arrive (`num_to_keep`), and its snapshot can
still name a deleted one; Tune then refuses to restore the trial at all ("does not exist on
storage anymore"). `fill_pruned_checkpoints` puts an empty placeholder where each deleted one was
before a resume, so Tune hands the trial a placeholder and the trial goes on from its newest
complete checkpoint as always; `remove_placeholders` tidies up after the sweep.

A driver killed within Tune's snapshot period (10 s or more) of a trial's start leaves a trial Tune
does not know any more: an *orphan* folder. The resumed searcher suggests the same config again
under a new trial id; the new trial *adopts* the orphan (`write_orphans` lists them for it), takes
its rows and panels up to its newest complete checkpoint, and goes on from there, so neither its
work nor its record is lost or doubled.

This module imports neither torch nor the trainer, so test trainables can use it as the real
trial does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune

from celeb.training import runfolder, sealed

from celeb import storage
from celeb.training.runfolder import TUNE_CHECKPOINT_PREFIX
from celeb.sweep.spec import trial_dirname

ORPHANS_FILE = "orphans.json"  # in the experiment folder: config -> trial folders no Tune trial owns
ADOPTED_FILE = "adopted_by.json"  # in an orphan's folder, once a new trial took it over
PRUNED_FILE = "pruned.json"  # in a placeholder for a checkpoint Tune deleted (see `fill_pruned_checkpoints`)


class CheckpointFallbackWarning(UserWarning):
    """A newer checkpoint was incomplete; the trial continues from an older complete one."""


@contextlib.contextmanager
def resume_checkpoint(trial_folder: str, run_dir: str | Path,
                      config: Mapping[str, Any] | None = None) -> Iterator[Path | None]:
    """The local folder of the checkpoint to continue from (None: start from the beginning), for the
    duration of the block; the start is noted in run_dir/starts.jsonl.

    `trial_folder` is the trial's folder in the sweep's storage (local path or URI), `run_dir` the
    folder the trial writes (the same folder on local storage). A trial with no checkpoint of its
    own and a `config` that an orphan of the sweep holds adopts that orphan.
    """
    candidates = tune_checkpoints(trial_folder)
    given = tune.get_checkpoint()
    if (given is not None and isinstance(given.filesystem, pyarrow.fs.LocalFileSystem)
            and not storage.exists(storage.join(given.path, PRUNED_FILE))):
        candidates.append(given.path)
    adopted = None
    if not candidates and given is None and config is not None:
        adopted = adopt_orphan(trial_folder, config)
        candidates = tune_checkpoints(adopted) if adopted else []
    with tempfile.TemporaryDirectory(prefix="celeb-resume-") as tmp:
        fetch = download_into(Path(tmp)) if storage.is_uri(trial_folder) else None
        choice = sealed.newest_complete(candidates, fetch=fetch)
        note = choice.describe()
        if note:
            print(f"celeb: {note}", file=sys.stderr, flush=True)
            warnings.warn(note, CheckpointFallbackWarning, stacklevel=3)
        from_epoch = int(choice.meta.get("epoch", 0)) if choice.path else 0
        if adopted:
            take_over(adopted, run_dir, from_epoch)
        runfolder.record_start(run_dir, {
            "time": time.time(), "from_epoch": from_epoch, "checkpoint": choice.source,
            "tune_checkpoint": given.path if given is not None else None, "fallback": note, "adopted": adopted,
            "config": dict(config) if config is not None else None})
        yield Path(choice.path) if choice.path else None


def download_into(folder: Path):
    """fetch(path) -> a local copy of the remote checkpoint folder `path`, under `folder`."""
    def fetch(path: str) -> str:
        local = folder / path.rsplit("/", 1)[-1]
        storage.copy_dir(path, local)
        return str(local)

    return fetch


def tune_checkpoints(trial_folder: str) -> list[str]:
    """The checkpoint folders Tune stored for the trial (placeholders left out)."""
    return [path for path in runfolder.tune_checkpoint_dirs(trial_folder) if not storage.exists(storage.join(path, PRUNED_FILE))]


def fill_pruned_checkpoints(experiment_path: str) -> int:
    """Put a placeholder wherever a trial's checkpoint_NNNNNN below its newest one is missing; return how many."""
    filled = 0
    for trial in storage.list_names(experiment_path, dirs=True):
        folder = storage.join(experiment_path, trial)
        indices = {int(name.rsplit("_", 1)[-1]) for name in map(_name, runfolder.tune_checkpoint_dirs(folder))
                   if name.rsplit("_", 1)[-1].isdigit()}
        for index in set(range(max(indices, default=0))) - indices:
            storage.write_text(storage.join(folder, f"{TUNE_CHECKPOINT_PREFIX}{index:06d}", PRUNED_FILE),
                               json.dumps({"why": "deleted by Tune (num_to_keep); a placeholder for its restore"}))
            filled += 1
    return filled


def remove_placeholders(experiment_path: str) -> None:
    for trial in storage.list_names(experiment_path, dirs=True):
        for path in runfolder.tune_checkpoint_dirs(storage.join(experiment_path, trial)):
            if storage.exists(storage.join(path, PRUNED_FILE)):
                storage.delete_dir(path)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def config_key(config: Mapping[str, Any]) -> str:
    """A trial's identity for adoption: its whole config (seed included), as canonical JSON."""
    return json.dumps(dict(config), sort_keys=True, default=str)


def orphan_folders(experiment_path: str, known_trial_ids: Iterable[str]) -> list[str]:
    """Trial folders of a local sweep that none of `known_trial_ids` owns and no trial adopted."""
    if storage.is_uri(experiment_path):
        return []
    known = {trial_dirname(trial_id) for trial_id in known_trial_ids}
    return [str(folder) for folder in sorted(Path(experiment_path).glob(trial_dirname("*")))
            if folder.name not in known and not (folder / ADOPTED_FILE).exists()]


def write_orphans(experiment_path: str, known_trial_ids: Iterable[str]) -> dict[str, list[str]]:
    """List the sweep's orphans (trial folders of a local sweep that none of `known_trial_ids` owns,
    not yet adopted) by config in experiment_path/orphans.json, for new trials to adopt; return them."""
    orphans: dict[str, list[str]] = {}
    for folder in orphan_folders(experiment_path, known_trial_ids):
        starts = runfolder.read_starts(folder)  # the trial's first start noted its config
        if starts and starts[0].get("config"):
            orphans.setdefault(config_key(starts[0]["config"]), []).append(folder)
    storage.write_text(storage.join(experiment_path, ORPHANS_FILE), json.dumps(orphans, indent=1))
    return orphans


def adopt_orphan(trial_folder: str, config: Mapping[str, Any]) -> str | None:
    """Claim the first orphan of this sweep with `config` (atomically: one adopter per orphan)."""
    if storage.is_uri(trial_folder):
        return None
    listed = storage.read_text(storage.join(str(Path(trial_folder).parent), ORPHANS_FILE))
    for orphan in (json.loads(listed) if listed else {}).get(config_key(config), []):
        try:
            fd = os.open(Path(orphan) / ADOPTED_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except (FileExistsError, FileNotFoundError):
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"by": str(trial_folder), "time": time.time()}, f)
        return orphan
    return None


def take_over(orphan: str, run_dir: str | Path, up_to_epoch: int) -> None:
    """Copy an adopted orphan's epochs up to `up_to_epoch` (rows, panels, tables) into run_dir."""
    rows = [row for row in runfolder.epoch_rows(runfolder.read_rows(orphan)) if row.get("epoch", 0) <= up_to_epoch]
    steps = {int(row[runfolder.STEP]) for row in rows}
    for row in rows:
        runfolder.append_row(run_dir, row)
    for kind in (runfolder.IMAGES_DIR, runfolder.TABLES_DIR):
        for step, files in runfolder.logged_files(orphan, kind).items():
            if step in steps:
                for path in files.values():
                    target = Path(run_dir) / kind / Path(path).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
