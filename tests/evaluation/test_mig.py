"""MIG: known answers in both settings; duplicated factors and a rotation bring it down."""

import numpy as np

from celeb.evaluation.disentanglement.ground_truth import grid_ground_truth
from celeb.evaluation.disentanglement.mig import mig_synthetic

KEYS = {"synthetic": "mig", "fixed": "mig_fixed"}


def test_true_factors_score_high_and_noise_low(shared_known_answer):
    shared_known_answer(KEYS)


def test_duplicates_lower_mig(synthetic_scores, fixed_scores):
    true, dup = synthetic_scores["true"], synthetic_scores["duplicate"]
    assert dup["mig"] < 0.1 < 0.9 < true["mig"]
    true, dup = fixed_scores["true"], fixed_scores["duplicate"]
    assert dup["mig_fixed"] < 0.1 and true["mig_fixed"] > 0.9


def test_synthetic_rotation_entangles():
    gt = grid_ground_truth((2, 2, 3))
    rotation = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))[0]
    # = evaluate_synthetic(..., 0, 400, 200, metrics=("mig", "dci"))["mig"]: each metric has its own stream
    scores = mig_synthetic(lambda x: x @ rotation, gt, 0, 400, progress=False)
    assert scores["mig"] < 0.5

