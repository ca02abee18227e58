"""W&B runs written from run folders: the one place this project talks to Weights & Biases.

A run's folder (celeb.runfolder) is its source of truth: the trial writes each epoch's row, panels
and tables there before it reports the epoch. The W&B record is derived from that folder, here,
in a process that outlives the trial (the sweep's driver, or `celeb train` itself), so whatever
ends a trial (its last epoch, ASHA, a NaN, a lost node) every epoch it finished reaches its run.

Records are written in *segments*. A segment is one offline W&B run (id = the trial's id) that
takes the folder's epochs from the last one recorded onwards, one `wandb.log` per epoch at W&B
step = the trainer's step (scalars, panels and tables of that epoch together). It is written in a
staging folder and, once finished, moved into folder/wandb/ and listed in folder/wandb/ledger.json.
So a segment is either complete and listed, or it is not there:

- a driver killed mid-segment leaves only staging, which the next writer deletes; the epochs it
  held are written again, from the folder, in the next segment;
- a resumed or retried trial continues the same run: its new segment starts after the last step
  listed, so `wandb sync` of all of a trial's segments gives each epoch exactly once;
- online and offline behave the same: records are always written offline first; in online mode
  each finished segment is then uploaded with `wandb sync` (from a background thread, after a
  quick check that W&B is reachable). When W&B is unreachable nothing waits on it: the segments
  stay on disk, listed as not uploaded, and `celeb wandb SWEEP_DIR --upload` sends them later.

Every wandb call is guarded: a W&B problem is one warning and a line in the report, never an
error of the trial or the sweep. The API key is only ever read by wandb itself from WANDB_API_KEY;
config keys that look like credentials are dropped before they are logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from celeb import runfolder, sealed, storage

WANDB_MODES = ("auto", "online", "offline", "disabled")
SECRET_WORDS = ("api_key", "apikey", "token", "password", "secret")
WANDB_DIR = "wandb"
LEDGER_FILE = "ledger.json"
STAGING_DIR = ".staging"
SEGMENT_PREFIX = "offline-run-"
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0


class WandbWarning(RuntimeWarning):
    """W&B failed; the run goes on without it (its folder keeps everything)."""


# ----------------------------------------------------------------------------- settings


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] = os.environ) -> str:
    """"online", "offline" or "disabled" for a `mode` of WANDB_MODES.

    "online", "offline" and "disabled" are returned as given. "auto" is "disabled" when
    WANDB_MODE=disabled, "offline" when WANDB_MODE is offline (or the older "dryrun"), "online" when
    WANDB_API_KEY holds a key, and "offline" otherwise (no key: record locally, upload later).
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode {mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    env_mode = environ.get("WANDB_MODE", "").strip().lower()
    if env_mode == "disabled":
        return "disabled"
    if env_mode in ("offline", "dryrun"):
        return "offline"
    return "online" if environ.get("WANDB_API_KEY", "").strip() else "offline"


def loggable_config(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """`config` as plain values, without any key that looks like a credential (its name contains
    one of SECRET_WORDS, in any case) and without any value that contains the WANDB_API_KEY.

    Nested dicts are filtered the same way. Dropping a harmless key such as "num_tokens" is the
    price of never logging a secret.
    """
    from celeb.checkpoint import plain

    key = environ.get("WANDB_API_KEY", "").strip()

    def keep(name: str, value: Any) -> bool:
        lowered = name.lower().replace("-", "_")
        if any(word in lowered for word in SECRET_WORDS):
            return False
        return not (key and isinstance(value, str) and key in value)

    def clean(mapping: Mapping[str, Any]) -> dict[str, Any]:
        return {str(k): clean(v) if isinstance(v, Mapping) else plain(v)
                for k, v in mapping.items() if keep(str(k), v)}

    return clean(config)


@dataclass(frozen=True)
class RunInfo:
    """Who a run is in W&B: its id (a sweep trial's id), name, group (the sweep), project and config,
    and the metric whose best epoch becomes the run's summary."""

    run_id: str
    name: str | None = None
    group: str | None = None
    project: str = "celeb"
    entity: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    job_type: str | None = None
    metric: str | None = None
    mode: str = "min"
    log_checkpoint: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunInfo:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "tags": tuple(known.get("tags") or ())})


