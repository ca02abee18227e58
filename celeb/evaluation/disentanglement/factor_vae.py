"""The FactorVAE score (Kim & Mnih 2018), as disentanglement_lib defines it.

Latents are divided by their std over a global sample (10,000 points), and dims with std < 0.05 are
pruned. A training point is a batch of 64 observations that share the value of one factor: the dim
of least normalised variance over the batch votes for that factor. A majority-vote classifier maps
each dim to the factor it voted for most in training; the score is its eval accuracy.

- synthetic (`factor_vae_score`, key `factor_vae`): the exact protocol; batches are rendered with
  the factor held fixed and every other factor drawn independently.
- fixed (`factor_vae_approx`, key `factor_vae_approx`): an APPROXIMATION on fixed arrays, since
  real photos cannot be re-rendered. A batch "shares a factor" when its rows are drawn from the
  data set to share one attribute's value, with the same caveats as the β-VAE approximation
  (correlated attributes move together, unnamed nuisance factors vary freely, rare attributes are
  shared by chance). Global variances come from the train rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from celeb.seeds import stream_rng
from celeb.evaluation.disentanglement.fixed_data import (check_fixed, draw_sharing, points_per_gather, split_rows,
                                                         value_groups)
from celeb.evaluation.disentanglement.ground_truth import (GroundTruth, Represent, draw_factors, represent_factors,
                                                           sample_codes)


def factor_vae_score(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """FactorVAE score (Kim & Mnih 2018), exact protocol.

    Returns {"factor_vae", "factor_vae_train", "factor_vae_active_dims"}.
    """
    rng = stream_rng(seed, "factor_vae")
    z, _ = sample_codes(represent, ground_truth, num_variance_estimate, rng, max_batch, progress, "FactorVAE variance")
    global_var, active = _variance_and_active(z, prune_threshold)
    if not active.any():
        return _no_active_dims("factor_vae")
    args = (batch_size, rng, global_var, active, max_batch, progress)
    train_votes = _synthetic_votes(represent, ground_truth, num_train, *args, "FactorVAE train")
    eval_votes = _synthetic_votes(represent, ground_truth, num_eval, *args, "FactorVAE eval")
    return _scores("factor_vae", train_votes, eval_votes, active)


def factor_vae_approx(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, prune_threshold: float = 0.05, names: Sequence[str] | None = None,
) -> dict[str, float]:
    """APPROXIMATE FactorVAE score on fixed data: each batch shares one attribute's value.

    Global variances come from the train rows. Returns {"factor_vae_approx",
    "factor_vae_approx_train", "factor_vae_approx_active_dims"}.
    """
    latents, attributes, _ = check_fixed(latents, attributes, names)
    train_rows, test_rows = split_rows(len(latents), seed)
    rng = stream_rng(seed, "factor_vae_approx")
    global_var, active = _variance_and_active(latents[train_rows], prune_threshold)
    if not active.any():
        return _no_active_dims("factor_vae_approx")
    args = (batch_size, rng, global_var, active)
    train_votes = _fixed_votes(latents, attributes, train_rows, num_train, *args)
    eval_votes = _fixed_votes(latents, attributes, test_rows, num_eval, *args)
    return _scores("factor_vae_approx", train_votes, eval_votes, active)


def _synthetic_votes(
    represent: Represent, gt: GroundTruth, num_points: int, batch_size: int, rng: np.random.Generator,
    global_var: np.ndarray, active: np.ndarray, max_batch: int, progress: bool, desc: str,
) -> np.ndarray:
    """(K, D) counts: how often dim d had the least normalised variance when factor k was fixed."""
    votes = np.zeros((gt.num_factors, len(global_var)), dtype=np.int64)
    points_per_call = max(1, max_batch // batch_size)
    with tqdm(total=num_points, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_points, points_per_call):
            p = min(points_per_call, num_points - start)
            fixed = rng.integers(gt.num_factors, size=p)
            factors = draw_factors(gt, p * batch_size, rng).reshape(p, batch_size, -1)
            rows = np.arange(p)
            factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]  # every row shares row 0's value
            z = represent_factors(represent, gt, factors.reshape(p * batch_size, -1), rng)
            local_var = z.reshape(p, batch_size, -1).var(axis=1, ddof=1)
            _add_votes(votes, fixed, local_var, global_var, active)
            bar.update(p)
    return votes


def _fixed_votes(
    latents: np.ndarray, attributes: np.ndarray, pool: np.ndarray, num_points: int, batch_size: int,
    rng: np.random.Generator, global_var: np.ndarray, active: np.ndarray,
) -> np.ndarray:
    """(K, D) votes of batches of `pool` rows that share the anchor row's value of one random attribute."""
    groups = value_groups(attributes, pool)
    fixed = rng.integers(attributes.shape[1], size=num_points)
    anchors = pool[rng.integers(len(pool), size=num_points)]
    votes = np.zeros((attributes.shape[1], latents.shape[1]), dtype=np.int64)
    step = points_per_gather(batch_size, latents.shape[1])
    for start in range(0, num_points, step):
        f, a = fixed[start : start + step], anchors[start : start + step]
        rest = draw_sharing(attributes, groups, f[:, None], np.repeat(a[:, None], batch_size - 1, axis=1), rng)
        batch = np.concatenate([a[:, None], rest], axis=1)
        _add_votes(votes, f, latents[batch].var(axis=1, ddof=1), global_var, active)
    return votes


def _variance_and_active(sample: np.ndarray, prune_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Each dim's variance over the global sample, and whether its std reaches `prune_threshold`."""
    global_var = sample.var(axis=0, ddof=1)
    return global_var, np.sqrt(global_var) >= prune_threshold


def _add_votes(
    votes: np.ndarray, fixed: np.ndarray, local_var: np.ndarray, global_var: np.ndarray, active: np.ndarray
) -> None:
    """Each batch's active dim of least normalised variance votes for the batch's fixed factor."""
    active_dims = np.flatnonzero(active)
    chosen = active_dims[np.argmin(local_var[:, active] / global_var[active], axis=1)]
    np.add.at(votes, (fixed, chosen), 1)


def _no_active_dims(key: str) -> dict[str, float]:
    return {key: 0.0, f"{key}_train": 0.0, f"{key}_active_dims": 0.0}


def _scores(key: str, train_votes: np.ndarray, eval_votes: np.ndarray, active: np.ndarray) -> dict[str, float]:
    train, evaluation = _majority_vote_accuracies(train_votes, eval_votes)
    return {key: evaluation, f"{key}_train": train, f"{key}_active_dims": float(active.sum())}


def _majority_vote_accuracies(train_votes: np.ndarray, eval_votes: np.ndarray) -> tuple[float, float]:
    """FactorVAE's classifier: each latent dim predicts the factor it voted for most in training."""
    classifier = np.argmax(train_votes, axis=0)
    dims = np.arange(train_votes.shape[1])
    train = train_votes[classifier, dims].sum() / max(train_votes.sum(), 1)
    evaluation = eval_votes[classifier, dims].sum() / max(eval_votes.sum(), 1)
    return float(train), float(evaluation)
