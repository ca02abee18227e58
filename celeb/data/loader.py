"""Batches straight from the image cache: one gather per batch, no per-image Python, no workers.

In the spirit of KellerJordan/airbench, every batch is one index gather of uint8 rows, then the move
to the device (pinned, non-blocking), the conversion to float in [0, 1] and the augmentation, all
on whole batches. Where the rows live is the loader's *placement*, chosen from the size of the
split and the memory it may use (`choose_placement`, or told: `placement=`):

- device: the split is copied once into GPU memory and batches are gathered there;
- ram: batches are gathered from the cache as it is: a memory-mapped cache's pages sit once in
  the page cache, shared by every process that maps the file, so trials packed on one node hold
  one copy of the data, not one each (an in-memory array is used as it is, never copied);
- stream: for a split larger than the memory it may use: a background thread reads the next
  batches from the cache file, each batch's rows sorted and read in runs of consecutive rows with
  one `preadv` per run, so the disk sees large ordered reads and the GPU never waits on a page fault.

Every placement serves the same batches, bit for bit. Reproducibility: the batch order of epoch e
is a pure function of (seed, e), and so is the augmentation's randomness, so a run resumed at
epoch e sees exactly the batches it would have seen. Call `set_epoch(e)` before iterating;
iterating twice without it repeats the same epoch.
"""

from __future__ import annotations

import copy
import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from celeb.data.augment import Augment, make_augment
from celeb.seeds import augment_seed, order_seed

OUTPUTS = ("float", "uint8")
PLACEMENTS = ("auto", "device", "ram", "stream")
DEVICE_SHARE = 0.25  # auto: a split goes on the GPU when it takes at most this share of its free memory
RAM_SHARE = 0.5  # auto: ... and stays in RAM (page cache) when it takes at most this share of the available RAM
PREFETCH = 3  # stream: batches read ahead


@dataclass(frozen=True)
class Placement:
    """Where a loader's rows live (device, ram or stream), and why."""

    kind: Literal["device", "ram", "stream"]
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.reason})"


def choose_placement(requested: str, nbytes: int, device: torch.device, streamable: bool,
                     memory_budget: int | None = None) -> Placement:
    """The placement for a split of `nbytes`: `requested` unless "auto", else device when it fits
    the GPU's budget, ram when it fits the RAM budget (or cannot be streamed), stream otherwise.

    `memory_budget` (bytes) replaces both budgets (a share of the device's free memory and of the
    machine's available RAM). `streamable`: the images are a memory-mapped file.
    """
    if requested not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {requested!r}")
    size = _gb(nbytes)
    if requested == "device":
        if device.type != "cuda":
            raise ValueError(f"placement 'device' needs a CUDA device, but the run is on {device}; "
                             "use placement: auto, ram or stream")
        return Placement("device", f"as told; {size}")
    if requested == "stream":
        if not streamable:
            raise ValueError("placement 'stream' reads a memory-mapped cache file, but these images are an "
                             "in-memory array; use placement: auto or ram")
        return Placement("stream", f"as told; {size}")
    if requested == "ram":
        return Placement("ram", f"as told; {size}")
    if device.type == "cuda":
        budget = memory_budget if memory_budget is not None else int(DEVICE_SHARE * free_device_bytes(device))
        if nbytes <= budget:
            return Placement("device", f"{size} fits the GPU budget of {_gb(budget)}")
    budget = memory_budget if memory_budget is not None else int(RAM_SHARE * available_ram_bytes())
    if nbytes <= budget:
        return Placement("ram", f"{size} fits the RAM budget of {_gb(budget)}")
    if not streamable:
        return Placement("ram", f"{size} is over the RAM budget of {_gb(budget)}, but an in-memory array "
                                "cannot be streamed")
    return Placement("stream", f"{size} is over the RAM budget of {_gb(budget)}")