# ----------------------------------------------------------------------------- the ledger


@dataclass
class Segment:
    """One finished offline run in folder/wandb/: the steps it holds and how it ended."""

    dir: str
    first_step: int
    last_step: int
    epochs: int
    state: str  # "finished" or "failed"
    uploaded: bool = False


@dataclass
class Ledger:
    """folder/wandb/ledger.json: the run's identity and its finished segments, oldest first.

    `final` is how the run ended ("finished" or "failed"), or None while it may go on.
    """

    info: RunInfo
    segments: list[Segment] = field(default_factory=list)
    final: str | None = None

    @property
    def last_step(self) -> int | None:
        return max((s.last_step for s in self.segments), default=None)

    def to_json(self) -> str:
        info = {**asdict(self.info), "config": loggable_config(self.info.config)}  # never a credential on disk
        return json.dumps({"info": info, "segments": [asdict(s) for s in self.segments],
                           "final": self.final}, indent=1)

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Ledger | None:
        text = storage.read_text(storage.join(folder, WANDB_DIR, LEDGER_FILE))
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return cls(info=RunInfo.from_dict(raw["info"]), segments=[Segment(**s) for s in raw["segments"]],
                       final=raw.get("final"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{storage.join(folder, WANDB_DIR, LEDGER_FILE)} is damaged ({error}); delete it and run "
                             f"`celeb wandb {folder} --rebuild` to write the run's W&B record again") from None

    def write(self, folder: str | os.PathLike[str]) -> None:
        storage.write_text(storage.join(folder, WANDB_DIR, LEDGER_FILE), self.to_json() + "\n")


# ----------------------------------------------------------------------------- one folder's writer


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
        self._epochs = 0
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
        self.run.summary.update(self._summary())
        if self.info.log_checkpoint and final:
            self._log_best_checkpoint()
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

    def _log_best_checkpoint(self) -> None:
        import wandb

        summary = self._summary()
        path = runfolder.checkpoint_of_epoch(self.folder, summary["best_epoch"]) if summary.get("best_epoch") else None
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


# ----------------------------------------------------------------------------- upload


def endpoint(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("WANDB_BASE_URL", "").strip() or DEFAULT_BASE_URL


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to `url`'s host opens within `timeout`; else why not."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return None
    except OSError as error:
        return f"{url} is unreachable ({error.strerror or error})"


def wandb_command() -> list[str]:
    beside = Path(sys.executable).parent / "wandb"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "wandb"]


def upload_segment(folder: str, segment: Segment, timeout_s: float) -> str | None:
    """`wandb sync` one finished segment; None on success, else why it failed."""
    with contextlib.ExitStack() as stack:
        path = storage.join(folder, WANDB_DIR, segment.dir)
        if storage.is_uri(folder):
            local = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celeb-upload-"))) / segment.dir
            storage.copy_dir(path, local)
            path = str(local)
        try:
            done = subprocess.run([*wandb_command(), "sync", path], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"`wandb sync` took more than {timeout_s:.0f} s"
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return f"`wandb sync` failed: {lines[-1] if lines else done.returncode}"
        return None


# ----------------------------------------------------------------------------- many folders, in the background


@dataclass
class RecordReport:
    """What the keeper did: runs written, their segments, and what did not reach W&B's server."""

    mode: str
    runs: int = 0
    epochs: int = 0
    segments: int = 0
    uploaded: int = 0
    not_uploaded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)

    def describe(self, where: str) -> str:
        if self.mode == "disabled":
            return "W&B: disabled"
        lines = [f"W&B ({self.mode}): {self.epochs} epoch records of {self.runs} runs written in {self.segments} "
                 f"segments, kept under {where}/*/{WANDB_DIR}/"]
        if self.discarded:
            lines.append(f"  {len(self.discarded)} unfinished segments of an earlier, interrupted writer were "
                         "replaced (their epochs were written again from the run folders)")
        if self.mode == "online":
            lines.append(f"  uploaded {self.uploaded} segments")
        if self.not_uploaded:
            lines.append(f"  NOT uploaded: {len(self.not_uploaded)} segments ({self.problems[0] if self.problems else ''}); "
                         f"they are kept on disk: upload them later with `celeb wandb {where} --upload`")
        for problem in self.problems[:5]:
            lines.append(f"  problem: {problem}")
        return "\n".join(lines)


class RecordKeeper:
    """Keeps the W&B records of many run folders up to date from one background thread.

    Callers (a Tune callback, `celeb train`) only enqueue: `update(folder, info)` after an epoch,
    `close(folder, info, state, final)` when a run ends or pauses, and `drain()` to wait for it all.
    Online, finished segments are uploaded from a second thread; `upload_every_s` also closes a
    segment that has been open that long, so online runs appear while they train.
    """

    def __init__(self, mode: str = "auto", upload_every_s: float | None = 300.0,
                 upload_timeout_s: float = 300.0) -> None:
        self.mode = resolve_wandb_mode(mode)
        self.upload_every_s = upload_every_s
        self.upload_timeout_s = upload_timeout_s
        self.report = RecordReport(mode=self.mode)
        self._writers: dict[str, RecordWriter] = {}
        self._known: set[str] = set()  # folders whose pending uploads count in the report
        self._cleaned: set[str] = set()
        self._failed: set[str] = set()
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._uploads: queue.Queue[tuple[str, Segment] | None] = queue.Queue()
        self._ledger_lock = threading.Lock()
        self._queued: set[tuple[str, str]] = set()  # (folder, segment) given to the upload thread
        self._down: str | None = None  # why W&B's server is unreachable, once found
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self) -> RecordKeeper:
        if self.enabled and not self._threads:
            self._threads.append(threading.Thread(target=self._work, name="celeb-wandb-records", daemon=True))
            if self.mode == "online":
                self._threads.append(threading.Thread(target=self._upload_work, name="celeb-wandb-upload",
                                                      daemon=True))
            for thread in self._threads:
                thread.start()
        return self

    def update(self, folder: str, info: RunInfo) -> None:
        if self.enabled:
            self._tasks.put(lambda: self._sync(str(folder), info))

    def close(self, folder: str, info: RunInfo, state: str = "finished", final: bool = True) -> None:
        if self.enabled:
            self._tasks.put(lambda: self._close(str(folder), info, state, final))

    def upload_pending(self, folders: Iterable[str]) -> None:
        """Queue every listed segment of `folders` not yet uploaded (online mode)."""
        for folder in folders:
            self._tasks.put(lambda folder=str(folder): self._queue_pending(folder))
            self._known.add(str(folder))

    def drain(self, upload_timeout_s: float | None = None) -> RecordReport:
        """Wait until every queued record is written, then (online) for uploads, at most
        `upload_timeout_s` more; stop the threads and return the report."""
        if not self._threads:
            return self.report
        for folder in list(self._writers):
            self._tasks.put(lambda folder=folder: self._queue_pending(folder))
        self._tasks.put(None)
        self._threads[0].join()
        if len(self._threads) > 1:
            self._uploads.put(None)
            self._threads[1].join(timeout=upload_timeout_s if upload_timeout_s is not None else self.upload_timeout_s)
        self._threads = []
        with self._ledger_lock:
            self.report.not_uploaded = [f"{folder}/{WANDB_DIR}/{s.dir}" for folder, s in self._pending_segments()]
        return self.report

    # -- the records thread

    def wait(self) -> None:
        """Block until every record queued so far is written (uploads may still be under way)."""
        if self._threads:
            self._tasks.join()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                if task is None:
                    return
                task()
            finally:
                self._tasks.task_done()

    def _writer(self, folder: str, info: RunInfo) -> RecordWriter:
        if folder not in self._cleaned:
            self._cleaned.add(folder)
            self.report.discarded += discard_unlisted(folder)
        writer = self._writers.get(folder)
        if writer is None:
            writer = self._writers[folder] = RecordWriter(folder, info)
            self.report.runs += 1
        writer.info = info
        return writer

    def _sync(self, folder: str, info: RunInfo) -> None:
        with self._guard(folder, "writing the W&B record of"):
            writer = self._writer(folder, info)
            self.report.epochs += writer.sync()
            if (self.mode == "online" and self.upload_every_s is not None and writer.open
                    and time.monotonic() - writer.opened_at > self.upload_every_s):
                self._finish_segment(writer, "finished", final=False)

    def _close(self, folder: str, info: RunInfo, state: str, final: bool) -> None:
        with self._guard(folder, "finishing the W&B record of"):
            writer = self._writer(folder, info)
            self.report.epochs += writer.sync()
            self._finish_segment(writer, state, final)

    def _finish_segment(self, writer: RecordWriter, state: str, final: bool) -> None:
        with self._ledger_lock:
            segment = writer.close(state, final)
        if segment is not None:
            self.report.segments += 1
            self._queue_upload(writer.folder, segment)

    def _queue_pending(self, folder: str) -> None:
        ledger = Ledger.read(folder)
        for segment in ledger.segments if ledger else []:
            if not segment.uploaded:
                self._queue_upload(folder, segment)

    def _queue_upload(self, folder: str, segment: Segment) -> None:
        if self.mode == "online" and (folder, segment.dir) not in self._queued:
            self._queued.add((folder, segment.dir))
            self._uploads.put((folder, segment))

    @contextlib.contextmanager
    def _guard(self, folder: str, what: str):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - W&B must never stop a sweep
            writer = self._writers.get(folder)
            if writer is not None:
                writer.abandon()
            message = f"{what} {folder} failed ({type(error).__name__}: {_redact(str(error))})"
            self.report.problems.append(message)
            if folder not in self._failed:
                self._failed.add(folder)
                warnings.warn(f"{message}; the run folder keeps every epoch: write the record later with "
                              f"`celeb wandb {folder}`", WandbWarning, stacklevel=2)

    # -- the upload thread

    def _upload_work(self) -> None:
        while (item := self._uploads.get()) is not None:
            folder, segment = item
            if self._down is None:
                self._down = reachable(endpoint())
            if self._down is not None:
                self._note_problem(f"W&B not reached: {self._down}")
                continue
            why = upload_segment(folder, segment, self.upload_timeout_s)
            if why is not None:
                self._down = why  # one slow or failed upload: keep the rest on disk for a later upload
                self._note_problem(f"upload of {folder}/{WANDB_DIR}/{segment.dir} failed: {why}")
                continue
            with self._ledger_lock:
                ledger = Ledger.read(folder)
                for listed in ledger.segments if ledger else []:
                    if listed.dir == segment.dir:
                        listed.uploaded = True
                if ledger is not None:
                    ledger.write(folder)
                    writer = self._writers.get(folder)
                    if writer is not None:
                        writer.ledger.segments = ledger.segments
            self.report.uploaded += 1

    def _note_problem(self, message: str) -> None:
        if message not in self.report.problems:
            self.report.problems.append(message)

    def _pending_segments(self) -> list[tuple[str, Segment]]:
        if self.mode != "online":
            return []
        pending = []
        for folder in set(self._writers) | self._known:
            ledger = Ledger.read(folder)
            pending += [(folder, s) for s in (ledger.segments if ledger else []) if not s.uploaded]
        return pending


