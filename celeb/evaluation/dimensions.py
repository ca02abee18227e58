"""Per-latent-dimension evaluation of a VAE: which dims are used, and which attribute each one carries.

`evaluate_dimensions` gives one row per latent dimension: its KL to the prior (nats, averaged over
images), whether it is active (KL above a threshold; a collapsed dim has KL ~ 0), the variance of
its posterior mean over images (Burda et al.'s activity statistic), and against every attribute:

- `mi_<attribute>`: mutual information between the dim's posterior mean, discretised into 20
  equal-width bins (as MIG does), and the binary attribute, minus the plug-in estimator's
  small-sample bias (Miller–Madow), NORMALISED by the attribute's entropy, so 1 means the dim
  determines the attribute and values are comparable across rare and common attributes;
- `corr_<attribute>`: Pearson correlation between the posterior mean and the 0/1 attribute (the
  point-biserial correlation); its sign says which way the dim moves for the attribute.

`match_true_factors` checks the labels where the truth is known (the synthetic faces): a label is
right when the dim's most informative true factor is the one its attribute is computed from.

`label_dimensions` turns that table into lines like "dim 16 ↔ Blond_Hair (MI 0.31)" for the 64
traversal rows, ordered by KL (most used dim first), so a reviewer reads the labels, not the faces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from celeb.evaluation.disentanglement.fixed_data import as_bool_attributes
from celeb.evaluation.disentanglement.information import discrete_entropy, discrete_mutual_info, histogram_discretize


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(q(z_d | x) || N(0, 1)) in nats for each dim, averaged over the rows: (D,)."""
    return (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)


def evaluate_dimensions(
    latents_mu: np.ndarray,
    logvar_or_kl: np.ndarray,
    attributes: np.ndarray,
    names: Sequence[str],
    active_threshold: float = 0.01,
    num_bins: int = 20,
) -> pd.DataFrame:
    """One row per latent dim: dim, kl, active, mu_var, mi_<name>, corr_<name>, best_attribute, best_mi, best_corr.

    `logvar_or_kl` is either the posterior log-variances (N, D) or an already computed KL per dim
    (D,), e.g. the training loop's `kl_per_dim`. A dim is active when its KL exceeds
    `active_threshold` nats. Rows are in dim order.
    """
    mu = np.asarray(latents_mu, dtype=np.float64)
    attributes = np.asarray(attributes)
    names = list(names)
    if mu.ndim != 2:
        raise ValueError(f"latents_mu must be (N, D); got shape {mu.shape}")
    if attributes.ndim != 2 or len(attributes) != len(mu) or attributes.shape[1] != len(names):
        raise ValueError(
            f"attributes must be (N={len(mu)}, K={len(names)}) to match latents_mu and names; got {attributes.shape}"
        )
    attributes = as_bool_attributes(attributes)
    kl = _kl(mu, np.asarray(logvar_or_kl, dtype=np.float64))

    mi = _normalised_mi(mu, attributes, num_bins)
    corr = _pearson(mu, attributes.astype(np.float64))
    table = pd.DataFrame(
        {"dim": np.arange(mu.shape[1]), "kl": kl, "active": kl > active_threshold, "mu_var": mu.var(axis=0)}
    )
    per_attribute = {f"mi_{n}": mi[:, k] for k, n in enumerate(names)}
    per_attribute |= {f"corr_{n}": corr[:, k] for k, n in enumerate(names)}
    table = pd.concat([table, pd.DataFrame(per_attribute)], axis=1)
    best = mi.argmax(axis=1)
    dims = np.arange(mu.shape[1])
    table["best_attribute"] = np.asarray(names, dtype=object)[best]
    table["best_mi"] = mi[dims, best]
    table["best_corr"] = corr[dims, best]
    return table


# Normalised MI a dim needs with an attribute to be labelled with it: above what noise reaches on a
# few hundred images once the estimator's bias is removed (tests/evaluation/test_latents.py checks both).
LABEL_MIN_MI = 0.1


def label_dimensions(table: pd.DataFrame, min_mi: float = LABEL_MIN_MI) -> list[str]:
    """One label per dim, ordered by KL descending.

    Active dims: "dim 16 ↔ Blond_Hair (MI 0.31)" (normalised MI of the best attribute), or
    "dim 7 ↔ unlabelled (best Smiling, MI 0.02)" when no attribute reaches `min_mi`.
    Inactive dims: "dim 3: inactive".
    """
    labels = []
    for row in table.sort_values(["kl", "dim"], ascending=[False, True], kind="stable").itertuples():
        if not row.active:
            labels.append(f"dim {row.dim}: inactive")
        elif row.best_mi >= min_mi:
            labels.append(f"dim {row.dim} ↔ {row.best_attribute} (MI {row.best_mi:.2f})")
        else:
            labels.append(f"dim {row.dim} ↔ unlabelled (best {row.best_attribute}, MI {row.best_mi:.2f})")
    return labels


