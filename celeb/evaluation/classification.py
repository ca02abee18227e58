"""Multi-label classification metrics for the 40 attributes: accuracy, balanced accuracy, AUROC.

All metrics are computed per attribute (column) and averaged with equal weight per attribute.
Predictions are logits > 0 (probability > 0.5). AUROC uses the rank-sum (Mann-Whitney U) form,
vectorised over attributes; ties get average ranks, so a constant score gives 0.5.

An attribute whose targets hold only one class has no AUROC: its "auroc/<name>" is NaN and it is
left out of the mean. Its balanced accuracy is the recall of the one class present (as in
sklearn's balanced_accuracy_score).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from celeb.data.schema import ATTRIBUTE_NAMES


def _as_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()  # .float(): numpy has no bfloat16
    return np.asarray(a)


def _as_bool_targets(targets: np.ndarray | torch.Tensor) -> np.ndarray:
    t = _as_numpy(targets)
    if t.dtype != bool:
        if not np.isin(t, (0, 1)).all():
            raise ValueError("targets must be bool or 0/1 (CelebA's -1/1 labels: pass labels > 0)")
        t = t.astype(bool)
    return t


def _check_shapes(scores: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> None:
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be (N, attributes); got {scores.shape} and {targets.shape}"
        )
    if scores.shape[1] != len(names):
        raise ValueError(f"{scores.shape[1]} attribute columns but {len(names)} names")
    if scores.shape[0] == 0:
        raise ValueError("no rows to score")


def auroc_per_column(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUROC of each column of `scores` against bool `targets`; NaN where a column has one class."""
    n_pos = targets.sum(0).astype(np.float64)
    n_neg = len(targets) - n_pos
    ranks = rankdata(scores, axis=0)  # average ranks for ties
    rank_sum_pos = np.where(targets, ranks, 0.0).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def attribute_metrics(
    logits: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    names: Sequence[str] = ATTRIBUTE_NAMES,
) -> dict[str, float]:
    """Mean "accuracy", "balanced_accuracy" and "auroc" over attributes, plus per-attribute
    "acc/<name>", "bacc/<name>" and "auroc/<name>"."""
    scores = _as_numpy(logits).astype(np.float64)
    t = _as_bool_targets(targets)
    _check_shapes(scores, t, names)

    pred = scores > 0
    acc = (pred == t).mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = (pred & t).sum(0) / t.sum(0)
        tnr = (~pred & ~t).sum(0) / (~t).sum(0)
    bacc = np.nanmean(np.stack([tpr, tnr]), axis=0)  # a class absent from targets has no recall
    auroc = auroc_per_column(scores, t)

    result = {
        "accuracy": float(acc.mean()),
        "balanced_accuracy": float(bacc.mean()),
        "auroc": float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan"),
    }
    for i, name in enumerate(names):
        result[f"acc/{name}"] = float(acc[i])
        result[f"bacc/{name}"] = float(bacc[i])
        result[f"auroc/{name}"] = float(auroc[i])
    return result


def majority_baseline(
    targets: np.ndarray | torch.Tensor, names: Sequence[str] = ATTRIBUTE_NAMES
) -> dict[str, float]:
    """attribute_metrics for always predicting each attribute's majority class in `targets`
    (positive on a tie). Its balanced accuracy is 0.5 and its AUROC 0.5 by construction."""
    t = _as_bool_targets(targets)
    majority_positive = t.mean(0) >= 0.5
    constant_logits = np.broadcast_to(np.where(majority_positive, 1.0, -1.0), t.shape)
    return attribute_metrics(constant_logits, t, names)
