"""DCI: known answers in both settings (both estimators), known importance matrices, and the fast
estimator's agreement with the faithful one."""

import numpy as np
import pytest

from celeb.evaluation.disentanglement.dci import (completeness, dci_fixed, dci_importance, dci_synthetic,
                                                  disentanglement)
from celeb.evaluation.disentanglement.ground_truth import grid_ground_truth

DCI_SMALL = dict(num_train=400, num_test=200, progress=False)
DCI_KEYS = ("dci_disentanglement", "dci_completeness", "dci_informativeness")


@pytest.mark.parametrize("estimator", ["hist", "gbt"])
def test_synthetic_dci_known_answers(estimator, represent_kind):
    gt = grid_ground_truth((2, 2, 3))
    scores = {
        kind: dci_synthetic(represent_kind(kind), gt, 0, estimator=estimator, **DCI_SMALL)
        for kind in ("true", "permuted", "noise")
    }
    for kind in ("true", "permuted"):
        for key in DCI_KEYS:
            assert 0.9 <= scores[kind][key] <= 1.0 + 1e-9, (kind, key, scores[kind][key])
    assert scores["noise"]["dci_disentanglement"] <= 0.2 and scores["noise"]["dci_completeness"] <= 0.2
    assert scores["noise"]["dci_informativeness"] < np.mean([1 / 2, 1 / 2, 1 / 3]) + 0.1  # ~ guessing


def test_synthetic_rotation_entangles():
    gt = grid_ground_truth((2, 2, 3))
    rotation = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))[0]
    # = evaluate_synthetic(..., 0, 400, 200, metrics=("mig", "dci"), dci_estimator="hist"): one stream per metric
    scores = dci_synthetic(lambda x: x @ rotation, gt, 0, 400, 200, "hist", progress=False)
    assert scores["dci_disentanglement"] < 0.6
    assert scores["dci_informativeness"] > 0.9  # the information is all there, just mixed


def test_hist_importance_agrees_with_gbt():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((600, 5))
    y = np.stack([z[:, 2] > 0, z[:, 0] + 0.3 * z[:, 4] > 0], axis=1)
    gbt, _, _ = dci_importance(z[:400], y[:400], z[400:], y[400:], 0, "gbt", progress=False)
    hist, _, _ = dci_importance(z[:400], y[:400], z[400:], y[400:], 0, "hist", progress=False)
    assert np.allclose(hist.sum(axis=0), 1.0)
    assert list(hist.argmax(axis=0)) == list(gbt.argmax(axis=0)) == [2, 0]
    assert hist[4, 1] > hist[1, 1] and hist[4, 1] > hist[3, 1]  # the secondary latent is second


def test_fixed_dci_known_answers(fixed_data):
    """Class-balanced boosting (the faithful GradientBoostingClassifier) on imbalanced attributes."""
    scores = {}
    for kind in ("true", "permuted", "noise"):
        latents, attributes = fixed_data(kind, n=900, k=3)
        scores[kind] = dci_fixed(latents, attributes, 0, num_train=600, num_test=300, progress=False)
    for kind in ("true", "permuted"):
        for key in ("dci_disentanglement_fixed", "dci_completeness_fixed", "dci_informativeness_fixed"):
            assert 0.9 <= scores[kind][key] <= 1.0 + 1e-9, (kind, key, scores[kind][key])
    assert scores["noise"]["dci_disentanglement_fixed"] <= 0.2 and scores["noise"]["dci_completeness_fixed"] <= 0.2
    assert abs(scores["noise"]["dci_informativeness_fixed"] - 0.5) < 0.07  # balanced accuracy of guessing


def test_dci_scores_of_known_importance_matrices():
    assert disentanglement(np.eye(3)) == pytest.approx(1.0) and completeness(np.eye(3)) == pytest.approx(1.0)
    assert disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-9)
    # two latents share factor 0: each latent is pure, factor 0 is spread over 2 of 3 latents
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert disentanglement(r) == pytest.approx(1.0)
    assert completeness(r) == pytest.approx(2 / 3 * (1 - np.log(2) / np.log(3)) + 1 / 3)

