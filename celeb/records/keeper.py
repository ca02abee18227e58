"""The records of many run folders, kept up to date from background threads (records, uploads)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from celeb.records.ledger import WANDB_DIR, Ledger, Segment
from celeb.records.settings import RunInfo, WandbWarning, resolve_wandb_mode
from celeb.records.upload import endpoint, reachable, upload_segment
from celeb.records.writer import RecordWriter, discard_unlisted


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
        self.report.epochs = sum(writer.logged for writer in self._writers.values())
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
        writer = self._writers.get(folder)
        if writer is None:  # first touch of the folder: clear what a killed writer left first
            self.report.discarded += discard_unlisted(folder)
            writer = self._writers[folder] = RecordWriter(folder, info)
            self.report.runs += 1
        writer.info = info
        return writer

    def _sync(self, folder: str, info: RunInfo) -> None:
        with self._guard(folder, "writing the W&B record of"):
            writer = self._writer(folder, info)
            writer.sync()
            if (self.mode == "online" and self.upload_every_s is not None and writer.open
                    and time.monotonic() - writer.opened_at > self.upload_every_s):
                self._finish_segment(writer, "finished", final=False)

    def _close(self, folder: str, info: RunInfo, state: str, final: bool) -> None:
        with self._guard(folder, "finishing the W&B record of"):
            self._finish_segment(self._writer(folder, info), state, final)

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
