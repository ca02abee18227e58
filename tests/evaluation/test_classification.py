"""Attribute metrics against sklearn, and their edge cases (constant, perfect, one-class columns)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from celeb.data.schema import ATTRIBUTE_NAMES
from celeb.evaluation.classification import attribute_metrics, majority_baseline


def _random_problem(n: int = 300, a: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.05, 0.9, size=a)
    targets = rng.random((n, a)) < prevalence
    logits = rng.normal(size=(n, a)) + 1.5 * targets - 0.5  # informative but imperfect
    logits[:, 0] = np.round(logits[:, 0])  # some ties, which AUROC must rank as averages
    return logits, targets


def test_matches_sklearn_on_random_data():
    logits, targets = _random_problem()
    m = attribute_metrics(logits, targets)
    accs, baccs, aucs = [], [], []
    for i, name in enumerate(ATTRIBUTE_NAMES):
        pred = logits[:, i] > 0
        accs.append((pred == targets[:, i]).mean())
        baccs.append(balanced_accuracy_score(targets[:, i], pred))
        aucs.append(roc_auc_score(targets[:, i], logits[:, i]))
        assert m[f"acc/{name}"] == pytest.approx(accs[-1])
        assert m[f"bacc/{name}"] == pytest.approx(baccs[-1])
        assert m[f"auroc/{name}"] == pytest.approx(aucs[-1])
    assert m["accuracy"] == pytest.approx(np.mean(accs))
    assert m["balanced_accuracy"] == pytest.approx(np.mean(baccs))
    assert m["auroc"] == pytest.approx(np.mean(aucs))
    assert len(m) == 3 + 3 * 40 and all(isinstance(v, float) for v in m.values())


def test_torch_inputs_match_numpy():
    logits, targets = _random_problem(seed=1)
    expected = attribute_metrics(logits, targets)
    got = attribute_metrics(torch.from_numpy(logits), torch.from_numpy(targets).float())
    assert got == pytest.approx(expected)
    bf16 = attribute_metrics(torch.from_numpy(logits).bfloat16(), torch.from_numpy(targets))
    assert bf16["auroc"] == pytest.approx(expected["auroc"], abs=0.01)


@pytest.mark.parametrize("constant", [-3.0, 2.0])
def test_constant_predictor_has_balanced_accuracy_half(constant):
    _, targets = _random_problem(seed=2)
    m = attribute_metrics(np.full(targets.shape, constant), targets)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["auroc"] == pytest.approx(0.5)
    expected_acc = targets.mean(0) if constant > 0 else 1 - targets.mean(0)
    assert m["accuracy"] == pytest.approx(expected_acc.mean())


def test_perfect_predictor_scores_one():
    _, targets = _random_problem(seed=3)
    m = attribute_metrics(np.where(targets, 4.0, -4.0), targets)
    assert m["accuracy"] == m["balanced_accuracy"] == m["auroc"] == 1.0
    inverted = attribute_metrics(np.where(targets, -4.0, 4.0), targets)
    assert inverted["accuracy"] == inverted["balanced_accuracy"] == inverted["auroc"] == 0.0


def test_one_class_attribute_has_no_auroc():
    logits, targets = _random_problem(n=50, a=3, seed=4)
    targets[:, 1] = True
    names = ["a", "b", "c"]
    m = attribute_metrics(logits, targets, names)
    assert np.isnan(m["auroc/b"])
    assert m["auroc"] == pytest.approx(np.mean([m["auroc/a"], m["auroc/c"]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has a class y_true lacks
        assert m["bacc/b"] == pytest.approx(balanced_accuracy_score(targets[:, 1], logits[:, 1] > 0))


def test_majority_baseline():
    _, targets = _random_problem(seed=5)
    base = majority_baseline(targets)
    assert base.keys() == attribute_metrics(np.zeros(targets.shape), targets).keys()
    p = targets.mean(0)
    assert base["accuracy"] == pytest.approx(np.maximum(p, 1 - p).mean())
    assert base["balanced_accuracy"] == pytest.approx(0.5)
    assert base["auroc"] == pytest.approx(0.5)
    for i, name in enumerate(ATTRIBUTE_NAMES):
        assert base[f"acc/{name}"] == pytest.approx(max(p[i], 1 - p[i]))


def test_bad_input_is_a_clear_error():
    logits, targets = _random_problem(n=10)
    with pytest.raises(ValueError, match="must both be"):
        attribute_metrics(logits[:, :5], targets)
    with pytest.raises(ValueError, match="40 attribute columns but 2 names"):
        attribute_metrics(logits, targets, names=["a", "b"])
    with pytest.raises(ValueError, match="-1/1"):
        attribute_metrics(logits, np.where(targets, 1, -1))
    with pytest.raises(ValueError, match="no rows"):
        attribute_metrics(logits[:0], targets[:0])
