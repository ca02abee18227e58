"""All five disentanglement metrics in one call per setting: `evaluate_synthetic` (the exact protocols
on a GroundTruth) and `evaluate_fixed` (fixed arrays of latents and binary attributes).

Each metric draws from its own seeded stream, so a subset gives the same numbers as the full set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from celeb.evaluation.disentanglement.beta_vae import beta_vae_approx, beta_vae_score
from celeb.evaluation.disentanglement.dci import DCI_ESTIMATORS, dci_fixed, dci_synthetic
from celeb.evaluation.disentanglement.factor_vae import factor_vae_approx, factor_vae_score
from celeb.evaluation.disentanglement.fixed_data import check_fixed, split_rows
from celeb.evaluation.disentanglement.ground_truth import GroundTruth, Represent
from celeb.evaluation.disentanglement.mig import mig_fixed, mig_synthetic
from celeb.evaluation.disentanglement.sap import sap_fixed, sap_synthetic

__all__ = ["DCI_ESTIMATORS", "FIXED_METRICS", "SYNTHETIC_METRICS", "evaluate_fixed", "evaluate_synthetic"]

SYNTHETIC_METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap")
FIXED_METRICS = ("beta_vae_approx", "factor_vae_approx", "mig_fixed", "dci_fixed", "sap_fixed")


def evaluate_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, metrics: Sequence[str] = SYNTHETIC_METRICS, dci_estimator: str = "gbt",
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """All exact-protocol metrics (or the named subset) at disentanglement_lib's defaults.

    `num_eval` is also the test size of DCI and SAP and `num_train` the variance sample of the
    FactorVAE score. `max_batch` caps the observations passed to one `represent` call.
    """
    _check_metrics(metrics, SYNTHETIC_METRICS)
    common = dict(max_batch=max_batch, progress=progress)
    runs = {
        "beta_vae": lambda: beta_vae_score(represent, ground_truth, seed, num_train, num_eval, batch_size, **common),
        "factor_vae": lambda: factor_vae_score(
            represent, ground_truth, seed, num_train, num_eval, batch_size, num_variance_estimate=num_train, **common
        ),
        "mig": lambda: mig_synthetic(represent, ground_truth, seed, num_train, **common),
        "dci": lambda: dci_synthetic(represent, ground_truth, seed, num_train, num_eval, dci_estimator, **common),
        "sap": lambda: sap_synthetic(represent, ground_truth, seed, num_train, num_eval, **common),
    }
    return _run(metrics, runs, "disentanglement (synthetic)", progress)


def evaluate_fixed(
    latents: np.ndarray, attributes: np.ndarray, names: Sequence[str] | None, seed: int, num_train: int = 10_000,
    num_test: int = 5_000, batch_size: int = 64, metrics: Sequence[str] = FIXED_METRICS, dci_estimator: str = "gbt",
    progress: bool = True,
) -> dict[str, float]:
    """All fixed-data metrics (or the named subset) for latents (N, D) and bool attributes (N, K).

    `num_train`/`num_test` cap the rows used for fitting (DCI, SAP); they are also the number of
    β-VAE/FactorVAE approximation points, drawn from the train and test rows respectively.
    """
    _check_metrics(metrics, FIXED_METRICS)
    latents, attributes, names = check_fixed(latents, attributes, names)
    _check_train_rows_vary(attributes, names, seed, num_train, num_test)
    runs = {
        "beta_vae_approx": lambda: beta_vae_approx(latents, attributes, seed, num_train, num_test, batch_size),
        "factor_vae_approx": lambda: factor_vae_approx(latents, attributes, seed, num_train, num_test, batch_size),
        "mig_fixed": lambda: mig_fixed(latents, attributes),
        "dci_fixed": lambda: dci_fixed(
            latents, attributes, seed, num_train, num_test, dci_estimator, progress=progress
        ),
        "sap_fixed": lambda: sap_fixed(latents, attributes, seed, num_train, num_test, progress=progress),
    }
    return _run(metrics, runs, "disentanglement (fixed)", progress)


def _run(metrics: Sequence[str], runs: dict, desc: str, progress: bool) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name in tqdm(metrics, desc=desc, disable=not progress):
        scores.update(runs[name]())
    return scores


def _check_train_rows_vary(
    attributes: np.ndarray, names: list[str], seed: int, num_train: int, num_test: int
) -> None:
    """A fitted metric cannot learn an attribute whose train rows all take one value."""
    train, _ = split_rows(len(attributes), seed, num_train, num_test)
    constant = [n for n, col in zip(names, attributes[train].T) if col.all() or not col.any()]
    if constant:
        raise ValueError(f"attribute(s) {constant} take one value in every train row; use more rows or drop them")


def _check_metrics(metrics: Sequence[str], known: tuple[str, ...]) -> None:
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {known}")
