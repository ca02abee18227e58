"""SAP, the Separated Attribute Predictability score (Kumar et al. 2018), discrete-factor variant, as
disentanglement_lib defines it.

For each (latent, factor) a LinearSVC(C=0.01, class_weight="balanced") is fit on that one latent;
the score matrix holds their test accuracies, and SAP is the mean over factors of the gap between
the two best latents (10,000 train, 5,000 test points). Its ceiling is 1 minus the accuracy an
uninformative latent gets, so about 0.5 for balanced binary factors, not 1.

- synthetic (`sap_synthetic`, key `sap`): on i.i.d. samples of the ground truth.
- fixed (`sap_fixed`, key `sap_fixed`): on the seeded train/test split of the rows. The LinearSVC
  already weights classes; the score matrix holds balanced accuracy, because attributes are
  imbalanced and plain accuracy would reward predicting the majority class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from celeb.evaluation.disentanglement.common import classifier_score
from celeb.seeds import stream_rng
from celeb.evaluation.disentanglement.fixed_data import check_fixed, split_arrays
from celeb.evaluation.disentanglement.ground_truth import GroundTruth, Represent, sample_train_test


def sap_matrix(
    latents_train: np.ndarray,
    factors_train: np.ndarray,
    latents_test: np.ndarray,
    factors_test: np.ndarray,
    balanced: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """(D, K) test accuracy of LinearSVC(C=0.01, class_weight="balanced") on one latent per factor."""
    score = classifier_score(balanced)
    num_codes, num_factors = latents_train.shape[1], factors_train.shape[1]
    matrix = np.zeros((num_codes, num_factors))
    for d in tqdm(range(num_codes), desc="SAP", disable=not progress, leave=False):
        for k in range(num_factors):
            model = LinearSVC(C=0.01, class_weight="balanced")
            model.fit(latents_train[:, d : d + 1], factors_train[:, k])
            matrix[d, k] = score(factors_test[:, k], model.predict(latents_test[:, d : d + 1]))
    return matrix


def top_two_gap(matrix: np.ndarray) -> float:
    """Mean over columns of the gap between the two largest entries."""
    ordered = np.sort(matrix, axis=0)
    return float(np.mean(ordered[-1] - ordered[-2]))


def sap_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_test: int = 5_000,
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """SAP score (Kumar et al. 2018), discrete-factor variant: {"sap"}."""
    rng = stream_rng(seed, "sap")
    data = sample_train_test(represent, ground_truth, num_train, num_test, rng, max_batch, progress, "SAP")
    return {"sap": top_two_gap(sap_matrix(*data, balanced=False, progress=progress))}


def sap_fixed(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_test: int = 5_000,
    names: Sequence[str] | None = None, progress: bool = True,
) -> dict[str, float]:
    """SAP with balanced accuracy as the score matrix (an uninformative latent scores 0.5): {"sap_fixed"}."""
    latents, attributes, _ = check_fixed(latents, attributes, names)
    data = split_arrays(latents, attributes, seed, num_train, num_test)
    return {"sap_fixed": top_two_gap(sap_matrix(*data, balanced=True, progress=progress))}
