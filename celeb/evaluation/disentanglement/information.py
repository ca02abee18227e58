"""Discrete information measures, as disentanglement_lib computes them for MIG: equal-width histogram
codes of latents, mutual information between code and factor columns, and factor entropies (nats)."""

from __future__ import annotations

import numpy as np


def histogram_discretize(latents: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column cut into `num_bins` equal-width bins over its own range: (N, D) ints in [0, num_bins)."""
    latents = np.asarray(latents, dtype=np.float64)
    codes = np.empty(latents.shape, dtype=np.int64)
    for d in range(latents.shape[1]):
        edges = np.histogram_bin_edges(latents[:, d], bins=num_bins)
        codes[:, d] = np.digitize(latents[:, d], edges[:-1]) - 1
    return codes


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information in nats between each code column and each factor column: (D, K)."""
    codes = _dense_labels(codes)
    factors = _dense_labels(factors)
    n, num_codes = codes.shape
    code_card = int(codes.max()) + 1
    mi = np.zeros((num_codes, factors.shape[1]))
    offsets = np.arange(num_codes) * code_card
    for k in range(factors.shape[1]):
        card = int(factors[:, k].max()) + 1
        joint_index = (codes + offsets) * card + factors[:, k : k + 1]
        joint = np.bincount(joint_index.ravel(), minlength=num_codes * code_card * card)
        joint = joint.reshape(num_codes, code_card, card) / n
        p_code = joint.sum(axis=2, keepdims=True)
        p_factor = joint.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = joint * np.log(joint / (p_code * p_factor))
        mi[:, k] = np.nansum(terms, axis=(1, 2))
    return np.maximum(mi, 0.0)


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy in nats of each factor column: (K,)."""
    factors = _dense_labels(factors)
    entropy = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        p = np.bincount(factors[:, k]) / len(factors)
        p = p[p > 0]
        entropy[k] = -(p * np.log(p)).sum()
    return entropy


def _dense_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel each column to 0..n_values-1 (int64), so bincount-based counting works."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D array (rows, columns), got shape {labels.shape}")
    dense = np.empty(labels.shape, dtype=np.int64)
    for j in range(labels.shape[1]):
        dense[:, j] = np.unique(labels[:, j], return_inverse=True)[1].ravel()
    return dense
