"""Helpers several disentanglement metrics share: the score of a fitted
classifier (plain or balanced accuracy), and single-threaded sklearn."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from threadpoolctl import threadpool_limits

Score = Callable[[np.ndarray, np.ndarray], float]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The fraction of predictions that are right."""
    return float(np.mean(y_true == y_pred))


def classifier_score(balanced: bool) -> Score:
    """Balanced accuracy for the fixed setting's imbalanced attributes, plain accuracy otherwise."""
    return balanced_accuracy_score if balanced else accuracy


def one_thread() -> threadpool_limits:
    """Run sklearn single-threaded: trials share machines, and oversubscribed OpenMP threads made
    HistGradientBoosting 40x slower in our measurements (2 cores, load 9)."""
    return threadpool_limits(limits=1)
