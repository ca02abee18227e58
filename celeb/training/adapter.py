"""What the training loop needs of a task (`Task`), and the small types and helpers tasks share.

A task adapter is what differs between the model families: building the model, the loss of a batch,
evaluation and what people look at. `celeb.training.loop.fit` is the one loop over any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from celeb.data.dataset import CelebData
from celeb.data.loader import BatchLoader
from celeb.evaluation.traversal import images_as_tensor


class At(NamedTuple):
    """Where the loop is: the schedules (KL warm-up, capacity) are functions of this."""

    epoch: int  # 0-based
    step_in_epoch: int
    steps_per_epoch: int
    global_step: int


@dataclass
class Evaluation:
    """One evaluation on val: its metrics (Tune reports them), and whatever the task's visuals need
    of it (a task subclasses this)."""

    metrics: dict[str, Any]


@dataclass
class Visuals:
    """What an evaluation gives people to look at: images (tracker.log_images) and tables (log_table)."""

    images: dict[str, Tensor | np.ndarray] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


DIVERGENCE_ADVICE = ("Lower the learning rate (lr), set grad_clip (e.g. 1.0), or use amp: none and resume "
                     "from the checkpoint.")


class Task(Protocol):
    """A model family as the loop sees it."""

    # Metrics every evaluation reports that a sweep may rank by, and those reported only after the
    # last epoch when the config asks for them; tests check them against what `evaluate` returns.
    epoch_metrics: ClassVar[tuple[str, ...]]
    final_metrics: ClassVar[tuple[str, ...]]
    divergence_advice: ClassVar[str]  # how to fix a run whose loss became NaN (NonFiniteLossError's message)
    augment: str  # the training batches' augmentation (celeb.data.augment)

    def build_model(self) -> nn.Module: ...

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]: ...

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, at: At,
             noise: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]: ...

    def train_extras(self, at: At) -> dict[str, float]: ...

    def evaluate(self, model: nn.Module, loader: BatchLoader, at: At, final: bool) -> Evaluation: ...

    def visuals(self, model: nn.Module, evaluation: Evaluation, epoch: int, final: bool) -> Visuals: ...


def split_indices(data: CelebData, split_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and val row indices, with a clear error when either is empty."""
    train_idx, val_idx = data.indices("train"), data.indices("val")
    for name, idx in (("train", train_idx), ("val", val_idx)):
        if len(idx) == 0:
            raise ValueError(f"the '{split_name}' split has no {name} rows; rerun `celeb split` with a "
                             "non-zero ratio for it (or use more images)")
    return train_idx, val_idx


def image_size_of(data: CelebData) -> int:
    height, width = data.images.shape[1:3]
    if height != width:
        raise ValueError(f"images must be square, got {height}x{width}")
    return int(height)


def mean_image(images: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> Tensor:
    """Mean of images[rows] as a float (3, H, W) tensor in [0, 1], in chunks (images may be a memmap)."""
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(rows), chunk):
        total += images[np.sort(rows[start:start + chunk])].sum(axis=0, dtype=np.float64)
    return torch.from_numpy(total / max(1, len(rows)) / 255.0).float().permute(2, 0, 1).contiguous()


def images_to_tensor(data: CelebData, rows: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """A few images as float (B, 3, H, W) in [0, 1] and their labels as float (B, K)."""
    y = torch.from_numpy(np.asarray(data.labels[rows], dtype=np.float32))
    return images_as_tensor(data.images[rows], device), y.to(device)
