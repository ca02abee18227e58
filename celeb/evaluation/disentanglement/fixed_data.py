"""The fixed setting's data: arrays of latents (N, D) and binary attributes (N, K), checked; the seeded
train/test split of their rows; and draws of rows that share one attribute's value, which stand in
for "hold one factor fixed" in the β-VAE and FactorVAE approximations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from celeb.seeds import stream_rng


def check_fixed(
    latents: np.ndarray, attributes: np.ndarray, names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(float latents, bool attributes, names), or a ValueError that says what is wrong with them."""
    latents = np.asarray(latents, dtype=np.float64)
    attributes = np.asarray(attributes)
    if latents.ndim != 2 or attributes.ndim != 2 or len(latents) != len(attributes):
        raise ValueError(
            f"latents must be (N, D) and attributes (N, K) with the same N; got {latents.shape} and {attributes.shape}"
        )
    attributes = as_bool_attributes(attributes)
    names = list(names) if names is not None else [f"attribute_{k}" for k in range(attributes.shape[1])]
    if len(names) != attributes.shape[1]:
        raise ValueError(f"{len(names)} names for {attributes.shape[1]} attribute columns")
    if attributes.shape[1] < 2 or latents.shape[1] < 2:
        raise ValueError("the metrics need at least 2 attributes and 2 latent dimensions")
    if not np.isfinite(latents).all():
        raise ValueError("latents contain NaN or inf; check the encoder's output")
    constant = [n for n, col in zip(names, attributes.T) if col.all() or not col.any()]
    if constant:
        raise ValueError(f"attribute(s) {constant} take one value in every row; drop them or use more rows")
    return latents, attributes, names


def as_bool_attributes(attributes: np.ndarray) -> np.ndarray:
    """Bool attributes as they are, 0/1 ones as bools; CelebA's -1/1 is refused (it would read as all True)."""
    if attributes.dtype != bool:
        if not np.isin(attributes, (0, 1)).all():
            raise ValueError("attributes must be bool (or 0/1); convert CelebA's -1/1 with `attributes > 0`")
        attributes = attributes.astype(bool)
    return attributes


def split_rows(
    num_rows: int, seed: int, num_train: int = 10_000, num_test: int = 5_000
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of row indices: at most num_train/num_test rows, 2:1 when rows are fewer."""
    order = stream_rng(seed, "split").permutation(num_rows)
    if num_rows < num_train + num_test:
        num_test = max(1, round(num_rows * num_test / (num_train + num_test)))
        num_train = num_rows - num_test
    return np.sort(order[:num_train]), np.sort(order[num_train : num_train + num_test])


def value_groups(attributes: np.ndarray, pool: np.ndarray) -> list[list[np.ndarray]]:
    """groups[k][v] = the rows of `pool` whose attribute k has value v."""
    return [[pool[~attributes[pool, k]], pool[attributes[pool, k]]] for k in range(attributes.shape[1])]


def draw_sharing(
    attributes: np.ndarray, groups: list[list[np.ndarray]], fixed: np.ndarray, anchors: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """For each anchor row (any shape, fixed broadcast to it), a random row sharing its value of attribute `fixed`."""
    fixed = np.broadcast_to(fixed, anchors.shape)
    values = attributes[anchors, fixed]
    drawn = np.empty(anchors.shape, dtype=np.int64)
    for k in range(attributes.shape[1]):
        for v in (False, True):
            where = (fixed == k) & (values == v)
            group = groups[k][int(v)]
            drawn[where] = group[rng.integers(len(group), size=int(where.sum()))]
    return drawn


def points_per_gather(batch_size: int, num_dims: int) -> int:
    """How many points to draw at once so that their (points, batch, D) gather of latents stays ~1M values."""
    return max(1, 2**20 // (batch_size * num_dims))


def split_arrays(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int, num_test: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(latents_train, attributes_train, latents_test, attributes_test) on the rows of `split_rows`."""
    train, test = split_rows(len(latents), seed, num_train, num_test)
    return latents[train], attributes[train], latents[test], attributes[test]
