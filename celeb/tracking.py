"""Where a run's metrics, images and tables go: the `Tracker` protocol and its implementations.

The training loop only calls `log`, `log_images` (and a caller may call `log_table`), never
`finish`: the caller owns the tracker. A local run writes metrics.jsonl, metrics.csv, PNGs and CSV
tables into its run dir (`LocalTracker`), tests may log nowhere (`NullTracker`), a Ray trial logs
to one Weights & Biases run (`WandbTracker`), and several trackers can be combined (`MultiTracker`).

W&B is optional at every step: `import celeb.tracking` does not import wandb, and a `WandbTracker`
whose wandb call fails (no network, bad entity, a bad value) warns once and logs nothing more,
while training goes on. The API key is only ever read by wandb itself from WANDB_API_KEY.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import atexit
import re
import threading
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from celeb.atomic import atomic_path, write_text_atomic
from celeb.checkpoint import plain

if TYPE_CHECKING:
    import pandas as pd


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None: ...

    def log_table(self, name: str, table: pd.DataFrame, step: int) -> None: ...

    def finish(self) -> None: ...


class NullTracker:
    """Logs nothing."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None:
        pass

    def log_table(self, name: str, table: pd.DataFrame, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class MultiTracker:
    """Forwards every call to each of several trackers."""

    def __init__(self, *trackers: Tracker) -> None:
        self.trackers = trackers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_images(images, step)

    def log_table(self, name: str, table: pd.DataFrame, step: int) -> None:
        for tracker in self.trackers:
            tracker.log_table(name, table, step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


class LocalTracker:
    """Writes run_dir/metrics.jsonl (appended, one JSON object per `log`), run_dir/metrics.csv
    (rewritten atomically with the scalar columns seen so far), images as PNG (the latest under
    run_dir/<name>.png, every one under run_dir/images/<name>_step<step>.png) and tables as CSV (the
    latest under run_dir/<name>.csv, every one under run_dir/tables/<name>_step<step>.csv). Steps in
    file names have 7 digits; a "/" in a name becomes "_".

    Opening an existing run dir continues its metrics (a resumed run appends).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.jsonl_path.exists():
            self.rows = [json.loads(line) for line in self.jsonl_path.read_text().splitlines() if line.strip()]

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": int(step), **plain(metrics)}
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
            f.flush()
        self.rows.append(row)
        self._write_csv()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k, v in row.items() if _is_scalar(v) and k not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.csv_path, out.getvalue())

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None:
        for name, image in images.items():
            tensor = as_image_tensor(image)
            safe = name.replace("/", "_")
            for target in (self.run_dir / f"{safe}.png", self.run_dir / "images" / f"{safe}_step{step:07d}.png"):
                with atomic_path(target) as tmp:
                    save_image(tensor, tmp, format="png")

    def log_table(self, name: str, table: pd.DataFrame, step: int) -> None:
        text = table.to_csv(index=False)
        safe = name.replace("/", "_")
        for target in (self.run_dir / f"{safe}.csv", self.run_dir / "tables" / f"{safe}_step{step:07d}.csv"):
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, text)

    def finish(self) -> None:
        pass


def as_image_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float (3,H,W) image in [0,1] from a (B,3,H,W)/(3,H,W) tensor or a (H,W,3)/(B,H,W,3) array.

    A batch becomes one grid (torchvision's make_grid, 8 per row); uint8 is scaled to [0,1].
    """
    tensor = torch.from_numpy(np.asarray(image)) if isinstance(image, np.ndarray) else image.detach().cpu()
    if isinstance(image, np.ndarray):  # numpy images are channels-last
        tensor = tensor.movedim(-1, -3)
    tensor = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
    if tensor.dim() == 4:
        tensor = make_grid(tensor, nrow=8, padding=2)
    if tensor.dim() != 3:
        raise ValueError(f"expected an image (3,H,W) or a batch (B,3,H,W), got shape {tuple(tensor.shape)}")
    return tensor.clamp(0, 1)


def as_image_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The (H,W,3) uint8 array of `as_image_tensor(image)`, rounded as torchvision's save_image does."""
    tensor = as_image_tensor(image)
    return tensor.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows a LocalTracker wrote (metrics.jsonl), in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- Weights & Biases

WANDB_MODES = ("auto", "online", "offline", "disabled")
SECRET_WORDS = ("api_key", "apikey", "token", "password", "secret")
STEP_METRIC = "step"  # the trainer's step at each epoch's end: the x-axis of every W&B chart


class WandbWarning(RuntimeWarning):
    """W&B failed; the run goes on without it."""


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] = os.environ) -> str:
    """"online", "offline" or "disabled" for a WandbTracker's `mode`.

    "online", "offline" and "disabled" are returned as given. "auto" is "disabled" when
    WANDB_MODE=disabled, "offline" when WANDB_MODE is offline (or the older "dryrun"), "online" when
    WANDB_API_KEY holds a key, and "offline" otherwise (no key: log locally, `wandb sync` later).
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


_OPEN_RUNS: weakref.WeakSet[WandbTracker] = weakref.WeakSet()


def _finish_at_exit(tracker: WandbTracker) -> None:
    """Finish `tracker`'s run, or wait for a finish in progress, when the process exits.

    Ray ends a worker right after a trial that ASHA stopped returns, without waiting for the trial's
    thread, and W&B's own exit hook then closes its service while the run is still finishing, so
    an offline run would lose what it had buffered. Exit hooks run last-registered first; this one
    is registered after wandb.init registered W&B's, so it runs before W&B tears down.
    """
    if not _OPEN_RUNS:
        atexit.register(_finish_open_runs)
    _OPEN_RUNS.add(tracker)


def _finish_open_runs() -> None:
    for tracker in list(_OPEN_RUNS):
        tracker.finish()


def scalar_values(metrics: Mapping[str, Any]) -> dict[str, int | float | bool]:
    """The numbers and bools among `metrics` (numpy/torch 0-d values become Python numbers)."""
    scalars: dict[str, int | float | bool] = {}
    for name, value in metrics.items():
        if isinstance(value, (np.generic, np.ndarray, torch.Tensor)) and np.ndim(value) == 0:
            value = value.item()
        if isinstance(value, (bool, int, float)):
            scalars[name] = value
    return scalars


class WandbTracker:
    """One W&B run per trial: its scalar metrics, images, tables, summary and (on request) a checkpoint.

    `group` is the sweep's name, `name` and `run_id` the trial's (a restarted or resumed trial passes
    the same run_id and continues the same run), `config` the trial's flat config including its seed
    (credential-looking keys are dropped, see `loggable_config`). W&B's files go under
    run_dir/wandb; an offline run is run_dir/wandb/offline-run-<YYYYMMDD_HHMMSS>-<run_id>/run-<run_id>.wandb
    (`sync_dir` is that folder), uploaded later with `wandb sync <sync_dir>`. Artifact files are
    staged under WANDB_DATA_DIR (default ~/.local/share/wandb) until uploaded.

    Steps: every row carries "step" (the trainer's step, the charts' x-axis via define_metric), and
    W&B's own step counter is left to W&B, so it never rejects a row. A row whose step is lower than
    the last one logged (a resumed trial repeating an epoch) is skipped silently, so each chart stays
    monotonic; equal steps are kept (images, tables and the metrics of one epoch share a step).
    Lists such as val/kl_per_dim and strings are not logged by `log` (only numbers and bools);
    log them with `log_table` if wanted.

    Never fails the caller because of W&B: an exception from wandb (init included) is caught, warned
    once (a `WandbWarning`) and the tracker logs nothing more.
    """

    def __init__(self, *, project: str = "celeb", group: str | None, name: str | None, config: dict[str, Any],
                 run_dir: str | Path, run_id: str | None = None, entity: str | None = None, mode: str = "auto",
                 tags: Sequence[str] = (), job_type: str | None = None) -> None:
        self.mode = resolve_wandb_mode(mode)
        self.run_dir = Path(run_dir).resolve()
        self.run: Any = None
        self.sync_dir: Path | None = None
        self.failed = False
        self._finishing = threading.Lock()  # finish() may race with the process exiting (see _finish_at_exit)
        self._last_step: int | None = None
        if self.mode == "disabled":
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._guard("starting the W&B run (wandb.init)"):
            import wandb

            self.run = wandb.init(
                project=project, entity=entity, group=group, name=name, id=run_id, config=loggable_config(config),
                dir=str(self.run_dir), mode=self.mode, tags=list(tags), job_type=job_type,
                resume="allow" if run_id is not None else None, reinit="finish_previous")
            self.sync_dir = Path(self.run.settings.sync_dir)
            _finish_at_exit(self)
            self.run.define_metric(STEP_METRIC)
            self.run.define_metric("*", step_metric=STEP_METRIC)
            resumed_step = self.run.summary.get(STEP_METRIC)  # an online resumed run knows its last step
            if isinstance(resumed_step, (int, float)) and not isinstance(resumed_step, bool):
                self._last_step = int(resumed_step)

    @property
    def active(self) -> bool:
        """Whether calls still reach W&B (False when disabled, finished, or after a failure)."""
        return self.run is not None and not self.failed

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.active:
            self._log_row(scalar_values(metrics), step)

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None:
        if not self.active or not images:
            return
        arrays = {name: as_image_array(image) for name, image in images.items()}
        with self._guard("logging images to W&B"):
            import wandb

            self._log_row({name: wandb.Image(array) for name, array in arrays.items()}, step)

    def log_table(self, name: str, table: pd.DataFrame, step: int) -> None:
        if not self.active:
            return
        with self._guard(f"logging the table {name!r} to W&B"):
            import wandb

            self._log_row({name: wandb.Table(dataframe=table)}, step)

    def set_summary(self, metrics: dict[str, Any]) -> None:
        """Set the run's final summary values (shown in the runs table), e.g. the best epoch's metrics."""
        if not self.active:
            return
        with self._guard("setting the W&B summary"):
            self.run.summary.update(plain(metrics))

    def log_checkpoint(self, path: str | Path, name: str, metadata: dict[str, Any],
                       aliases: Sequence[str] = ("best",)) -> None:
        """Upload a checkpoint dir or file as a W&B artifact of type "model" named `name`
        (characters W&B does not allow become "-") with `metadata` and `aliases`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist; pass an existing checkpoint dir or file")
        if not self.active:
            return
        with self._guard(f"logging the checkpoint {path} to W&B"):
            import wandb

            artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "-", name), type="model", metadata=plain(metadata))
            if path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=list(aliases))

    def finish(self, exit_code: int | None = None) -> None:
        """Finish the W&B run (an offline run's file is then complete); later calls do nothing."""
        with self._finishing:
            run, self.run = self.run, None
            if run is None:
                return
            if self.failed:  # already warned; still close the run so what was written is complete
                with contextlib.suppress(Exception):
                    run.finish(exit_code=exit_code)
                return
            with self._guard("finishing the W&B run"):
                run.finish(exit_code=exit_code)

    def _log_row(self, row: dict[str, Any], step: int) -> None:
        step = int(step)
        if self._last_step is not None and step < self._last_step:
            return
        self._last_step = step
        with self._guard("logging to W&B"):
            self.run.log({**row, STEP_METRIC: step})

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn any exception from wandb into one warning, after which the tracker logs nothing."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - W&B must never stop training
            if not self.failed:
                self.failed = True
                warnings.warn(self._failure_message(what, error), WandbWarning, stacklevel=4)

    def _failure_message(self, what: str, error: Exception) -> str:
        detail = f"{type(error).__name__}: {error}"
        key = os.environ.get("WANDB_API_KEY", "").strip()
        if key:
            detail = detail.replace(key, "<WANDB_API_KEY>")
        if self.sync_dir is not None and self.mode == "offline":
            later = (f"What was logged before this is in {self.sync_dir}; upload it later with "
                     f"`wandb sync {self.sync_dir}`.")
        else:
            later = ("To keep a W&B record without a network, use mode='offline' (or WANDB_MODE=offline) and "
                     f"upload later with `wandb sync {self.run_dir / 'wandb'}/offline-run-*`.")
        return f"{what} failed ({detail}); this run continues without W&B logging. {later}"


def offline_run_records(run_path: str | Path, summary: bool = False) -> list[dict[str, Any]]:
    """What an offline W&B run recorded, as `wandb leet inspect --json` prints it (one dict per record;
    with `summary`, one dict of config, summary and state): check a run before `wandb sync`."""
    import subprocess
    import sys

    beside = Path(sys.executable).parent / "wandb"
    command = [str(beside)] if beside.exists() else [sys.executable, "-m", "wandb"]
    done = subprocess.run([*command, "leet", "inspect", "--json", *(["--summary"] if summary else []),
                           str(run_path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"`wandb leet inspect {run_path}` failed: {done.stderr.strip()}")
    if summary:  # one (pretty-printed) object
        return [json.loads(done.stdout)]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
