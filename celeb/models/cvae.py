"""Convolutional conditional β-VAE: the network, its SGVB objective and the β / capacity schedules.

Objective, written out (Kingma & Welling's SGVB with the reparameterisation trick):

    q(z | x, c) = N(mu, diag(exp(logvar)))        encoder, c = attribute vector (cond)
    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)
    p(x | z, c) = Bernoulli(sigmoid(logits))      decoder ("bce"), a Gaussian ("mse") or a
                                                  discretised logistic ("logistic"; celeb.models.likelihood)
    loss = recon + beta * KL(q(z | x, c) || N(0, I))           (Higgins et al., β-VAE)
    loss = recon + beta * |KL - C|                             (Burgess et al., capacity C > 0)

Architecture. With k = `width`, the encoder halves the resolution with 4x4 stride-2 convolutions
down to 4x4, doubling channels k, 2k, 4k, 8k (and 16k at 128 px); the decoder mirrors it with
transposed convolutions and ends with a 3x3 convolution to three logit channels.

Conditioning. The attribute vector is concatenated to the encoder's flattened 4x4 features (before
the linear layer that gives mu and logvar) and to z (before the decoder's first linear layer).
With cond_dim=0 the model is a plain β-VAE and any cond passed in is ignored.

Normalisation. GroupNorm, not BatchNorm: the output for one image does not depend on the rest of
the batch or on train/eval mode, so reconstructions, samples and edits are the same in any batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from celeb.models.likelihood import check_recon, output_images, output_layer, reconstruction_nll

IMAGE_SIZES = (64, 128)
_BASE_RESOLUTION = 4  # the encoder stops halving at 4x4


class VAEOutput(NamedTuple):
    """What one forward pass gives: decoder logits (B,3,H,W), posterior mu/logvar and the sampled z."""

    logits: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor


class VAELoss(NamedTuple):
    """The objective's parts; `total` is what to backpropagate, the rest are for logging."""

    total: Tensor
    recon: Tensor
    kl: Tensor
    kl_per_dim: Tensor


def _group_norm(channels: int) -> nn.GroupNorm:
    # Up to 8 groups, always a divisor of `channels` so any width works.
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), _group_norm(c_out), nn.SiLU())


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), _group_norm(c_out), nn.SiLU()
    )


