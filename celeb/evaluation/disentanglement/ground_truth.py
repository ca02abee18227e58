"""The synthetic setting's ground truth: a generative process with known discrete factors, which a
metric can sample with one factor held fixed, and the checked sampling and representing of it.

`grid_ground_truth` is a toy process for tests; `synth_ground_truth` wraps celeb.synth's faces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

Represent = Callable[[Any], np.ndarray]  # observations -> (n, num_latents) latents


@dataclass(frozen=True)
class GroundTruth:
    """A generative process with known discrete factors, for the exact protocols.

    `sample_factors(n, rng)` returns (n, K) integer codes, column k in [0, factor_sizes[k]);
    `observe(factors, rng)` turns codes into whatever `represent` takes (an array, images, a dict).
    Continuous factors must be discretised into codes that `observe` maps back to values, so that
    "the same code" means "the same value" when a metric holds a factor fixed.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    sample_factors: Callable[[int, np.random.Generator], np.ndarray]
    observe: Callable[[np.ndarray, np.random.Generator], Any]

    def __post_init__(self) -> None:
        if len(self.factor_names) != len(self.factor_sizes):
            raise ValueError(
                f"GroundTruth has {len(self.factor_names)} factor names but {len(self.factor_sizes)} sizes"
            )
        if len(self.factor_names) < 2:
            raise ValueError("GroundTruth needs at least 2 factors (MIG, DCI and SAP compare factors)")
        small = [n for n, s in zip(self.factor_names, self.factor_sizes) if s < 2]
        if small:
            raise ValueError(f"factor(s) {small} have fewer than 2 values; drop them from the GroundTruth")

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)


def grid_ground_truth(
    factor_sizes: Sequence[int],
    names: Sequence[str] | None = None,
    mixing: np.ndarray | None = None,
    noise: float = 0.0,
) -> GroundTruth:
    """A toy process: independent uniform factors on a grid, observed as codes scaled to [0, 1].

    With `mixing` (K, M) the observation is the scaled codes times that matrix (a linear mixing);
    `noise` adds Gaussian noise of that std to each observation.
    """
    sizes = tuple(int(s) for s in factor_sizes)
    names = tuple(names) if names is not None else tuple(f"factor_{k}" for k in range(len(sizes)))
    scale = 1.0 / (np.asarray(sizes, dtype=np.float64) - 1.0)
    if mixing is not None:
        mixing = np.asarray(mixing, dtype=np.float64)
        if mixing.ndim != 2 or mixing.shape[0] != len(sizes):
            raise ValueError(f"mixing must be (num_factors={len(sizes)}, M); got shape {mixing.shape}")

    def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, sizes, size=(n, len(sizes)))

    def observe(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = factors * scale
        if mixing is not None:
            x = x @ mixing
        if noise > 0:
            x = x + noise * rng.standard_normal(x.shape)
        return x

    return GroundTruth(names, sizes, sample_factors, observe)


def synth_ground_truth(
    factor_names: Sequence[str] | None = None,
    num_bins: int = 5,
    seed: int = 0,
    num_reference: int = 10_000,
    workers: int | None = 1,
) -> GroundTruth:
    """Our synthetic faces (celeb.synth) as a GroundTruth; `observe` renders images.

    Booleans, integer classes and floats with at most `num_bins` distinct values keep their values;
    other floats are cut into `num_bins` quantile bins of a reference sample (`num_reference` faces
    drawn with `seed`) and a code is rendered at its bin's median, so a held-fixed code is a
    held-fixed value. Factors left out of `factor_names` come from a fresh `sample_factors` draw for
    every observation. `observe` returns {"images": (n, 218, 178, 3) uint8, "factors": the rendered
    factor table, "attributes": its visible attributes (if celeb.synth can derive them)}, so a
    `represent` for a conditional model can build its condition. Rendering costs ~3-10 ms per face
    per core (`workers` renders in parallel): the β-VAE score at its defaults renders 1.92 million
    faces, so pass smaller counts, and max_batch ~512 (a face is 116 KB) to bound memory.
    """
    try:
        from celeb import synth
    except ImportError as e:
        raise ImportError(f"synth_ground_truth needs celeb.synth, which could not be imported: {e}") from e
    for needed in ("sample_factors", "render_factors"):
        if not callable(getattr(synth, needed, None)):
            raise ImportError(
                f"celeb.synth has no {needed}(); synth_ground_truth needs sample_factors and render_factors"
            )

    reference = pd.DataFrame(synth.sample_factors(num_reference, np.random.default_rng(seed)))
    if factor_names is None:
        factor_names = getattr(synth, "FACTOR_NAMES", None) or [
            c for c in reference.columns if c not in ("image_id", "identity")
        ]
    missing = [n for n in factor_names if n not in reference.columns]
    if missing:
        raise ValueError(
            f"celeb.synth.sample_factors has no column(s) {missing}; it has {list(reference.columns)}"
        )
    names = tuple(factor_names)
    attributes_from_factors = getattr(synth, "attributes_from_factors", None)
    encoders = {name: _column_codebook(reference[name], num_bins) for name in names}
    sizes = tuple(len(encoders[n][1]) for n in names)

    def encode(table: pd.DataFrame) -> np.ndarray:
        return np.stack([encoders[n][0](table[n]) for n in names], axis=1)

    def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
        return encode(pd.DataFrame(synth.sample_factors(n, rng)))

    def observe(factors: np.ndarray, rng: np.random.Generator) -> dict:
        table = pd.DataFrame(synth.sample_factors(len(factors), rng))
        for k, name in enumerate(names):
            values = encoders[name][1]
            table[name] = pd.Series(values[factors[:, k]], index=table.index).astype(reference[name].dtype)
        observation = {"images": np.asarray(synth.render_factors(table, workers=workers)), "factors": table}
        if attributes_from_factors is not None:
            observation["attributes"] = attributes_from_factors(table)
        return observation

    return GroundTruth(names, sizes, sample_factors, observe)


def factor_codes(table: pd.DataFrame, names: Sequence[str] | None = None, num_bins: int = 5) -> np.ndarray:
    """Integer codes (N, F) of a table of true factors, coded as `synth_ground_truth` codes them
    (continuous factors in `num_bins` quantile bins), with the table itself as the reference sample."""
    names = list(table.columns if names is None else names)
    return np.stack([_column_codebook(table[n], num_bins)[0](table[n]) for n in names], axis=1)


def _column_codebook(column, num_bins: int) -> tuple[Callable[[Any], np.ndarray], np.ndarray]:
    """(encode(values) -> codes, values[code]) for one factor column of a reference sample."""
    values = np.asarray(column)
    distinct = np.unique(values)
    if len(distinct) <= num_bins or not np.issubdtype(values.dtype, np.floating):
        # bools, classes (hair_color, beard_style: indices, not quantities) and few-valued floats

        def encode_discrete(x) -> np.ndarray:
            x = np.asarray(x)
            codes = np.searchsorted(distinct, x)
            bad = (codes >= len(distinct)) | (distinct[np.minimum(codes, len(distinct) - 1)] != x)
            if bad.any():
                raise ValueError(
                    f"factor {column.name!r} took value {x[bad][0]!r}, unseen in the reference sample; "
                    "raise num_reference"
                )
            return codes

        return encode_discrete, distinct
    values = values.astype(np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, num_bins + 1)[1:-1]))
    codes = np.digitize(values, edges)
    bounds = np.concatenate([[values.min()], edges, [values.max()]])
    medians = np.array([
        np.median(values[codes == b]) if (codes == b).any() else (bounds[b] + bounds[b + 1]) / 2
        for b in range(len(edges) + 1)
    ])
    return (lambda x: np.digitize(np.asarray(x, dtype=np.float64), edges)), medians


