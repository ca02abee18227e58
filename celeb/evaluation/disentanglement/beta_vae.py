"""The β-VAE score (Higgins et al. 2017), as disentanglement_lib defines it.

A training point is a batch of 64 pairs of observations that share the value of one factor; its
feature is the mean |z1 - z2| over the pairs, its label the shared factor. A low-capacity classifier
(logistic regression) predicts the label from the feature; the score is its eval accuracy (10,000
train, 5,000 eval points).

- synthetic (`beta_vae_score`, key `beta_vae`): the exact protocol; pairs are rendered with the
  factor held fixed and every other factor drawn independently.
- fixed (`beta_vae_approx`, key `beta_vae_approx`): an APPROXIMATION on fixed arrays, since real
  photos cannot be re-rendered. A pair "shares a factor" when its rows are drawn from the data set
  to share one attribute's value, so the other attributes do not vary independently of it as they
  would under re-rendering (Male and No_Beard move together), and nuisance factors that no
  attribute names vary freely. Rare attributes (Bald, 2%) are shared by most random pairs anyway,
  which caps how well any representation can score on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from celeb.evaluation.disentanglement.common import accuracy, one_thread
from celeb.seeds import stream_rng
from celeb.evaluation.disentanglement.fixed_data import (check_fixed, draw_sharing, points_per_gather, split_rows,
                                                         value_groups)
from celeb.evaluation.disentanglement.ground_truth import GroundTruth, Represent, draw_factors, represent_factors

Points = tuple[np.ndarray, np.ndarray]  # (features (P, D), the shared factor of each point (P,))


def beta_vae_score(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """β-VAE score (Higgins et al. 2017), exact protocol: {"beta_vae", "beta_vae_train"}."""
    rng = stream_rng(seed, "beta_vae")
    args = (batch_size, rng, max_batch, progress)
    train = _synthetic_points(represent, ground_truth, num_train, *args, "β-VAE train")
    evaluation = _synthetic_points(represent, ground_truth, num_eval, *args, "β-VAE eval")
    return _scores("beta_vae", train, evaluation, seed)


def beta_vae_approx(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, names: Sequence[str] | None = None,
) -> dict[str, float]:
    """APPROXIMATE β-VAE score on fixed data: pairs drawn to share one attribute's value.

    Training points come from the train rows of `split_rows`, eval points from its test rows.
    Returns {"beta_vae_approx", "beta_vae_approx_train"}.
    """
    latents, attributes, _ = check_fixed(latents, attributes, names)
    train_rows, test_rows = split_rows(len(latents), seed)
    rng = stream_rng(seed, "beta_vae_approx")
    train = _fixed_points(latents, attributes, train_rows, num_train, batch_size, rng)
    evaluation = _fixed_points(latents, attributes, test_rows, num_eval, batch_size, rng)
    return _scores("beta_vae_approx", train, evaluation, seed)


def _synthetic_points(
    represent: Represent, gt: GroundTruth, num_points: int, batch_size: int, rng: np.random.Generator,
    max_batch: int, progress: bool, desc: str,
) -> Points:
    """Feature = mean |z1 - z2| over `batch_size` rendered pairs that share one random factor."""
    points_per_call = max(1, max_batch // (2 * batch_size))
    features, labels = [], []
    with tqdm(total=num_points, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_points, points_per_call):
            p = min(points_per_call, num_points - start)
            fixed = rng.integers(gt.num_factors, size=p)
            first = draw_factors(gt, p * batch_size, rng)
            second = draw_factors(gt, p * batch_size, rng)
            rows, cols = np.arange(p * batch_size), np.repeat(fixed, batch_size)
            second[rows, cols] = first[rows, cols]
            z = represent_factors(represent, gt, np.concatenate([first, second]), rng)
            diff = np.abs(z[: p * batch_size] - z[p * batch_size :])
            features.append(diff.reshape(p, batch_size, -1).mean(axis=1))
            labels.append(fixed)
            bar.update(p)
    return np.concatenate(features), np.concatenate(labels)


def _fixed_points(
    latents: np.ndarray, attributes: np.ndarray, pool: np.ndarray, num_points: int, batch_size: int,
    rng: np.random.Generator,
) -> Points:
    """Feature = mean |z1 - z2| over `batch_size` pairs of `pool` rows that share one random attribute's value."""
    groups = value_groups(attributes, pool)
    fixed = rng.integers(attributes.shape[1], size=num_points)
    features = np.empty((num_points, latents.shape[1]))
    step = points_per_gather(batch_size, latents.shape[1])
    for start in range(0, num_points, step):
        f = fixed[start : start + step, None]
        first = pool[rng.integers(len(pool), size=(len(f), batch_size))]
        second = draw_sharing(attributes, groups, f, first, rng)
        features[start : start + step] = np.abs(latents[first] - latents[second]).mean(axis=1)
    return features, fixed


def _scores(key: str, train: Points, evaluation: Points, seed: int) -> dict[str, float]:
    train_accuracy, eval_accuracy = _logistic_accuracies(*train, *evaluation, seed)
    return {key: eval_accuracy, f"{key}_train": train_accuracy}


def _logistic_accuracies(
    train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, seed: int
) -> tuple[float, float]:
    """The β-VAE score's low-capacity classifier. max_iter=1000 (sklearn's default 100 often stops
    before convergence on these features; the model is otherwise disentanglement_lib's)."""
    model = LogisticRegression(max_iter=1000, random_state=seed)
    with one_thread():
        model.fit(train_x, train_y)
    return accuracy(train_y, model.predict(train_x)), accuracy(eval_y, model.predict(eval_x))