class ConditionalImageModel(nn.Module):
    """What both VAE families share (this CVAE and celeb.models.hvae's hierarchy): images of one
    size in [0,1], an optional attribute vector, latents decoded through a likelihood. A subclass
    sets image_size, cond_dim and recon, and has encode(x, cond) -> (mu, logvar) and decode(z, cond)."""

    image_size: int
    cond_dim: int
    recon: str

    def decode_images(self, z: Tensor, cond: Tensor | None) -> Tensor:
        """Images in [0,1] for latents z: what the decoder's likelihood stands for."""
        return output_images(self.decode(z, cond), self.recon)

    @torch.no_grad()
    def edit(self, x: Tensor, cond: Tensor, new_cond: Tensor) -> Tensor:
        """Attribute editing: encode x under `cond`, decode its posterior mean under `new_cond`."""
        mu, _ = self.encode(x, cond)
        return self.decode_images(mu, new_cond)

    def _check_images(self, x: Tensor) -> None:
        expected = (3, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def _with_cond(self, h: Tensor, cond: Tensor | None) -> Tensor:
        if self.cond_dim == 0:
            return h
        if cond is None:
            raise ValueError(
                f"this model is conditional (cond_dim={self.cond_dim}); pass cond of shape (B, {self.cond_dim})"
            )
        if cond.shape != (h.shape[0], self.cond_dim):
            raise ValueError(f"cond must have shape ({h.shape[0]}, {self.cond_dim}), got {tuple(cond.shape)}")
        return torch.cat([h, cond.to(h.dtype)], dim=1)


class ConditionalVAE(ConditionalImageModel):
    """β-VAE on (B,3,H,W) images in [0,1], optionally conditioned on a (B, cond_dim) attribute vector."""

    def __init__(self, image_size: int = 64, latent_dim: int = 64, width: int = 32, cond_dim: int = 0,
                 recon: str = "bce"):
        super().__init__()
        check_recon(recon)
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
        if latent_dim < 1 or width < 1 or cond_dim < 0:
            raise ValueError(
                f"need latent_dim >= 1, width >= 1 and cond_dim >= 0; "
                f"got latent_dim={latent_dim}, width={width}, cond_dim={cond_dim}"
            )
        self.image_size, self.latent_dim, self.width, self.cond_dim = image_size, latent_dim, width, cond_dim
        self.recon = recon

        levels = int(math.log2(image_size // _BASE_RESOLUTION))  # 4 at 64 px, 5 at 128 px
        channels = [width * 2**i for i in range(levels)]  # k, 2k, 4k, 8k (, 16k)
        self.flat_dim = channels[-1] * _BASE_RESOLUTION**2

        self.encoder = nn.Sequential(*[_down(c_in, c_out) for c_in, c_out in zip([3] + channels, channels)])
        self.to_posterior = nn.Linear(self.flat_dim + cond_dim, 2 * latent_dim)

        self.from_latent = nn.Linear(latent_dim + cond_dim, self.flat_dim)
        ups = channels[::-1] + [width]  # 8k -> 4k -> 2k -> k -> k: one upsampling per level
        self.decoder = nn.Sequential(
            *[_up(c_in, c_out) for c_in, c_out in zip(ups, ups[1:])],
            output_layer(width, recon),
        )

    # -- the two halves ------------------------------------------------------------------------

    def encode(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """Posterior parameters (mu, logvar), each (B, latent_dim), of images x (B,3,H,W) in [0,1]."""
        self._check_images(x)
        h = self.encoder(x).flatten(1)
        h = self._with_cond(h, cond)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor, cond: Tensor | None) -> Tensor:
        """Decoder outputs (B,C,H,W) for latents z (B, latent_dim); `decode_images` gives images."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.from_latent(self._with_cond(z, cond))
        h = h.view(-1, self.flat_dim // _BASE_RESOLUTION**2, _BASE_RESOLUTION, _BASE_RESOLUTION)
        return self.decoder(h)

    def forward(self, x: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None,
                eps: Tensor | None = None) -> VAEOutput:
        """Encode, draw z = mu + sigma * eps (eps from `generator` if given, or `eps` itself), decode."""
        mu, logvar = self.encode(x, cond)
        eps = standard_normal(mu.shape, mu, generator) if eps is None else eps.to(mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        return VAEOutput(self.decode(z, cond), mu, logvar, z)

    # -- using a trained model -----------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Images in [0,1] decoded from the posterior mean (no sampling noise)."""
        mu, _ = self.encode(x, cond)
        return self.decode_images(mu, cond)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """`n` images in [0,1] from the prior (its σ scaled by `temperature`); `cond` is (n, cond_dim)
        or one (cond_dim,) row for all."""
        param = next(self.parameters())
        if cond is not None and cond.ndim == 1:
            cond = cond.unsqueeze(0).expand(n, -1)
        z = temperature * standard_normal((n, self.latent_dim), param, generator)
        return self.decode_images(z, cond)


def standard_normal(shape: tuple[int, ...] | torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise with `like`'s device and dtype; drawn on the generator's device so a CPU
    generator gives the same numbers whatever device the model is on."""
    device = generator.device if generator is not None else like.device
    eps = torch.randn(tuple(shape), generator=generator, device=device)
    return eps.to(device=like.device, dtype=like.dtype)


# -- the objective -----------------------------------------------------------------------------


def vae_loss(out: VAEOutput, x: Tensor, beta: float, capacity: float = 0.0, recon: str = "bce") -> VAELoss:
    """Negative ELBO with a β-weighted KL (and an optional KL capacity target C).

    recon: the decoder's likelihood (celeb.models.likelihood: "bce", "mse" or "logistic"); its
    term, like the KL (summed over latent dims), is per image and averaged over the batch.
    Computed in float32 so bf16 autocast does not round the sums.
    """
    recon_loss = reconstruction_nll(out.logits, x, recon).mean()

    mu, logvar = out.mu.float(), out.logvar.float()
    kl_per_dim = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean(0)
    kl = kl_per_dim.sum()
    kl_term = (kl - capacity).abs() if capacity > 0 else kl
    return VAELoss(recon_loss + beta * kl_term, recon_loss, kl, kl_per_dim)


def normalized_beta_to_beta(beta_norm: float, latent_dim: int, image_size: int, channels: int = 3) -> float:
    """β from Higgins et al.'s normalised β_norm = β·M/N (M latent dims, N = channels·size² pixels)."""
    if latent_dim < 1 or image_size < 1 or channels < 1:
        raise ValueError("latent_dim, image_size and channels must be positive")
    return beta_norm * channels * image_size**2 / latent_dim


def effective_beta(beta: float, beta_norm: float | None, latent_dim: int, image_size: int) -> float:
    """The KL weight a CVAE trains with: `beta`, or the one `beta_norm` implies when it is set."""
    return normalized_beta_to_beta(beta_norm, latent_dim, image_size) if beta_norm is not None else float(beta)


def kl_weight_schedule(
    epoch: int, step_in_epoch: int, steps_per_epoch: int, beta: float, warmup_epochs: float = 0.0
) -> float:
    """KL weight at a step (epochs counted from 0): rises linearly from 0 to β over `warmup_epochs`."""
    if warmup_epochs <= 0:
        return beta
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    progress = (epoch + step_in_epoch / steps_per_epoch) / warmup_epochs
    return beta * min(1.0, max(0.0, progress))


def capacity_schedule(step: int, max_capacity: float, capacity_steps: int) -> float:
    """KL capacity C at a step: rises linearly from 0 to `max_capacity` over `capacity_steps` steps."""
    if capacity_steps <= 0:
        return max_capacity
    return max_capacity * min(1.0, max(0.0, step / capacity_steps))