def draw_factors(gt: GroundTruth, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` factor codes from `gt.sample_factors`, checked for shape, type and range: (n, K)."""
    factors = np.asarray(gt.sample_factors(n, rng))
    if factors.shape != (n, gt.num_factors) or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(
            f"GroundTruth.sample_factors({n}) must return ({n}, {gt.num_factors}) integer codes, "
            f"got {factors.dtype} {factors.shape}"
        )
    if (factors < 0).any() or (factors >= np.asarray(gt.factor_sizes)).any():
        raise ValueError(f"GroundTruth.sample_factors returned codes outside [0, size) for sizes {gt.factor_sizes}")
    return factors


def represent_factors(
    represent: Represent, gt: GroundTruth, factors: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The latents of observations of `factors`, checked for shape: (n, num_latents)."""
    latents = np.asarray(represent(gt.observe(factors, rng)), dtype=np.float64)
    if latents.ndim != 2 or len(latents) != len(factors):
        raise ValueError(
            f"represent() must return (n, num_latents) for n={len(factors)} observations, got shape {latents.shape}"
        )
    return latents


def sample_codes(
    represent: Represent, gt: GroundTruth, num_points: int, rng: np.random.Generator, max_batch: int,
    progress: bool, desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """`num_points` i.i.d. (latents, factor codes), drawn in calls of at most `max_batch` observations."""
    latents, factors = [], []
    with tqdm(total=num_points, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_points, max_batch):
            f = draw_factors(gt, min(max_batch, num_points - start), rng)
            latents.append(represent_factors(represent, gt, f, rng))
            factors.append(f)
            bar.update(len(f))
    return np.concatenate(latents), np.concatenate(factors)


def sample_train_test(
    represent: Represent, gt: GroundTruth, num_train: int, num_test: int, rng: np.random.Generator,
    max_batch: int, progress: bool, desc: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(latents_train, factors_train, latents_test, factors_test): two i.i.d. samples, train drawn first."""
    z_train, f_train = sample_codes(represent, gt, num_train, rng, max_batch, progress, f"{desc} train")
    z_test, f_test = sample_codes(represent, gt, num_test, rng, max_batch, progress, f"{desc} test")
    return z_train, f_train, z_test, f_test