def _kl(mu: np.ndarray, logvar_or_kl: np.ndarray) -> np.ndarray:
    if logvar_or_kl.ndim == 1:
        if logvar_or_kl.shape != (mu.shape[1],):
            raise ValueError(f"kl_per_dim must have one value per latent dim ({mu.shape[1]}); got {logvar_or_kl.shape}")
        return logvar_or_kl
    if logvar_or_kl.shape != mu.shape:
        raise ValueError(f"logvar must have the shape of latents_mu {mu.shape}; got {logvar_or_kl.shape}")
    return kl_per_dimension(mu, logvar_or_kl)


def _normalised_mi(mu: np.ndarray, attributes: np.ndarray, num_bins: int) -> np.ndarray:
    """(D, K) MI(discretised dim; attribute) / H(attribute), bias-corrected; 0 for a constant attribute."""
    return corrected_normalised_mi(histogram_discretize(mu, num_bins), attributes)


def corrected_normalised_mi(codes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(D, K) MI(codes_d; target_k) / H(target_k) from discrete (N, D) codes and (N, K) targets.

    The plug-in MI is biased upwards by about (values of code − 1)(values of target − 1)/(2N) nats
    (Miller–Madow), which on a few hundred validation images is enough to give pure noise an MI of
    0.1; that bias is subtracted (and the result clipped at 0) so small splits do not label noise.
    """
    mi = discrete_mutual_info(codes, targets)
    code_values = np.array([len(np.unique(c)) for c in np.asarray(codes).T], dtype=np.float64)
    target_values = np.array([len(np.unique(t)) for t in np.asarray(targets).T], dtype=np.float64)
    bias = np.outer(code_values - 1, target_values - 1) / (2 * len(codes))
    mi = np.maximum(mi - bias, 0.0)
    entropy = discrete_entropy(targets)
    return np.divide(mi, entropy, out=np.zeros_like(mi), where=entropy > 0)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(D, K) Pearson correlation of each column of x with each column of y; 0 where one is constant."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    norms = np.outer(np.sqrt((xc**2).sum(axis=0)), np.sqrt((yc**2).sum(axis=0)))
    cov = xc.T @ yc
    return np.divide(cov, norms, out=np.zeros_like(cov), where=norms > 0)


def factor_codes(factors: pd.DataFrame, num_bins: int = 20) -> np.ndarray:
    """(N, F) integer codes of true factors: bool/int factors as they are, floats in `num_bins` bins."""
    columns = []
    for name in factors.columns:
        values = factors[name].to_numpy()
        if np.issubdtype(values.dtype, np.floating):
            columns.append(histogram_discretize(values[:, None], num_bins)[:, 0])
        else:
            columns.append(np.unique(values, return_inverse=True)[1])
    return np.stack(columns, axis=1)


def match_true_factors(latents_mu: np.ndarray, table: pd.DataFrame, factors: pd.DataFrame,
                       attribute_factors: Mapping[str, str], num_bins: int = 20,
                       min_mi: float = LABEL_MIN_MI) -> pd.DataFrame:
    """`table` (from evaluate_dimensions, any row order) plus true_factor, true_factor_mi and label_matches.

    `factors` (N, F) are the true generative factors of the rows of `latents_mu`, and
    `attribute_factors` maps an attribute to the factor it is computed from. For each dim,
    true_factor is the factor with the highest normalised MI with it; label_matches says whether the
    dim is active, labelled (its best attribute reaches `min_mi`) and that attribute is computed from
    its true factor.
    """
    mu = np.asarray(latents_mu, dtype=np.float64)
    if len(factors) != len(mu):
        raise ValueError(f"factors has {len(factors)} rows but latents_mu has {len(mu)}")
    mi = corrected_normalised_mi(histogram_discretize(mu, num_bins), factor_codes(factors, num_bins))  # (D, F)
    names = np.asarray(factors.columns, dtype=object)
    out = table.copy()
    dims = out["dim"].to_numpy()
    out["true_factor"] = names[mi[dims].argmax(axis=1)]
    out["true_factor_mi"] = mi[dims].max(axis=1)
    expected = out["best_attribute"].map(lambda a: attribute_factors.get(a))
    labelled = out["active"].to_numpy() & (out["best_mi"].to_numpy() >= min_mi)
    out["label_matches"] = labelled & (expected == out["true_factor"]).to_numpy()
    return out
