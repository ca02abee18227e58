"""One run folder's writer: its new epochs into an open offline segment, then the finished
segment moved into folder/wandb/ and listed; and the cleanup of what a killed writer left."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celeb.training import runfolder

from celeb import storage
from celeb.records.ledger import SEGMENT_PREFIX, STAGING_DIR, WANDB_DIR, Ledger, Segment
from celeb.records.settings import RunInfo, loggable_config


def _quiet_settings() -> Any:
    import wandb

    # console="off": the driver's terminal is not the trial's output; stats off: the driver's CPU is not the trial's
    return wandb.Settings(silent=True, console="off", disable_git=True, save_code=False, disable_job_creation=True,
                          x_disable_stats=True)


class RecordWriter:
    """Brings one run folder's W&B record up to date with the folder. Not thread-safe: one user.

    `sync()` writes the folder's new epochs into the open segment (opening one when needed);
    `close(state, final)` finishes the segment (summary: the best epoch by info.metric; the best
    checkpoint as an artifact when info.log_checkpoint), moves it into folder/wandb/ and lists it.
    """

    def __init__(self, folder: str | os.PathLike[str], info: RunInfo) -> None:
        self.folder = str(folder)
        self.info = info
        self.ledger = Ledger.read(self.folder) or Ledger(info=info)
        self.ledger.info = info
        self.run: Any = None
        self.staging: Path | None = None
        self.opened_at = 0.0
        self._first = self._last = None
        self._epochs = 0  # in the open segment
        self.logged = 0  # epochs this writer logged, all segments
        self._logged_step: int | None = self.ledger.last_step

    @property
    def open(self) -> bool:
        return self.run is not None

    def sync(self) -> int:
        """Log every epoch of the folder past the last one recorded; return how many were logged."""
        rows = [row for row in runfolder.epoch_rows(runfolder.read_rows(self.folder))
                if self._logged_step is None or int(row[runfolder.STEP]) > self._logged_step]
        if not rows:
            return 0
        if not self.open:
            self._open()
        images, tables = runfolder.logged_files(self.folder, runfolder.IMAGES_DIR), \
            runfolder.logged_files(self.folder, runfolder.TABLES_DIR)
        for row in rows:
            step = int(row[runfolder.STEP])
            self.run.log({**runfolder.scalar_values(row), **self._media(images.get(step, {}), tables.get(step, {}))},
                         step=step)
            self._first = step if self._first is None else self._first
            self._last, self._logged_step = step, step
            self._epochs += 1
        self.logged += len(rows)
        return len(rows)

    def close(self, state: str = "finished", final: bool = True) -> Segment | None:
        """Sync, finish the open segment as `state` ("finished"/"failed") and list it; `final`: the run is over.

        Returns the new segment (None when nothing new was written since the last one).
        """
        self.sync()
        if not self.open:
            if final and self.ledger.segments and self.ledger.final != state:
                # the run ended without new epochs: its last segment already holds everything
                self.ledger.final = state
                self.ledger.write(self.folder)
            return None
        summary = self._summary()
        self.run.summary.update(summary)
        if self.info.log_checkpoint and final and summary.get("best_epoch") is not None:
            self._log_best_checkpoint(summary)
        sync_dir = Path(self.run.settings.sync_dir)
        run, self.run = self.run, None
        run.finish(exit_code=1 if state == "failed" else 0)
        name = self._free_name(sync_dir.name)
        target = storage.join(self.folder, WANDB_DIR, name)
        if storage.is_uri(self.folder):
            storage.copy_dir(sync_dir, target)
        else:
            os.replace(sync_dir, target)
        segment = Segment(dir=name, first_step=int(self._first), last_step=int(self._last),
                          epochs=self._epochs, state=state)
        self.ledger.segments.append(segment)
        self.ledger.final = state if final else None
        self.ledger.write(self.folder)
        self._discard_staging()
        return segment

    def _free_name(self, name: str) -> str:
        """W&B names a segment by the second it started; two of one run in one second get a suffix."""
        taken = set(storage.list_names(storage.join(self.folder, WANDB_DIR), dirs=True))
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def abandon(self) -> None:
        """Drop the open segment unlisted (after a W&B error); its epochs are written again next time."""
        run, self.run = self.run, None
        if run is not None:
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)
        self.logged -= self._epochs  # written again, and counted then
        self._epochs = 0
        self._logged_step = self.ledger.last_step
        self._discard_staging()

    def _open(self) -> None:
        import wandb

        self.staging = new_staging_dir(self.folder)
        info = self.info
        self.run = wandb.init(project=info.project, entity=info.entity, group=info.group, name=info.name,
                              id=info.run_id, config=loggable_config(info.config), dir=str(self.staging),
                              mode="offline", tags=list(info.tags), job_type=info.job_type, resume="allow",
                              reinit="create_new", settings=_quiet_settings())
        self.run.define_metric(runfolder.STEP)
        self.run.define_metric("*", step_metric=runfolder.STEP)
        self.opened_at = time.monotonic()
        self._first = self._last = None
        self._epochs = 0
        self.ledger.final = None

    def _media(self, images: Mapping[str, str], tables: Mapping[str, str]) -> dict[str, Any]:
        import io

        import pandas as pd
        import wandb
        from PIL import Image

        media: dict[str, Any] = {}
        for name, path in images.items():
            media[name] = wandb.Image(path if not storage.is_uri(path) else Image.open(io.BytesIO(storage.read_bytes(path))))
        for name, path in tables.items():
            media[name] = wandb.Table(dataframe=pd.read_csv(io.StringIO(storage.read_text(path) or "")))
        return media

    def _summary(self) -> dict[str, Any]:
        """The best epoch by info.metric and its scalars as best/<name> (the last values stay as they are)."""
        if not self.info.metric:
            return {}
        best = runfolder.best_row(runfolder.epoch_rows(runfolder.read_rows(self.folder)), self.info.metric,
                                  self.info.mode)
        if best is None:
            return {}
        return {"best_epoch": best.get("epoch"), **{f"best/{k}": v for k, v in runfolder.scalar_values(best).items()}}

    def _log_best_checkpoint(self, summary: dict[str, Any]) -> None:
        import wandb

        path = runfolder.checkpoint_of_epoch(self.folder, summary["best_epoch"])
        if path is None:
            return
        artifact = wandb.Artifact(f"model-{self.info.run_id}".replace("/", "-"), type="model", metadata=summary)
        if storage.is_uri(path):
            local = self.staging / "best-checkpoint"
            storage.copy_dir(path, local)
            path = str(local)
        artifact.add_dir(path)
        self.run.log_artifact(artifact, aliases=["best"])

    def _discard_staging(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.staging.parent.rmdir()  # the staging folder itself, once no writer uses it
            self.staging = None


def new_staging_dir(folder: str) -> Path:
    """A fresh staging folder for one segment: beside the record for a local folder (so the finished
    segment is renamed into place), in the local temp dir for a folder on remote storage."""
    token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    if storage.is_uri(folder):
        return Path(tempfile.mkdtemp(prefix=f"celeb-wandb-{token}-"))
    path = Path(folder) / WANDB_DIR / STAGING_DIR / token
    path.mkdir(parents=True)
    return path


def discard_unlisted(folder: str) -> list[str]:
    """Delete what a killed writer left in `folder`: its staging and any segment the ledger does not
    list (their epochs are in the folder and are written again). Staging of a live writer on this
    machine is kept. Returns what was deleted."""
    removed = []
    staging = storage.join(folder, WANDB_DIR, STAGING_DIR)
    for token in storage.list_names(staging, dirs=True):
        if not _writer_alive(token):
            storage.delete_dir(storage.join(staging, token))
            removed.append(storage.join(staging, token))
    ledger = Ledger.read(folder)
    listed = {s.dir for s in ledger.segments} if ledger else set()
    for name in storage.list_names(storage.join(folder, WANDB_DIR), dirs=True):
        if name.startswith(SEGMENT_PREFIX) and name not in listed:
            storage.delete_dir(storage.join(folder, WANDB_DIR, name))
            removed.append(storage.join(folder, WANDB_DIR, name))
    return removed


def _writer_alive(token: str) -> bool:
    host, pid_text, _ = (token.rsplit("-", 2) + ["", ""])[:3]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
