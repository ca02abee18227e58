"""Known answers for the disentanglement tests: toy representations of a grid ground truth and of
fixed attribute arrays, and every metric's scores on them (computed once, shared by the metric files).

The true factors (plus a little noise) score high on every metric, pure noise scores near 0 (near
chance for the classifier scores), duplicated factors bring MIG and SAP down, and a permutation with
rescaling of the true factors keeps every score high. Point counts are small so the files run in
seconds; the benchmark measures the defaults.
"""

from __future__ import annotations

import numpy as np
import pytest

from celeb.evaluation.disentanglement.ground_truth import grid_ground_truth
from celeb.evaluation.disentanglement.suite import evaluate_fixed, evaluate_synthetic

# DCI fits 100 boosted trees per factor (and per class), so it gets its own, smaller tests.
SMALL = dict(num_train=1000, num_eval=500, metrics=("beta_vae", "factor_vae", "mig", "sap"), progress=False)
SIZES = (2, 2, 3, 2, 4, 2, 2, 3)  # 8 factors: chance for the β-VAE/FactorVAE classifiers is 1/8
FIXED_SMALL = dict(
    num_train=2000, num_test=1000, metrics=("beta_vae_approx", "factor_vae_approx", "mig_fixed", "sap_fixed"),
    progress=False,
)
KINDS = ("true", "noise", "duplicate", "permuted")
SHARED_BOUNDS = {"true": (0.9, 1.0 + 1e-9), "permuted": (0.9, 1.0 + 1e-9), "noise": (0.0, 0.2)}


def toy_representation(kind: str, seed: int = 0):
    """A representation of the toy observations (factor codes scaled to [0, 1])."""
    rng = np.random.default_rng(seed)

    def represent(x):
        d = x.shape[1]
        noise = 0.02 * rng.standard_normal(x.shape)
        if kind == "true":
            return x + noise
        if kind == "noise":
            return rng.standard_normal(x.shape)
        if kind == "duplicate":
            return np.concatenate([x + noise, x + 0.02 * rng.standard_normal(x.shape)], axis=1)
        if kind == "permuted":
            return (x + noise)[:, ::-1] * np.delete(np.linspace(-3, 3, d + 1), d // 2)
        raise ValueError(kind)

    return represent


def toy_fixed_data(kind: str, n: int = 3000, k: int = 8, seed: int = 0):
    """(latents, bool attributes) of `n` rows with `k` imbalanced attributes, latents of one `kind`."""
    rng = np.random.default_rng(seed)
    attributes = rng.random((n, k)) < np.linspace(0.2, 0.5, k)
    a = attributes.astype(float)
    noise = 0.05 * rng.standard_normal((n, k))
    latents = {
        "true": a + noise,
        "noise": rng.standard_normal((n, k)),
        "duplicate": np.concatenate([a + noise, a + 0.05 * rng.standard_normal((n, k))], axis=1),
        "permuted": ((a + noise) * np.delete(np.linspace(-3, 3, k + 1), k // 2))[:, ::-1],
    }[kind]
    return latents, attributes


@pytest.fixture(scope="session")
def represent_kind():
    """toy_representation, for tests that build their own representation of one kind."""
    return toy_representation


@pytest.fixture(scope="session")
def fixed_data():
    """toy_fixed_data, for tests that build their own fixed arrays."""
    return toy_fixed_data


@pytest.fixture(scope="session")
def fixed_small() -> dict:
    """evaluate_fixed's small settings (every metric but DCI) of the shared fixed scores."""
    return dict(FIXED_SMALL)


@pytest.fixture(scope="session")
def synthetic_scores() -> dict[str, dict[str, float]]:
    gt = grid_ground_truth(SIZES)
    return {kind: evaluate_synthetic(toy_representation(kind), gt, seed=0, **SMALL) for kind in KINDS}


@pytest.fixture(scope="session")
def fixed_scores() -> dict[str, dict[str, float]]:
    return {kind: evaluate_fixed(*toy_fixed_data(kind), None, seed=0, **FIXED_SMALL) for kind in KINDS}


@pytest.fixture(params=[(setting, kind) for setting in ("synthetic", "fixed") for kind in SHARED_BOUNDS],
                ids="-".join)
def shared_known_answer(request):
    """A check of one known answer that most metrics share, for one setting and kind of latents: true
    and permuted factors score 0.9 to 1, noise 0 to 0.2. Call it with the metric's key per setting."""
    setting, kind = request.param
    scores = request.getfixturevalue(f"{setting}_scores")[kind]
    low, high = SHARED_BOUNDS[kind]

    def check(keys: dict[str, str]) -> None:
        key = keys[setting]
        assert low <= scores[key] <= high, (key, scores[key])

    return check
