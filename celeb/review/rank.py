"""Ranking checkpoints on one metric, and the rule against ranking on a loss with another KL weight.

The rule (from the sweep review issue): rank on the objective the trial actually optimised (val/loss:
recon + β·KL with the trial's own β) or on a held-out metric (val/mse, val/mig_fixed, ...), never on
a loss with a different KL weight, so the β = 1 `neg_elbo` is refused for trials trained with β ≠ 1
(or a capacity target). Ranking val/loss across trials of different β is allowed, since it is what a
β sweep's scheduler used, but it comes with a note (a `RankingWarning`, and a line on the page): a
smaller β lowers the loss by itself, so that ranking partly ranks β.
"""

from __future__ import annotations

import difflib
import re
import warnings

import numpy as np
import pandas as pd

from celeb.config import LATENT_TASKS, valid_keys
from celeb.evaluation.kl_weight import HELD_OUT_TEXT, weighs_kl_by_one
from celeb.review.discover import ID_COLUMNS

MIN_WORDS = ("loss", "mse", "recon", "kl", "elbo", "error", "bits")  # "neg_elbo" is a loss; bits per dim
MAX_WORDS = ("mig", "dci", "sap", "score", "accuracy", "auroc", "auc", "f1", "precision", "recall")


class RankingWarning(UserWarning):
    """A ranking that is allowed but easy to misread (e.g. val/loss across different β)."""


def config_columns(table: pd.DataFrame) -> list[str]:
    """The dotted config-key columns of a `find_checkpoints` table."""
    keys = set(valid_keys())
    return [c for c in table.columns if c in keys]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a `find_checkpoints` table (not ids, not config values)."""
    skip = set(ID_COLUMNS) | set(config_columns(table))
    return [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])]


def infer_mode(metric: str) -> str | None:
    """"min" or "max" from a metric's name (val/mse -> min, val/mig_fixed -> max); None if unclear."""
    words = set(re.split(r"[/_.\-\s]+", metric.lower()))
    is_min = bool(words & set(MIN_WORDS))
    is_max = bool(words & set(MAX_WORDS))
    return None if is_min == is_max else ("min" if is_min else "max")


def rank_checkpoints(table: pd.DataFrame, metric: str, mode: str | None = None) -> pd.DataFrame:
    """`table` sorted best first on `metric`, with a 1-based `rank` column (blank where it has no value).

    `mode` ("min"/"max") is inferred from the metric's name when not given. Refused: a metric the
    checkpoints do not report (the error lists them), and the β = 1 neg_elbo for trials trained
    with another KL weight. Allowed rankings that are easy to misread emit a `RankingWarning`; the
    notes are also kept in `.attrs["notes"]` (with `.attrs["metric"]` and `.attrs["mode"]`).
    """
    check_metric(table, metric)
    mode = checked_mode(metric, mode)
    refuse_other_kl_weight(table, metric)
    notes = ranking_notes(table, metric)
    for note in notes:
        warnings.warn(note, RankingWarning, stacklevel=2)
    ranked = sorted_with_ranks(table, metric, mode)
    ranked.attrs.update(metric=metric, mode=mode, notes=notes)
    return ranked


