"""Which VAE metrics depend on the KL weight, and what to rank on instead.

A β-VAE's objective is recon + β·KL (or β·|KL − C| with a capacity target C). A metric built from
that objective, or from one side of the trade-off β sets, is no fair judge of β: `val/loss` falls
with β by construction, and `val/neg_elbo` (its bits/dim too) is the β = 1 objective, so it favours
β near 1. Held-out metrics that no trial optimised directly (reconstruction MSE, disentanglement
scores) can judge β. The sweep spec check (celeb.sweep.spec) and `celeb review` (celeb.review.rank)
both apply these facts.
"""

from __future__ import annotations

KL_WEIGHT_KEYS = ("cvae.beta", "cvae.beta_norm", "cvae.capacity")
HELD_OUT_TEXT = ("val/mse or val/mig_fixed (every epoch reports them), or val/dci_disentanglement_fixed or "
                 "val/sap_fixed (after the last epoch, with cvae.final_metrics)")
# metric leaves made of the objective (loss), of its β = 1 form (neg_elbo, bits_per_dim), or of one
# side of the trade-off (recon, kl)
KL_WEIGHTED_LEAVES = ("loss", "neg_elbo", "bits_per_dim", "iw_bits_per_dim", "recon", "kl")


def depends_on_kl_weight(metric: str) -> bool:
    """Whether `metric` (e.g. val/loss, val/neg_elbo, val/kl) changes with β by how it is defined."""
    return metric.rsplit("/", 1)[-1] in KL_WEIGHTED_LEAVES


def weighs_kl_by_one(metric: str) -> bool:
    """Whether `metric` is the β = 1 ELBO or a form of it (bits/dim), as opposed to a trial's own loss."""
    return any(word in metric.lower() for word in ("elbo", "bits_per_dim"))