def _redact(text: str) -> str:
    key = os.environ.get("WANDB_API_KEY", "").strip()
    return text.replace(key, "<WANDB_API_KEY>") if key else text


# ----------------------------------------------------------------------------- reading records back


def offline_run_records(run_path: str | Path, summary: bool = False) -> list[dict[str, Any]]:
    """What an offline W&B run recorded, as `wandb leet inspect --json` prints it (one dict per record;
    with `summary`, one dict of config, summary and state): check a run before `wandb sync`."""
    done = subprocess.run([*wandb_command(), "leet", "inspect", "--json", *(["--summary"] if summary else []),
                           str(run_path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"`wandb leet inspect {run_path}` failed: {done.stderr.strip()}")
    if summary:  # one (pretty-printed) object
        return [json.loads(done.stdout)]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@dataclass
class Recorded:
    """A run's W&B record as `wandb sync` of all its offline segments would give it."""

    rows: dict[int, dict[str, Any]]  # W&B step -> the merged history row
    segments: list[dict[str, Any]]  # per segment: dir, steps, state, start_time, summary
    repeated_steps: int  # steps held by more than one segment

    @property
    def state(self) -> str | None:
        """The state of the newest segment (how the run ended): "finished", "failed", or "running"."""
        return self.segments[-1]["state"] if self.segments else None


def read_recorded(folder: str | os.PathLike[str]) -> Recorded:
    """Read every offline segment in folder/wandb/ (the published ones, as a user would sync them),
    oldest first, and merge their history by W&B step."""
    segments = [_read_segment(run_dir) for run_dir in sorted((Path(folder) / WANDB_DIR).glob(f"{SEGMENT_PREFIX}*"))]
    segments.sort(key=lambda s: s["start_time"])
    rows: dict[int, dict[str, Any]] = {}
    repeated = 0
    for segment in segments:
        for item in segment.pop("history"):
            step = int(item["_step"])
            repeated += step in rows
            rows.setdefault(step, {}).update(item)
    return Recorded(rows=rows, segments=segments, repeated_steps=repeated)


def _read_segment(run_dir: Path) -> dict[str, Any]:
    """One offline run's records, read once: its run record, history, summary and how it ended
    (its exit record: "finished" for exit code 0, "failed" otherwise; none: "running")."""
    records = offline_run_records(run_dir)
    run = next((r["run"] for r in records if r["type"] == "run"), {})
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    summary: dict[str, Any] = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    exits = [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"]
    state = "running" if not exits else ("finished" if exits[-1] == 0 else "failed")
    config = {k: v for k, v in run.get("config", {}).get("update", {}).items() if k != "_wandb"}
    return {"dir": run_dir.name, "steps": [int(item["_step"]) for item in history], "history": history,
            "state": state, "start_time": run.get("start_time", ""), "summary": summary, "config": config, "run": run}


@dataclass
class Audit:
    """A run folder against its W&B record: what the folder finished that the record lacks."""

    epochs: int
    missing_epochs: list[int]  # steps of finished epochs absent from the record (or with other values)
    panels: int
    missing_panels: list[str]  # "name@step" of images and tables absent from the record
    state: str | None  # the record's final state
    repeated_steps: int
    repeated_epochs: int  # epochs the folder holds more than once (run twice)
    recorded: Recorded | None = None


def audit(folder: str | os.PathLike[str], scalars: Sequence[str] | None = None) -> Audit:
    """Compare a run folder with its W&B record epoch by epoch: every finished epoch's scalars
    (or only `scalars`), and every panel and table logged at a finished epoch's step."""
    raw = runfolder.read_rows(folder)
    rows = runfolder.epoch_rows(raw)
    recorded = read_recorded(folder)
    missing = []
    for row in rows:
        logged = recorded.rows.get(int(row[runfolder.STEP]))
        values = runfolder.scalar_values(row)
        names = [n for n in (scalars or values) if n in values]
        if logged is None or any(not _same(logged.get(n), values[n]) for n in names):
            missing.append(int(row[runfolder.STEP]))
    steps = {int(row[runfolder.STEP]) for row in rows}
    panels, missing_panels = 0, []
    for kind, type_name in ((runfolder.IMAGES_DIR, "image-file"), (runfolder.TABLES_DIR, "table-file")):
        for step, names in runfolder.logged_files(folder, kind).items():
            if step not in steps:
                continue  # logged by an epoch that did not finish; its rerun logs it again
            for name in names:
                panels += 1
                if recorded.rows.get(step, {}).get(f"{name}._type") != type_name:
                    missing_panels.append(f"{name}@{step}")
    return Audit(epochs=len(rows), missing_epochs=missing, panels=panels, missing_panels=missing_panels,
                 state=recorded.state, repeated_steps=recorded.repeated_steps,
                 repeated_epochs=runfolder.repeated_steps(raw), recorded=recorded)


def _same(logged: Any, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return logged == value
    if not isinstance(logged, (int, float)):
        return False
    return logged == value or abs(logged - value) <= 1e-9 * max(1.0, abs(value)) or (logged != logged and value != value)


# ----------------------------------------------------------------------------- `celeb wandb`


def run_id_of(run_dir: str | os.PathLike[str]) -> str:
    """The W&B run id of a local run: its folder's name, in the characters W&B allows."""
    import re

    return re.sub(r"[^A-Za-z0-9_-]", "-", Path(run_dir).resolve().name)


def find_run_folders(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every run folder (a folder holding metrics.jsonl) at or under `roots`, sorted."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist; pass a sweep folder (storage_path/<name>) or a run folder")
        found.update(p.parent.resolve() for p in root.rglob(runfolder.METRICS_FILE)
                     if WANDB_DIR not in p.relative_to(root).parts)
    return sorted(found)


def run_info_of(folder: str | os.PathLike[str], project: str | None = None) -> RunInfo:
    """Who a run folder is in W&B: as its ledger says, else as the folder says (a sweep trial's
    params.json and its sweep's sweep_spec.json, or a local run's config.yaml)."""
    folder = Path(folder)
    ledger = Ledger.read(folder)
    if ledger is not None:
        info = ledger.info
        return info if project is None else RunInfo.from_dict({**asdict(info), "project": project})
    params, spec = folder / "params.json", folder.parent / "sweep_spec.json"
    if params.exists() and folder.name.startswith("trial_"):
        config = json.loads(params.read_text(encoding="utf-8"))
        sweep = json.loads(spec.read_text(encoding="utf-8")) if spec.exists() else {}
        return RunInfo(run_id=folder.name.removeprefix("trial_"), name=folder.name, group=folder.parent.name,
                       project=project or "celeb", config=config, job_type=config.get("task"),
                       metric=sweep.get("metric"), mode=sweep.get("mode", "min"))
    import yaml

    config_file = folder / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    return RunInfo(run_id=run_id_of(folder), name=folder.name, group="local", project=project or "celeb",
                   config=config or {}, job_type=(config or {}).get("task"),
                   metric=(config or {}).get("early_stopping_metric"), mode=(config or {}).get("early_stopping_mode", "min"))


def write_records(roots: Iterable[str | os.PathLike[str]], upload: bool = False, rebuild: bool = False,
                  project: str | None = None, progress: bool = True) -> RecordReport:
    """Bring the W&B records of every run folder under `roots` up to date with the folders (after a
    killed driver that was not resumed, say); `rebuild` first deletes the records there and writes
    them again from the folders; `upload` also sends every segment not yet uploaded (needs W&B's
    server, e.g. after an outage). Runs keep how they ended (finished or failed)."""
    from tqdm.auto import tqdm

    folders = find_run_folders(roots)
    if not folders:
        raise FileNotFoundError(f"no run folders (with {runfolder.METRICS_FILE}) under {', '.join(map(str, roots))}")
    keeper = RecordKeeper("online" if upload else "offline", upload_every_s=None).start()
    for folder in tqdm(folders, desc="W&B records", unit="run", disable=not progress, leave=False):
        ledger = Ledger.read(folder)
        info = run_info_of(folder, project)
        final = ledger.final if ledger is not None else None
        if rebuild:
            storage.delete_dir(folder / WANDB_DIR)
        keeper.close(str(folder), info, final or "finished", final=True)
        keeper.wait()
    keeper.upload_pending(map(str, folders))
    return keeper.drain(upload_timeout_s=None)