def checked_mode(metric: str, mode: str | None) -> str:
    """`mode` if it is "min" or "max", else inferred from the metric's name; a clear error otherwise."""
    if mode is None:
        mode = infer_mode(metric)
        if mode is None:
            raise ValueError(f"cannot tell from its name whether a higher or a lower {metric} is better; "
                             "pass --mode min or --mode max")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def sorted_with_ranks(table: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """`table` best first on `metric` (stable; non-finite values last) with a 1-based Int64 `rank`
    column that is blank where the metric has no finite value."""
    values = pd.to_numeric(table[metric], errors="coerce")
    finite = values.where(np.isfinite(values))
    order = finite.sort_values(ascending=mode == "min", na_position="last", kind="stable").index
    ranked = table.loc[order].reset_index(drop=True)
    has_value = finite.loc[order].notna().to_numpy()
    ranks = [int(r) if ok else pd.NA for r, ok in zip(np.cumsum(has_value), has_value)]
    ranked.insert(0, "rank", pd.array(ranks, dtype="Int64"))
    return ranked


def check_metric(table: pd.DataFrame, metric: str) -> None:
    """A clear error for a metric no checkpoint reports, with the closest names and all of them."""
    available = [c for c in metric_columns(table) if table[c].notna().any()]
    if metric in available:
        return
    close = difflib.get_close_matches(metric, available, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"no checkpoint reports the metric {metric!r}; {hint}available: {', '.join(available)}")


def refuse_other_kl_weight(table: pd.DataFrame, metric: str) -> None:
    """Refuse the β = 1 ELBO (and its bits/dim) for VAE trials whose own objective weighs the KL differently."""
    if not weighs_kl_by_one(metric) or "beta" not in table:
        return
    cvae = table[table["task"].isin(LATENT_TASKS)]
    capacity = cvae["cvae.capacity"].fillna(0) if "cvae.capacity" in cvae else pd.Series(0.0, index=cvae.index)
    other = cvae[~np.isclose(cvae["beta"].astype(float), 1.0) | (capacity > 0)]
    if other.empty:
        return
    betas = sorted({round(float(b), 4) for b in other["beta"]})
    example = other.iloc[0]
    raise ValueError(
        f"refusing to rank on {metric}: it weighs the KL by 1, but {other['trial'].nunique()} trial(s) trained "
        f"with another KL weight (β = {', '.join(map(str, betas[:6]))}{' ...' if len(betas) > 6 else ''}"
        f"{' or a capacity target' if (capacity > 0).any() else ''}; e.g. {example['trial']}). Ranking on a loss "
        "with a different KL weight favours whichever β happens to suit it, not the best trial. "
        f"Rank on val/loss (each trial's own objective), {HELD_OUT_TEXT} instead")


def ranking_notes(table: pd.DataFrame, metric: str) -> list[str]:
    """Caveats of ranking `table` on `metric`: different objectives, training-set metrics, mixed tasks."""
    notes = []
    rows = table[table[metric].notna()]
    if rows["task"].nunique() > 1:
        notes.append(f"{metric} ranks {' and '.join(sorted(rows['task'].unique()))} checkpoints together; "
                     "review one task per call for a meaningful order")
    notes += kl_weight_notes(rows[rows["task"].isin(LATENT_TASKS)], metric)
    if metric.startswith("train/"):
        notes.append(f"{metric} is measured on augmented training batches (during KL warm-up with a smaller KL "
                     "weight); prefer a val/ metric")
    return notes


def kl_weight_notes(cvae: pd.DataFrame, metric: str) -> list[str]:
    """Caveats of ranking CVAE rows whose β (or capacity target) differ on a loss or one side of it."""
    notes = []
    betas = sorted(set(np.round(cvae["beta"].astype(float), 4))) if "beta" in cvae else []
    leaf = metric.rsplit("/", 1)[-1]
    if len(betas) > 1 and leaf == "loss":
        notes.append(f"{metric} is each trial's own objective, recon + β·KL, and these trials use different β "
                     f"({betas[0]:g} to {betas[-1]:g}): they optimise different objectives, and a smaller β lowers "
                     "the loss by itself, so this order partly ranks β. Compare val/loss within one β, or rank "
                     "on a held-out metric (val/mse, val/mig_fixed)")
    elif len(betas) > 1 and leaf in ("recon", "kl"):
        notes.append(f"{metric} is one side of the trade-off β sets (a smaller β favours recon, a larger one kl), "
                     f"and these trials use β from {betas[0]:g} to {betas[-1]:g}")
    if "cvae.capacity" in cvae and (cvae["cvae.capacity"].fillna(0) > 0).any() and leaf == "loss":
        notes.append("some trials train with a capacity target (β·|KL − C|): their loss also depends on C")
    return notes


def best_per_trial(ranked: pd.DataFrame, top: int) -> pd.DataFrame:
    """The best-ranked checkpoint of each of the first `top` trials (rows without a rank left out)."""
    rated = ranked[ranked["rank"].notna()]
    return rated.drop_duplicates("trial", keep="first").head(top)

