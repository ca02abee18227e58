"""Where a run's metrics and images go: the `Tracker` protocol and its local implementations.

The training loop only calls `log`, `log_images` and `finish`; a local run writes metrics.jsonl,
metrics.csv and PNGs into its run dir (`LocalTracker`), tests and Ray trials may log nowhere
(`NullTracker`), and several trackers can be combined (`MultiTracker`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from celeb.atomic import atomic_path, write_text_atomic
from celeb.checkpoint import plain


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None: ...

    def finish(self) -> None: ...


class NullTracker:
    """Logs nothing."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_images(self, images: dict[str, torch.Tensor | np.ndarray], step: int) -> None:
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

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


class LocalTracker:
    """Writes run_dir/metrics.jsonl (appended, one JSON object per `log`), run_dir/metrics.csv
    (rewritten atomically with the scalar columns seen so far) and images as PNG: the latest under
    run_dir/<name>.png and every one under run_dir/images/<name>_step<step>.png.

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


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows a LocalTracker wrote (metrics.jsonl), in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
