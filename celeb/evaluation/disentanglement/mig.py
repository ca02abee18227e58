"""MIG, the Mutual Information Gap (Chen et al. 2018), as disentanglement_lib defines it.

Latents are discretised into 20 equal-width histogram bins; each bin code's mutual information
with each factor is measured, and per factor the gap between the two most informative latents is
divided by the factor's entropy. MIG is that gap averaged over factors (10,000 points).

- synthetic (`mig_synthetic`, key `mig`): on i.i.d. samples of the ground truth.
- fixed (`mig_fixed`, key `mig_fixed`): on all given rows of latents and binary attributes; the
  definition needs no change (it already divides by each attribute's entropy), and as nothing is
  fitted, there is no train/test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from celeb.seeds import stream_rng
from celeb.evaluation.disentanglement.fixed_data import check_fixed
from celeb.evaluation.disentanglement.ground_truth import GroundTruth, Represent, sample_codes
from celeb.evaluation.disentanglement.information import (discrete_entropy, discrete_mutual_info,
                                                          histogram_discretize)


def mutual_information_gap(latents: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per factor: (top MI - second MI) / H(factor), latents discretised into `num_bins` bins: (K,)."""
    if latents.shape[1] < 2:
        raise ValueError("MIG needs at least 2 latent dimensions")
    mi = discrete_mutual_info(histogram_discretize(latents, num_bins), factors)
    entropy = discrete_entropy(factors)
    top_two = np.sort(mi, axis=0)[::-1][:2]
    return (top_two[0] - top_two[1]) / entropy


def mig_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_bins: int = 20,
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """Mutual Information Gap (Chen et al. 2018) on i.i.d. samples: {"mig"}."""
    rng = stream_rng(seed, "mig")
    z, factors = sample_codes(represent, ground_truth, num_train, rng, max_batch, progress, "MIG")
    return {"mig": _mean_gap(z, factors, num_bins)}


def mig_fixed(
    latents: np.ndarray, attributes: np.ndarray, num_bins: int = 20, names: Sequence[str] | None = None
) -> dict[str, float]:
    """MIG on all given rows (no fitting, so no split): {"mig_fixed"}."""
    latents, attributes, _ = check_fixed(latents, attributes, names)
    return {"mig_fixed": _mean_gap(latents, attributes, num_bins)}


def _mean_gap(latents: np.ndarray, factors: np.ndarray, num_bins: int) -> float:
    return float(mutual_information_gap(latents, factors, num_bins).mean())
