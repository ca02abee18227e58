"""The hierarchical VAE (celeb.models.hvae) as a training task: the CVAE task's objective, schedules,
evaluation and panels, on a hierarchy. What it adds: noise for every latent group, KL balancing
during the KL warm-up, the spectral regulariser, the KL of each group, and NVAE's own fixes in the
message of a diverged run, and on request the NLL by importance sampling.

Its latent panels, dimension labels and disentanglement scores are those of the top group (the
global latents); the traversals decode with every lower group at its prior mean given the groups
above (celeb.models.hvae.HierarchicalVAE.decode).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from celeb.data.loader import BatchLoader
from celeb.models.cvae import standard_normal
from celeb.models.hvae import hvae_loss
from celeb.models.likelihood import bits_per_dim
from celeb.seeds import importance_seed
from celeb.training.adapter import At
from celeb.training.cvae_task import CVAETask, LatentEvaluation


class NVAETask(CVAETask):
    """Hierarchical β-VAE: loss = recon + β·(total KL) (balanced across groups during warm-up) + spectral term."""

    epoch_metrics: ClassVar[tuple[str, ...]] = CVAETask.epoch_metrics + ("val/kl_top",)
    divergence_advice: ClassVar[str] = (
        "Raise the spectral regulariser (nvae.spectral, e.g. x10: NVAE's fix), lower the learning rate (lr), "
        "set grad_clip (e.g. 200), or use amp: none, and resume from the checkpoint.")

    def objective(self, model: nn.Module, x: Tensor, cond: Tensor | None, noise: torch.Generator, kl_weight: float,
                  capacity: float, training: bool) -> tuple[Any, Any]:
        eps = [standard_normal(shape, x, noise) for shape in model.noise_shapes(x.shape[0])]
        out = model(x, cond, eps=eps)
        balance = training and self.config.nvae.kl_balance and kl_weight < self.beta
        parts = hvae_loss(out, x, kl_weight, capacity, self.config.cvae.recon, model.group_sizes(), balance)
        if training and self.config.nvae.spectral > 0:
            parts = parts._replace(total=parts.total + self.config.nvae.spectral * model.spectral_loss())
        return out, parts

    def evaluate(self, model: nn.Module, loader: BatchLoader, at: At, final: bool) -> LatentEvaluation:
        """The CVAE task's evaluation; after the last epoch with nvae.iw_samples, also the NLL by
        importance sampling in bits/dim (val/iw_bits_per_dim)."""
        evaluation = super().evaluate(model, loader, at, final)
        samples = self.config.nvae.iw_samples
        if final and samples > 0:
            noise = torch.Generator(device=self.device).manual_seed(importance_seed(self.config.seed))
            nats = sum(float(model.importance_nll(x, self.cond(y), samples, noise).sum()) for x, y in loader)
            evaluation.metrics["val/iw_bits_per_dim"] = bits_per_dim(nats / len(loader.indices),
                                                                     (3, self.image_size, self.image_size))
        return evaluation

    def batch_sums(self, parts: Any, b: int) -> dict[str, Tensor]:
        groups = {f"kl_group_{g}": kl * b for g, kl in enumerate(parts.kl_groups)}
        return {**super().batch_sums(parts, b), "kl_top": parts.kl_groups[0] * b, **groups}
