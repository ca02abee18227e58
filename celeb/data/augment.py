"""Random augmentation of whole batches: every sample its own parameters, no per-image Python loop.

Augmentations are callables `augment(x, generator) -> x` on a float batch (B, 3, H, W) in [0, 1],
on whatever device the batch is on. All randomness comes from `generator` (a CPU torch.Generator:
parameters are drawn on the CPU and moved to the batch's device), so the same generator state gives
the same batch on the CPU every time and the same parameters on any device. The two presets also
take the raw uint8 batch (`takes_uint8`), which BatchLoader then hands them: moving bytes is 4x
cheaper than moving floats, and the division by 255 folds into the colour matrix.

- `BatchAugment` ("light"): horizontal flip, a random translation by up to `crop_jitter` pixels
  with reflected borders (the flip and the column shift are one gather, the row shift one
  index_select), and colour jitter. Brightness, contrast, saturation and hue (a rotation about the
  grey axis in YIQ space) are all linear maps of RGB, so the jitter of each sample is one 3x3
  matrix plus an offset, applied with one batched matmul and clamped once at the end (torchvision
  clamps after each step; the difference only touches pixels pushed past 0 or 1).
- `HeavyAugment` ("heavy", the attribute classifier's): `BatchAugment` then torchvision.transforms.v2
  (small rotation and scale, blur, random erasing), applied to chunks of the batch so each chunk
  draws its own parameters. v2 draws from torch's global RNG, so it runs inside `fork_rng`, seeded
  from `generator`: deterministic, and the caller's global RNG is left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

Augment = Callable[[Tensor, torch.Generator], Tensor]

# torchvision's rgb_to_grayscale weights; they sum to 1, so grey stays grey under every jitter below.
GREY = (0.299, 0.587, 0.114)
CACHE_BYTES = 2 << 20  # float pixels per chunk of the CPU colour transform: about an L2 cache
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class BatchAugment:
    """Flip, translation and colour jitter, drawn per sample; factors are uniform in [1 - v, 1 + v]."""

    flip: bool = True
    crop_jitter: int = 4  # pixels of random translation (each axis), borders reflected
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0  # hue shift, uniform in [-hue, hue] of a full turn (at most 0.5)
    padding: str = "reflect"  # or "replicate"
    takes_uint8 = True  # not a field: BatchLoader may hand over raw uint8 batches (see the module doc)

    def __post_init__(self) -> None:
        if self.padding not in ("reflect", "replicate"):
            raise ValueError(f"padding must be 'reflect' or 'replicate', got {self.padding!r}")
        if self.crop_jitter < 0 or not 0 <= self.hue <= 0.5:
            raise ValueError("crop_jitter must be >= 0 and hue in [0, 0.5]")
        if min(self.brightness, self.contrast, self.saturation) < 0:
            raise ValueError("brightness, contrast and saturation must be >= 0")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """x: (B, 3, H, W) float in [0, 1], or uint8 in [0, 255]; returns float32 in [0, 1]."""
        _check_batch(x)
        # one draw for every parameter: the numbers depend only on the generator and the batch size.
        # The little per-sample arithmetic below is numpy's: torch's per-op overhead would dominate it.
        u = torch.rand(x.shape[0], 7, generator=generator, device=generator.device, dtype=torch.float64)
        u = u.cpu().numpy()
        if self.flip or self.crop_jitter:
            x = self._shift_and_flip(x, u[:, :3])
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        if not (self.brightness or self.contrast or self.saturation or self.hue):
            x = x.contiguous().float()
            return x.div_(255) if scale != 1 else x
        return self._colour(x, u[:, 3:], scale)

    def _shift_and_flip(self, x: Tensor, u: np.ndarray) -> Tensor:
        """Each sample shifted by (dy, dx) in [-j, j] and maybe mirrored: a gather of columns, then of rows."""
        b, c, h, w = x.shape
        j = min(self.crop_jitter, h - 1, w - 1)  # reflection needs the shift to stay inside the image
        shift = np.floor(u[:, 1:] * (2 * j + 1)).astype(np.int64) - j  # (B, 2): dy, dx
        flip = (u[:, 0] < 0.5) & self.flip
        cols = self._border(np.arange(w) + shift[:, 1:], w)  # (B, W) source column of each output column
        cols = np.where(flip[:, None], w - 1 - cols, cols)
        x = x.gather(3, _to(cols, x.device)[:, None, None, :].expand(b, c, h, w))  # contiguous (B, C, H, W)
        if j:  # rows: whole image rows, (sample, channel, source row) -> one index_select
            rows = self._border(np.arange(h) + shift[:, :1], h)  # (B, H)
            source_rows = np.arange(b * c).reshape(b, c, 1) * h + rows[:, None, :]
            x = x.view(-1, w).index_select(0, _to(source_rows.reshape(-1), x.device)).view(b, c, h, w)
        return x

    def _border(self, index: np.ndarray, n: int) -> np.ndarray:
        if self.padding == "replicate":
            return index.clip(0, n - 1)
        index = np.abs(index)  # reflect about 0 ...
        return np.where(index > n - 1, 2 * (n - 1) - index, index)  # ... and about n - 1

    def _colour(self, x: Tensor, u: np.ndarray, scale: float) -> Tensor:
        """x -> A x + offset per sample (brightness, contrast, saturation, hue), times `scale`, clamped once.

        One batched matmul does it all: the image gets a fourth channel of ones, and the offset is the
        matrix's fourth column. It runs on chunks of the batch small enough to stay in the CPU's cache
        between the conversion to float, the matmul and the clamp (twice as fast as whole batches).
        """
        b, _, h, w = x.shape
        bright = 1 + self.brightness * (2 * u[:, 0] - 1)
        contrast = 1 + self.contrast * (2 * u[:, 1] - 1)
        saturation = 1 + self.saturation * (2 * u[:, 2] - 1)
        angle = self.hue * (2 * u[:, 3] - 1) * 2 * math.pi
        # saturation blends with the grey image: s*x + (1-s)*grey(x)
        sat = saturation[:, None, None] * np.eye(3) + (1 - saturation)[:, None, None] * np.array(GREY)
        matrix = _to(_hue_rotation(angle) @ sat * (bright * contrast * scale)[:, None, None], x.device)
        # contrast blends with the mean grey level of the brightened image; saturation and hue keep grey
        offset_per_grey = _to((1 - contrast) * bright * scale, x.device)
        grey = torch.tensor(GREY, device=x.device)

        x = x.reshape(b, 3, h * w)
        out = torch.empty((b, 3, h * w), dtype=torch.float32, device=x.device)
        chunk = max(1, CACHE_BYTES // (4 * h * w * 4)) if x.device.type == "cpu" else b
        with_ones = torch.empty((min(chunk, b), 4, h * w), dtype=torch.float32, device=x.device)
        with_ones[:, 3].fill_(1)
        for start in range(0, b, chunk):
            part = slice(start, min(start + chunk, b))
            pixels = with_ones[:part.stop - start]
            pixels[:, :3].copy_(x[part])  # the conversion to float happens here, if x is uint8
            offset = (pixels[:, :3].mean(dim=2) @ grey) * offset_per_grey[part]
            affine = torch.cat([matrix[part], offset[:, None, None].expand(-1, 3, 1)], dim=2)  # (chunk, 3, 4)
            torch.bmm(affine, pixels, out=out[part]).clamp_(0, 1)
        return out.view(b, 3, h, w)


def _to(array: np.ndarray, device: torch.device) -> Tensor:
    """A numpy array as a tensor on `device` (float arrays as float32). To a GPU it goes from pinned
    memory without blocking: a copy from pageable memory may wait for the GPU's queued work."""
    tensor = torch.from_numpy(array)
    tensor = tensor.to(torch.float32 if tensor.is_floating_point() else tensor.dtype)
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _hue_rotation(angle: np.ndarray) -> np.ndarray:
    """(B, 3, 3) RGB matrices rotating the hue by `angle` radians (a rotation of the IQ plane in YIQ)."""
    rot = np.zeros((len(angle), 3, 3))
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def _default_heavy_transforms() -> v2.Transform:
    return v2.Compose([
        v2.RandomAffine(degrees=10, translate=(0.04, 0.04), scale=(0.92, 1.08)),
        v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.0))], p=0.3),
        v2.RandomErasing(p=0.25, scale=(0.02, 0.12), ratio=(0.5, 2.0), value=0.0),
    ])


