"""Batches straight from the image cache: one gather per batch, no per-image Python, no workers.

In the spirit of KellerJordan/airbench, the rows a loader serves are copied once into one contiguous
uint8 tensor (in RAM, or on the GPU when `on_device`), and every batch is an index gather from it,
then the move to the device (pinned, non-blocking), the conversion to float in [0, 1] and the
augmentation, all on whole batches.

Reproducibility: the batch order of epoch e is a pure function of (seed, e), and so is the
augmentation's randomness, so a run resumed at epoch e sees exactly the batches it would have seen.
Call `set_epoch(e)` before iterating; iterating twice without it repeats the same epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from celeb.data.augment import Augment
from celeb.seeds import augment_seed, order_seed

OUTPUTS = ("float", "uint8")


class BatchLoader:
    """Serve (x, y) batches of `indices` rows of `images` (N, H, W, 3) uint8 and `labels` (N, K).

    x is float32 (B, 3, H, W) in [0, 1] (channels_last on CUDA), augmented when `augment` is given,
    or the raw uint8 (B, H, W, 3) with output="uint8" (no augmentation then). y is float32 (B, K),
    or None when there are no labels.
    """

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor | None,
                 indices: np.ndarray | None = None, batch_size: int = 256, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, device: str | torch.device = "cpu",
                 on_device: bool | None = None, augment: Augment | None = None, output: str = "float"):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {tuple(images.shape)} {images.dtype}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"labels have {len(labels)} rows but images have {len(images)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "uint8" and augment is not None:
            raise ValueError("augmentation works on float batches; use output='float' with augment")
        rows = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
            raise ValueError(f"indices must lie in [0, {len(images)}), got {rows.min()}..{rows.max()}")

        self.device = torch.device(device)
        self.on_device = self.device.type == "cuda" if on_device is None else on_device
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.augment, self.output = augment, output
        self.augment_uint8 = getattr(augment, "takes_uint8", False)  # it takes raw (B, 3, H, W) bytes
        self.indices = rows
        self.epoch = 0
        home = self.device if self.on_device else torch.device("cpu")
        self.images = _take(images, rows).to(home)
        self.labels = None if labels is None else _take(labels, rows).to(home, torch.float32)
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> Tensor:
        """Positions (into `indices`) in the order epoch `epoch` serves them."""
        n = len(self.indices)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(order_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        order = self.order(self.epoch)
        order = order.numpy() if self.images.device.type == "cpu" else order.to(self.images.device)
        generator = torch.Generator().manual_seed(augment_seed(self.seed, self.epoch)) if self.augment else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self._gather(self.images, idx)
            y = None if self.labels is None else self._gather(self.labels, idx)
            if self.output == "float":
                if self.augment is None:
                    x = _to_float(x, self.memory_format)
                else:
                    x = x.permute(0, 3, 1, 2) if self.augment_uint8 else _to_float(x, torch.contiguous_format)
                    x = self.augment(x, generator).contiguous(memory_format=self.memory_format)
            yield x, y

    def _gather(self, source: Tensor, idx: Tensor | np.ndarray) -> Tensor:
        """source[idx] on the device: a gather there when on_device, else one on the CPU, then the move."""
        if source.device.type != "cpu":
            return source.index_select(0, idx)
        if self.device.type == "cuda":
            # a fresh pinned buffer per batch: the caching host allocator reuses it only once its copy is done
            out = torch.empty((len(idx), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
            np.take(source.numpy(), idx, axis=0, out=out.numpy())
            return out.to(self.device, non_blocking=True)
        # numpy's row gather is a memcpy per row, and needs no thread pool (torch's stalls on busy cores)
        batch = torch.from_numpy(source.numpy()[idx])
        return batch if self.device.type == "cpu" else batch.to(self.device)


def _to_float(x: Tensor, memory_format: torch.memory_format) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1], in one transposing copy plus a divide."""
    b, h, w, c = x.shape
    out = torch.empty((b, c, h, w), dtype=torch.float32, device=x.device, memory_format=memory_format)
    return out.copy_(x.permute(0, 3, 1, 2)).div_(255)


def _take(array: np.ndarray | Tensor, rows: np.ndarray) -> Tensor:
    """array[rows] as one contiguous CPU-or-same-device tensor (reads a memmap once, in row order)."""
    if isinstance(array, Tensor):
        return array.index_select(0, torch.as_tensor(rows, device=array.device)).contiguous()
    if len(rows) == len(array) and np.array_equal(rows, np.arange(len(array))):
        return torch.from_numpy(np.array(array))
    return torch.from_numpy(np.ascontiguousarray(array[rows]))
