"""Both settings' suites: keys kept apart, the seeded split, seeds and per-metric streams, input
errors, and the fixed setting on real CelebA attributes."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celeb.data.schema import ATTR_FILE
from celeb.evaluation.disentanglement.dci import dci_fixed
from celeb.evaluation.disentanglement.fixed_data import split_rows
from celeb.evaluation.disentanglement.ground_truth import grid_ground_truth
from celeb.evaluation.disentanglement.suite import evaluate_fixed, evaluate_synthetic

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "celeba-annotations"


def test_fixed_keys_are_apart_from_synthetic(fixed_scores, synthetic_scores):
    assert not set(fixed_scores["true"]) & set(synthetic_scores["true"])
    assert {"beta_vae_approx", "factor_vae_approx", "mig_fixed", "sap_fixed"} <= set(fixed_scores["true"])


def test_fixed_split_is_seeded_and_disjoint():
    train, test = split_rows(100, seed=1)
    assert len(train) == 67 and len(test) == 33 and not set(train) & set(test)
    again, _ = split_rows(100, seed=1)
    other, _ = split_rows(100, seed=2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    train, test = split_rows(100_000, seed=0, num_train=10_000, num_test=5_000)
    assert len(train) == 10_000 and len(test) == 5_000


def test_fixed_on_real_celeba_attributes(fixed_small):
    """Real attributes are imbalanced and correlated: true copies still beat noise and duplicates."""
    path = SHARED / "first20000" / ATTR_FILE
    if not path.exists():
        pytest.skip(f"{path} not present")
    table = pd.read_csv(path, sep=r"\s+", skiprows=2, header=None, index_col=0, nrows=4000)
    header = path.read_text().splitlines()[1].split()
    names = ["Smiling", "Male", "Eyeglasses", "Blond_Hair", "Wearing_Hat", "Bangs", "Black_Hair", "Wavy_Hair"]
    attributes = table.to_numpy()[:, [header.index(n) for n in names]] > 0
    rng = np.random.default_rng(0)
    true = attributes + 0.05 * rng.standard_normal(attributes.shape)
    kwargs = fixed_small
    scores = {
        "true": evaluate_fixed(true, attributes, names, 0, **kwargs),
        "noise": evaluate_fixed(rng.standard_normal(true.shape), attributes, names, 0, **kwargs),
        "duplicate": evaluate_fixed(np.concatenate([true, true[:, ::-1]], axis=1), attributes, names, 0, **kwargs),
    }
    assert scores["true"]["mig_fixed"] > 0.9 and scores["noise"]["mig_fixed"] < 0.05
    assert scores["true"]["beta_vae_approx"] > 0.8 > 0.3 > scores["noise"]["beta_vae_approx"]
    assert scores["true"]["factor_vae_approx"] > 0.8 > 0.3 > scores["noise"]["factor_vae_approx"]
    assert scores["duplicate"]["mig_fixed"] < 0.05 and scores["duplicate"]["sap_fixed"] < 0.05


def test_same_seed_same_numbers_and_streams_are_per_metric(fixed_data):
    gt = grid_ground_truth((2, 3, 2))

    def represent(x):  # deterministic, so only the metrics' own randomness matters
        return np.tanh(x @ np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.1], [0.0, 0.5, 1.0]]))

    kwargs = dict(num_train=200, num_eval=100, dci_estimator="hist", progress=False)
    first = evaluate_synthetic(represent, gt, seed=5, **kwargs)
    assert evaluate_synthetic(represent, gt, seed=5, **kwargs) == first
    other = evaluate_synthetic(represent, gt, seed=6, **kwargs)
    assert any(other[k] != first[k] for k in first)
    alone = evaluate_synthetic(represent, gt, seed=5, metrics=("sap",), **kwargs)
    assert alone["sap"] == first["sap"]

    latents, attributes = fixed_data("permuted", n=450, k=3)
    latents = latents + np.random.default_rng(1).standard_normal(latents.shape)
    fixed_kwargs = dict(num_train=300, num_test=150, progress=False)
    a = evaluate_fixed(latents, attributes, None, 3, **fixed_kwargs)
    assert evaluate_fixed(latents, attributes, None, 3, **fixed_kwargs) == a
    b = evaluate_fixed(latents, attributes, None, 4, **fixed_kwargs)
    assert any(a[k] != b[k] for k in a)


def test_fixed_input_errors(fixed_data):
    latents, attributes = fixed_data("true", n=200, k=3)
    with pytest.raises(ValueError, match="attributes > 0"):
        evaluate_fixed(latents, np.where(attributes, 1, -1), None, 0, progress=False)
    constant = attributes.copy()
    constant[:, 1] = False
    with pytest.raises(ValueError, match=r"\['Bald'\] take one value"):
        evaluate_fixed(latents, constant, ["Smiling", "Bald", "Male"], 0, progress=False)
    with pytest.raises(ValueError, match="same N"):
        evaluate_fixed(latents[:10], attributes, None, 0, progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_fixed(latents, attributes, None, 0, metrics=("mig",), progress=False)
    with pytest.raises(ValueError, match="unknown DCI estimator"):
        dci_fixed(latents, attributes, 0, estimator="xgb", progress=False)