@dataclass(frozen=True)
class HeavyAugment:
    """`base` per sample, then torchvision v2 `transforms` with their own parameters per chunk."""

    base: BatchAugment = BatchAugment(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03)
    transforms: v2.Transform = field(default_factory=_default_heavy_transforms)
    chunk: int = 16  # samples sharing one draw of the v2 parameters (smaller: more variety, slower)
    takes_uint8 = True  # as `base` does

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        x = self.base(x, generator)
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        cuda = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []
        with torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(seed)  # v2 draws its parameters on the CPU
            if x.is_cuda:
                torch.cuda.default_generators[cuda[0]].manual_seed(seed)
            out = torch.cat([self.transforms(part) for part in x.split(self.chunk)])
        return out.clamp_(0, 1)  # interpolation can overshoot by a rounding error


def heavy_augment(chunk: int = 16) -> HeavyAugment:
    """The attribute classifier's preset: stronger colour jitter plus rotation, scale, blur and erasing."""
    return HeavyAugment(chunk=chunk)


def make_augment(name: str) -> Augment | None:
    """The augmentation called `name`: "none" (None), "flip", "light" (BatchAugment()) or "heavy"."""
    presets: dict[str, Callable[[], Augment | None]] = {
        "none": lambda: None,
        "flip": lambda: BatchAugment(crop_jitter=0, brightness=0.0, contrast=0.0, saturation=0.0),
        "light": BatchAugment,
        "heavy": heavy_augment,
    }
    if name not in presets:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(presets)}")
    return presets[name]()


def _check_batch(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or not (x.is_floating_point() or x.dtype == torch.uint8):
        raise ValueError(f"expected a batch (B, 3, H, W), float in [0, 1] or uint8, got {tuple(x.shape)} {x.dtype}")