def is_whole_file_memmap(images: object) -> bool:
    """Whether `images` maps a whole file (a cache's images.npy), so its rows can be read from the file."""
    if not isinstance(images, np.memmap) or not isinstance(images.filename, (str, os.PathLike)):
        return False
    try:
        return os.path.getsize(images.filename) == images.offset + images.nbytes and images.flags.c_contiguous
    except OSError:
        return False


def available_ram_bytes() -> int:
    """The memory the kernel says new work can use (MemAvailable), or the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_device_bytes(device: torch.device) -> int:
    return torch.cuda.mem_get_info(device)[0]


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB"


class BatchLoader:
    """Serve (x, y) batches of `indices` rows of `images` (N, H, W, 3) uint8 and `labels` (N, K).

    x is float32 (B, 3, H, W) in [0, 1] (channels_last on CUDA), augmented when `augment` is given,
    or the raw uint8 (B, H, W, 3) with output="uint8" (no augmentation then). y is float32 (B, K),
    or None when there are no labels. `placement` (see the module docstring) is "auto" or one of
    device, ram, stream; `memory_budget` (bytes) bounds what auto may put in RAM or on the GPU.
    """

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor | None,
                 indices: np.ndarray | None = None, batch_size: int = 256, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, device: str | torch.device = "cpu",
                 placement: str = "auto", memory_budget: int | None = None, augment: Augment | None = None,
                 output: str = "float"):
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
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.augment, self.output = augment, output
        self.augment_uint8 = getattr(augment, "takes_uint8", False)  # it takes raw (B, 3, H, W) bytes
        self.indices = rows
        self.epoch = 0
        row_bytes = int(np.prod(images.shape[1:]))
        self.placement = choose_placement(placement, len(rows) * row_bytes, self.device,
                                          streamable=is_whole_file_memmap(images), memory_budget=memory_budget)
        home = self.device if self.placement.kind == "device" else torch.device("cpu")
        if self.placement.kind == "device":
            self.images: Tensor | np.ndarray = _take(images, rows).to(home)
        else:  # gathered by row from the cache as it is (a memmap's pages are shared across processes)
            self.images = images.cpu().numpy() if isinstance(images, Tensor) else images
        self.reader = RowReader(images) if self.placement.kind == "stream" else None
        self.labels = None if labels is None else _take(labels, rows).to(home, torch.float32)
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sharing(self, seed: int, augment_name: str | None = None) -> BatchLoader:
        """A loader over the same rows and the same copy of the images (no new copy on the device),
        with its own `seed` and, when `augment_name` is given, its own augmentation."""
        other = copy.copy(self)
        other.seed, other.epoch = seed, 0
        if augment_name is not None:
            other.augment = make_augment(augment_name)
            other.augment_uint8 = getattr(other.augment, "takes_uint8", False)
        return other

    def order(self, epoch: int) -> Tensor:
        """Positions (into `indices`) in the order epoch `epoch` serves them."""
        n = len(self.indices)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(order_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        order = self.order(self.epoch)
        on_device = self.placement.kind == "device"
        order = order.to(self.device) if on_device else order.numpy()
        batches = [order[start:start + self.batch_size] for start in range(0, len(self) * self.batch_size,
                                                                           self.batch_size)]
        generator = torch.Generator().manual_seed(augment_seed(self.seed, self.epoch)) if self.augment else None
        images = (self.images.index_select(0, idx) for idx in batches) if on_device else self._host_batches(batches)
        for idx, x in zip(batches, images):
            y = None if self.labels is None else self._labels_of(idx)
            if self.output == "float":
                if self.augment is None:
                    x = _to_float(x, self.memory_format)
                else:
                    x = x.permute(0, 3, 1, 2) if self.augment_uint8 else _to_float(x, torch.contiguous_format)
                    x = self.augment(x, generator).contiguous(memory_format=self.memory_format)
            yield x, y

    def _labels_of(self, idx: Tensor | np.ndarray) -> Tensor:
        if self.labels.device.type != "cpu":
            return self.labels.index_select(0, idx)
        batch = torch.from_numpy(self.labels.numpy()[idx])
        return batch if self.device.type == "cpu" else batch.to(self.device, non_blocking=True)

    def _host_batches(self, batches: list[np.ndarray]) -> Iterator[Tensor]:
        """The image batches gathered from the host cache and moved to the device; streamed ones are
        read PREFETCH batches ahead by one background thread."""
        read = self._read_rows
        if self.reader is None:
            yield from (self._to_device(read(self.indices[idx])) for idx in batches)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="celeb-stream") as pool:
            pending: deque[Future] = deque()
            for idx in batches[:PREFETCH]:
                pending.append(self._submit(pool, self.indices[idx]))
            for k in range(len(batches)):
                batch = pending.popleft().result()
                if k + PREFETCH < len(batches):
                    pending.append(self._submit(pool, self.indices[batches[k + PREFETCH]]))
                yield self._to_device(batch)

    def _submit(self, pool: ThreadPoolExecutor, rows: np.ndarray) -> Future:
        """Ask the kernel for the rows now (it reads them in parallel, in the background), then queue
        the read that copies them out."""
        self.reader.advise(rows)
        return pool.submit(self._read_rows, rows)

    def _read_rows(self, rows: np.ndarray) -> Tensor:
        """images[rows] as a CPU tensor: pinned when it is headed for a GPU (the caching host allocator
        reuses a pinned buffer only once its copy is done)."""
        out = torch.empty((len(rows), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=self.device.type == "cuda")
        if self.reader is not None:
            self.reader.read(rows, out.numpy())
        else:  # numpy's row gather is a memcpy per row, and needs no thread pool (torch's stalls on busy cores)
            np.take(self.images, rows, axis=0, out=out.numpy())
        return out

    def _to_device(self, batch: Tensor) -> Tensor:
        return batch if self.device.type == "cpu" else batch.to(self.device, non_blocking=True)


class RowReader:
    """Rows of a memory-mapped .npy cache read with plain file reads: the rows of a request sorted,
    and each run of consecutive rows read by one `preadv` straight into the output's memory."""

    def __init__(self, images: np.memmap) -> None:
        if not is_whole_file_memmap(images):
            raise ValueError("only a memory-mapped array of a whole .npy file can be streamed")
        self.path, self.offset = os.fspath(images.filename), images.offset
        self.row_bytes = int(np.prod(images.shape[1:])) * images.itemsize
        self.fd = os.open(self.path, os.O_RDONLY)

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """out[i] = row rows[i] of the cache, for every i."""
        order = np.argsort(rows, kind="stable")
        staging = np.empty_like(out) if len(rows) else out
        flat = staging.reshape(len(rows), -1).view(np.uint8)
        for a, b, offset in self._runs(rows[order]):
            self._read_exactly(memoryview(flat[a:b]).cast("B"), offset)
        out[order] = staging

    def advise(self, rows: np.ndarray) -> None:
        """Tell the kernel these rows will be read soon (POSIX_FADV_WILLNEED): it starts reading them
        all at once, so a cold disk serves many requests in parallel instead of one at a time."""
        for a, b, offset in self._runs(np.sort(rows)):
            os.posix_fadvise(self.fd, offset, (b - a) * self.row_bytes, os.POSIX_FADV_WILLNEED)

    def _runs(self, ordered: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(first, end, file offset) of each run of consecutive rows in sorted `ordered`."""
        starts = np.flatnonzero(np.diff(ordered, prepend=-2) != 1)
        for a, b in zip(starts, [*starts[1:], len(ordered)]):
            yield int(a), int(b), self.offset + int(ordered[a]) * self.row_bytes

    def _read_exactly(self, buffer: memoryview, offset: int) -> None:
        while len(buffer):
            got = os.preadv(self.fd, [buffer], offset)
            if got == 0:
                raise OSError(f"{self.path} ended at byte {offset}: the cache is shorter than its header says; "
                              "rebuild it with `celeb prepare`")
            buffer, offset = buffer[got:], offset + got

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)


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
