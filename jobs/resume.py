"""Where a (re)started trial continues: the newest complete checkpoint it has, wherever it is kept.

Tune hands a restarted trial the checkpoint its last experiment snapshot registered. The snapshot
is written every few seconds at most, so after a killed driver it can be older than checkpoints
the trial had already stored in its folder; and a checkpoint can be cut short while it is copied
to storage. So the trial looks at every checkpoint it has, Tune's and those in its folder, and
continues from the newest complete one (celeb.sealed), saying which newer ones it passed over
and why. Every start is noted in the run folder's starts.jsonl (celeb.runfolder).

This module imports neither torch nor the trainer, so test trainables can use it as the real
trial does.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs
from ray import tune

from celeb import runfolder, sealed, storage

TUNE_CHECKPOINT_PREFIX = "checkpoint_"  # how Tune names the checkpoints it stores in a trial's folder


class CheckpointFallbackWarning(UserWarning):
    """A newer checkpoint was incomplete; the trial continues from an older complete one."""


@contextlib.contextmanager
def resume_checkpoint(trial_folder: str, run_dir: str | Path) -> Iterator[Path | None]:
    """The local folder of the checkpoint to continue from (None: start from the beginning), for the
    duration of the block; the start is noted in run_dir/starts.jsonl.

    `trial_folder` is the trial's folder in the sweep's storage (local path or URI), `run_dir` the
    folder the trial writes (the same folder on local storage).
    """
    candidates = [storage.join(trial_folder, name) for name in storage.list_names(trial_folder, dirs=True)
                  if name.startswith(TUNE_CHECKPOINT_PREFIX)]
    given = tune.get_checkpoint()
    if given is not None and isinstance(given.filesystem, pyarrow.fs.LocalFileSystem):
        candidates.append(given.path)
    with tempfile.TemporaryDirectory(prefix="celeb-resume-") as tmp:
        fetch = None
        if storage.is_uri(trial_folder):
            def fetch(path: str) -> str:
                local = Path(tmp) / path.rsplit("/", 1)[-1]
                storage.copy_dir(path, local)
                return str(local)
        choice = sealed.newest_complete(candidates, fetch=fetch)
        note = choice.describe()
        if note:
            print(f"celeb: {note}", file=sys.stderr, flush=True)
            warnings.warn(note, CheckpointFallbackWarning, stacklevel=3)
        runfolder.record_start(run_dir, {
            "time": time.time(), "from_epoch": int(choice.meta.get("epoch", 0)) if choice.path else 0,
            "checkpoint": choice.source, "tune_checkpoint": given.path if given is not None else None,
            "fallback": note})
        yield Path(choice.path) if choice.path else None
