"""Every seed this project derives from a run's one seed, in one place.

A run (or a sweep) has one seed; everything random draws from a stream derived from it here, so the
same seed gives the same numbers on the CPU. Each stream's formula is part of the results it has
produced: changing one changes every batch order, augmentation, noise draw or metric seeded from it,
so the formulas stay as they were when those results were made. A new stream should use
`stream_seed`.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by integer `keys`, independent across (seed, keys)."""
    return int(np.random.SeedSequence([seed % 2**63, *keys]).generate_state(1, np.uint64)[0] >> 1)


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """A numpy generator for the named stream (a metric's draws): independent across (seed, stream)."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


def order_seed(seed: int, epoch: int) -> int:
    """The batch order of one epoch."""
    return seed * 1_000_003 + epoch


AUGMENT_STREAM = 0xA06


def augment_seed(seed: int, epoch: int) -> int:
    """The augmentation draws of one epoch."""
    return stream_seed(seed, epoch, AUGMENT_STREAM)


IMPORTANCE_STREAM = 0x1A5


def importance_seed(seed: int) -> int:
    """The posterior samples of a hierarchical VAE's importance-sampled NLL (celeb.training.nvae_task)."""
    return stream_seed(seed, IMPORTANCE_STREAM)


def noise_seed(seed: int, epoch: int) -> int:
    """The reparameterisation noise of one epoch (epoch -1: evaluation)."""
    return (seed * 1_000_003 + epoch + 7) % 2**63


def trial_seeds(sweep_seed: int, repeats: int) -> list[int]:
    """The training seed of each repeat of a sweep's configs: distinct, in [0, 2**31)."""
    return [int(np.random.SeedSequence([sweep_seed, r]).generate_state(1)[0] >> 1) for r in range(repeats)]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
