"""Where a run's metrics, images and tables go: the `Tracker` protocol and its implementations.

The training loop only calls `log`, `log_images` and `log_table`, never `finish`: the caller owns
the tracker. A run writes its run folder (`LocalTracker`: metrics.jsonl, metrics.csv, PNGs and CSV
tables, in the layout of celeb.training.runfolder), tests may log nowhere (`NullTracker`), and several
trackers can be combined (`MultiTracker`).

There is no W&B tracker on purpose: a process that trains can be ended at any moment (Tune stops
a trial, a node is lost), and whatever a W&B writer inside it had buffered would be lost with it.
The run folder is written before each epoch is reported, and celeb.records writes the W&B run
from it, from a process that outlives the trial.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from celeb.training import runfolder
from celeb.atomic import atomic_path, write_text_atomic
from celeb.training.checkpoint import plain

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
    """Writes the run folder (celeb.training.runfolder): run_dir/metrics.jsonl (one row per `log`, appended
    durably), run_dir/metrics.csv (rewritten atomically with the scalar columns seen so far), images
    as PNG (the latest as run_dir/<name>.png, every one under run_dir/images/) and tables as CSV
    (the latest as run_dir/<name>.csv, every one under run_dir/tables/).

    Opening an existing run dir continues its metrics (a resumed run appends).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = runfolder.read_rows(self.run_dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {runfolder.STEP: int(step), **plain(metrics)}
        runfolder.append_row(self.run_dir, row)
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
            for target in (runfolder.image_file(self.run_dir, name), runfolder.image_file(self.run_dir, name, step)):
                with atomic_path(target) as tmp:
                    save_image(tensor, tmp, format="png")

    def log_table(self, name: str, table: pd.DataFrame, step: int) -> None:
        text = table.to_csv(index=False)
        for target in (runfolder.table_file(self.run_dir, name), runfolder.table_file(self.run_dir, name, step)):
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
    return runfolder.read_rows(run_dir)
