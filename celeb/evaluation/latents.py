"""One trained conditional VAE's latents, scored and reviewed on one data split.

- `score_latents`: the per-dim table of `celeb.evaluation.dimensions` (KL, activity, MI with each
  attribute, an automatic label) in KL order, and the summary scores the training loop reports every
  evaluation (MIG against the attributes, the active and labelled dim counts).
- `fixed_metrics`: the other fixed-setting disentanglement scores (β-VAE and FactorVAE
  approximations, DCI with the fast estimator, SAP) over the attributes with enough rows of each value.
- `review_latents`: all of that for one model and split, plus the panels of
  `celeb.evaluation.traversal` and, on the synthetic faces, the check of each label against the true
  factors, so the training loop, `celeb review` and `celeb traverse` produce the same views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import Tensor, nn

from celeb.evaluation.dimensions import LABEL_MIN_MI, evaluate_dimensions, label_dimensions, match_true_factors
from celeb.evaluation.disentanglement.mig import mig_fixed
from celeb.evaluation.disentanglement.suite import evaluate_fixed
from celeb.evaluation.traversal import (ACTIVE_DIM_NATS, conditions_of, encode_images, images_as_tensor,
                                        latent_panels, reconstruction_panel)

MIN_CLASS_ROWS = 5  # an attribute needs this many rows of each value to be scored by the fitted metrics


@dataclass
class LatentReview:
    """Everything a reviewer needs about one model's latents on one split.

    `dimensions`: one row per dim (celeb.evaluation.dimensions columns + `label`), in KL order;
    `images`: "traversal", "conditions" (conditional models), "reconstructions", "kl_per_dim";
    `metrics`: MIG against the attributes the model is not conditioned on, the dim counts, and
    (on request) the other fixed-setting disentanglement scores and the true-factor check.
    """

    dimensions: pd.DataFrame
    images: dict[str, Tensor | np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return self.dimensions["label"].tolist()


def score_latents(mu: np.ndarray, logvar_or_kl: np.ndarray, attributes: np.ndarray, names: Sequence[str],
                  min_mi: float = LABEL_MIN_MI) -> tuple[pd.DataFrame, dict[str, float]]:
    """The per-dim table (KL order, with labels) and summary scores of latents against binary attributes.

    Attributes that take one value in every row are left out (no information to measure). The
    label threshold `min_mi` (normalised MI) sits above what noise reaches on a few hundred images.
    Scores: mig_fixed (MIG over the non-constant attributes), labelled_dims (active dims whose best
    attribute reaches `min_mi` normalised MI), active_dims.
    """
    attributes = np.asarray(attributes, dtype=bool)
    varying = attributes.any(axis=0) & ~attributes.all(axis=0)
    kept = [n for n, keep in zip(names, varying) if keep]
    table = evaluate_dimensions(mu, logvar_or_kl, attributes[:, varying], kept, active_threshold=ACTIVE_DIM_NATS)
    table = table.sort_values(["kl", "dim"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.insert(1, "label", label_dimensions(table, min_mi=min_mi))
    scores = {"active_dims": float(table["active"].sum()),
              "labelled_dims": float((table["active"] & (table["best_mi"] >= min_mi)).sum())}
    if len(kept) >= 2 and mu.shape[1] >= 2:
        scores.update(mig_fixed(mu, attributes[:, varying], names=kept))
    return table, scores


def review_latents(model: nn.Module, images: np.ndarray, labels: np.ndarray, attribute_names: Sequence[str],
                   conditions: Sequence[str], num_faces: int = 4, steps: int = 7, span: float = 3.0,
                   include_inactive: bool = True, max_dims: int | None = None,
                   true_factors: pd.DataFrame | None = None, attribute_factors: Mapping[str, str] | None = None,
                   all_metrics: bool = False, seed: int = 0) -> LatentReview:
    """Encode `images` (N, H, W, 3) uint8 with `labels` (N, 40) and build the panels, table and scores.

    The first `num_faces` images are the reference faces. Latents are scored against the
    attributes the model is not conditioned on (the conditioned ones reach the decoder directly).
    `true_factors` (N rows, the synthetic faces' factors.parquet) with `attribute_factors` adds the
    check of each label against the truth (columns true_factor, label_matches; metrics
    true_factor_matches and matched_factors). `all_metrics` adds `fixed_metrics` (β-VAE and
    FactorVAE approximations, DCI with the fast estimator, SAP) to MIG.
    """
    names = list(attribute_names)
    cond_index = [names.index(c) for c in conditions]
    mu, logvar = encode_images(model, images, labels, cond_index)
    free = [k for k in range(len(names)) if k not in cond_index]
    free_labels, free_names = np.asarray(labels)[:, free], [names[k] for k in free]
    table, scores = score_latents(mu, logvar, free_labels, free_names)
    review = LatentReview(dimensions=table, metrics=scores)
    if true_factors is not None:
        check_true_factors(review, mu, true_factors, attribute_factors or {})
    if all_metrics:
        add_fixed_metrics(review, mu, free_labels, free_names, seed)
    device = next(model.parameters()).device
    x = images_as_tensor(images[:num_faces], device)
    cond = conditions_of(labels[:num_faces], cond_index, device)
    review.images = latent_panels(model, x, cond, mu, logvar, review.dimensions, conditions, steps, span,
                                  include_inactive, max_dims)
    review.images["reconstructions"] = reconstruction_panel(model, x, cond)
    return review


def check_true_factors(review: LatentReview, mu: np.ndarray, true_factors: pd.DataFrame,
                       attribute_factors: Mapping[str, str]) -> None:
    """Add the true-factor check of every label (celeb.evaluation.dimensions.match_true_factors) to `review`."""
    checked = match_true_factors(mu, review.dimensions, true_factors.reset_index(drop=True), attribute_factors)
    review.dimensions = checked
    matched = checked[checked["label_matches"]]
    review.metrics["true_factor_matches"] = float(len(matched))
    review.metrics["matched_factors"] = float(matched["true_factor"].nunique())


def add_fixed_metrics(review: LatentReview, mu: np.ndarray, attributes: np.ndarray, names: Sequence[str],
                      seed: int) -> None:
    """Add `fixed_metrics` of these latents to `review` (or a note saying why they were skipped)."""
    scores, note = fixed_metrics(mu, attributes, names, seed)
    review.metrics.update({k: v for k, v in scores.items() if k != "mig_fixed"})
    if note:
        review.notes.append(note)


def fixed_metrics(mu: np.ndarray, attributes: np.ndarray, names: Sequence[str],
                  seed: int) -> tuple[dict[str, float], str | None]:
    """`evaluate_fixed` (DCI with the fast estimator) over the attributes whose two values both occur
    at least MIN_CLASS_ROWS times; ({}, why) when there is too little to fit."""
    attributes = np.asarray(attributes, dtype=bool)
    positives = attributes.sum(axis=0)
    usable = (positives >= MIN_CLASS_ROWS) & (len(attributes) - positives >= MIN_CLASS_ROWS)
    try:
        return evaluate_fixed(mu, attributes[:, usable], [n for n, u in zip(names, usable) if u], seed=seed,
                              dci_estimator="hist", progress=False), None
    except ValueError as error:  # too few rows or attributes for a fitted metric
        return {}, f"fixed-setting metrics skipped: {error}"
