"""The conditional β-VAE as a training task: loss = recon + β·KL (or β·|KL − C| with a capacity
schedule), its evaluation on val (losses, per-dim KL, disentanglement against the attributes) and
its panels."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from celeb.config import TrainConfig
from celeb.data.dataset import CelebData
from celeb.data.loader import BatchLoader
from celeb.evaluation.latents import fixed_metrics, score_latents
from celeb.evaluation.traversal import ACTIVE_DIM_NATS, latent_panels, reconstruction_panel
from celeb.models import build_model, capacity_schedule, config_beta, kl_weight_schedule, standard_normal, vae_loss
from celeb.models.likelihood import bits_per_dim, mean_image_output, reconstruction_nll
from celeb.seeds import noise_seed
from celeb.training.adapter import (DIVERGENCE_ADVICE, At, Evaluation, Visuals, image_size_of, images_to_tensor,
                                    mean_image, split_indices)


@dataclass
class LatentEvaluation(Evaluation):
    """A CVAE evaluation: its metrics, and the val latents (host arrays) and dimension table the
    panels are drawn from."""

    mu: np.ndarray
    logvar: np.ndarray
    labels: np.ndarray
    dimensions: pd.DataFrame


class CVAETask:
    """Conditional β-VAE: loss = recon + β·KL (or β·|KL − C| with a capacity schedule)."""

    epoch_metrics: ClassVar[tuple[str, ...]] = (
        "val/loss", "val/recon", "val/kl", "val/mse", "val/neg_elbo", "val/bits_per_dim", "val/active_dims",
        "val/mig_fixed", "val/labelled_dims",  # against the attributes the model is not conditioned on
        "train/loss", "train/recon", "train/kl")
    # with cvae.final_metrics, after the last epoch (a few seconds; so not for ASHA)
    divergence_advice: ClassVar[str] = DIVERGENCE_ADVICE
    final_metrics: ClassVar[tuple[str, ...]] = (
        "val/dci_disentanglement_fixed", "val/dci_completeness_fixed", "val/dci_informativeness_fixed",
        "val/sap_fixed", "val/beta_vae_approx", "val/factor_vae_approx")

    def __init__(self, config: TrainConfig, data: CelebData, device: torch.device) -> None:
        c = config.cvae
        self.config, self.device = config, device
        self.augment = config.data.augment
        self.image_size = image_size_of(data)
        self.cond_index = torch.tensor(data.attribute_index(c.conditions), dtype=torch.long, device=device)
        self.free_index = [k for k in range(len(data.attribute_names)) if k not in self.cond_index.tolist()]
        self.beta = config_beta(config, self.image_size)
        train_idx, val_idx = split_indices(data, config.data.split)
        self.mean_image = mean_image(data.images, train_idx).to(device)  # (3, H, W) in [0, 1]
        self.show_x, self.show_y = images_to_tensor(data, val_idx[: config.num_recon], device)
        self.panel_x, self.panel_y = images_to_tensor(data, val_idx[: c.panel_faces], device)
        self.names = tuple(data.attribute_names)

    def build_model(self) -> nn.Module:
        return build_model(self.config, image_size=self.image_size)

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    def cond(self, y: Tensor) -> Tensor | None:
        return y[:, self.cond_index] if len(self.cond_index) else None

    def kl_weight(self, at: At) -> float:
        return kl_weight_schedule(at.epoch, at.step_in_epoch, at.steps_per_epoch, self.beta,
                                  self.config.cvae.warmup_epochs)

    def capacity(self, at: At) -> float:
        c = self.config.cvae
        if c.capacity <= 0:
            return 0.0
        return capacity_schedule(at.global_step, c.capacity, c.capacity_epochs * at.steps_per_epoch)

    def noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The batch's reparameterisation noise, drawn outside the model (a compiled model, or a
        CUDA graph, cannot draw from a generator): the numbers the model itself would draw."""
        return standard_normal((x.shape[0], self.config.cvae.latent_dim), x, generator)

    def objective(self, model: nn.Module, x: Tensor, cond: Tensor | None, noise: torch.Generator, kl_weight: float,
                  capacity: float, training: bool) -> tuple[Any, Any]:
        """One forward pass and its loss parts (total, recon, kl, kl_per_dim, ...)."""
        out = model(x, cond, eps=self.noise(x, noise))
        return out, vae_loss(out, x, kl_weight, capacity, recon=self.config.cvae.recon)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, at: At, noise: torch.Generator) -> tuple[Tensor, dict]:
        _, parts = self.objective(model, x, self.cond(y), noise, self.kl_weight(at), self.capacity(at), training=True)
        return parts.total, {"recon": parts.recon, "kl": parts.kl}

    def batch_sums(self, parts: Any, b: int) -> dict[str, Tensor]:
        """What evaluation sums over val batches (then divides by the images), besides the images' own."""
        return {"loss": parts.total * b, "recon": parts.recon * b, "kl": parts.kl * b}

    def train_extras(self, at: At) -> dict[str, float]:
        return {"beta": self.beta, "kl_weight": self.kl_weight(at), "capacity": self.capacity(at)}

    def evaluate(self, model: nn.Module, loader: BatchLoader, at: At, final: bool) -> LatentEvaluation:
        """Val loss with the run's full β, its parts, per-dim KL, the mean-image baseline and the
        latents' scores; after the last epoch (`final`) also `final_metrics` when the config asks."""
        noise = torch.Generator(device=self.device).manual_seed(noise_seed(self.config.seed, -1))
        sums: dict[str, Tensor | float] = {}
        kl_per_dim: Tensor | float = 0.0
        n = 0
        mus, logvars, labels = [], [], []
        recon = self.config.cvae.recon
        for x, y in loader:
            b, cond = x.shape[0], self.cond(y)
            out, parts = self.objective(model, x, cond, noise, self.beta, self.capacity(at), training=False)
            recon_images = model.reconstruct(x, cond).float()
            baseline = mean_image_output(self.mean_image, x, recon)
            batch = {**self.batch_sums(parts, b),
                     "mse": (recon_images - x).square().mean(dim=(1, 2, 3)).sum(),
                     "baseline_mse": (self.mean_image - x).square().mean(dim=(1, 2, 3)).sum(),
                     "baseline_recon": reconstruction_nll(baseline, x, recon).sum()}
            for name, value in batch.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            kl_per_dim = kl_per_dim + parts.kl_per_dim.detach().float() * b
            n += b
            mus.append(out.mu.to(torch.float32, copy=True))  # a copy: a CUDA graph reuses its outputs
            logvars.append(out.logvar.to(torch.float32, copy=True))
            labels.append(y.bool())
        metrics = {f"val/{k}": (v / n).item() for k, v in sums.items()}
        metrics["val/neg_elbo"] = metrics["val/recon"] + metrics["val/kl"]
        # with recon: logistic a bound on the NLL in bits per sub-pixel; with bce or mse the same ratio of a non-likelihood
        metrics["val/bits_per_dim"] = bits_per_dim(metrics["val/neg_elbo"], (3, self.image_size, self.image_size))
        per_dim = (kl_per_dim / n).cpu()
        metrics["val/kl_per_dim"] = per_dim.tolist()
        metrics["val/active_dims"] = int((per_dim > ACTIVE_DIM_NATS).sum())
        # one device-to-host copy after the loop, not a GPU sync per batch
        mu, logvar, label_array = (torch.cat(parts).cpu().numpy() for parts in (mus, logvars, labels))
        dimensions, scores = self.score(mu, logvar, label_array)
        metrics.update({f"val/{k}": v for k, v in scores.items() if k != "active_dims"})
        if final:
            metrics.update(self.final_scores(mu, label_array))
        return LatentEvaluation(metrics, mu, logvar, label_array, dimensions)

    def score(self, mu: np.ndarray, logvar: np.ndarray, labels: np.ndarray) -> tuple[pd.DataFrame, dict[str, float]]:
        """Per-dim table and MIG of val latents against the attributes the model is not conditioned on."""
        return score_latents(mu, logvar, labels[:, self.free_index], [self.names[k] for k in self.free_index])

    def final_scores(self, mu: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """With cvae.final_metrics: every fixed-setting disentanglement score of the val latents
        against the attributes the model is not conditioned on (a few seconds)."""
        if not self.config.cvae.final_metrics:
            return {}
        scores, note = fixed_metrics(mu, labels[:, self.free_index], [self.names[k] for k in self.free_index],
                                     self.config.seed)
        if note:
            warnings.warn(note, stacklevel=2)
        return {f"val/{k}": v for k, v in scores.items() if k != "mig_fixed"}

    def visuals(self, model: nn.Module, evaluation: LatentEvaluation, epoch: int, final: bool) -> Visuals:
        """Reconstructions every evaluation; traversal panels and the dimension table every
        `cvae.panel_every` evaluations and after the last epoch."""
        c, visuals = self.config.cvae, Visuals()
        if len(self.show_x):
            visuals.images["reconstructions"] = reconstruction_panel(model, self.show_x, self.cond(self.show_y))
        evaluation_number = epoch // self.config.eval_every
        if c.panel_every and len(self.panel_x) and (final or evaluation_number % c.panel_every == 0):
            dimensions = evaluation.dimensions
            visuals.images.update(latent_panels(
                model, self.panel_x, self.cond(self.panel_y), evaluation.mu, evaluation.logvar, dimensions,
                c.conditions, steps=c.panel_steps, span=c.panel_span))
            visuals.tables["dimensions"] = dimensions.drop(
                columns=[k for k in dimensions if k.startswith(("mi_", "corr_"))])
        return visuals
