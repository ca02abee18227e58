"""The decoders' likelihoods p(x | z): what their output channels mean, the reconstruction term of
the objective, the images they stand for, and bits per dimension. Shared by both VAE families.

- "bce": a Bernoulli per sub-pixel, 3 logit channels (the CVAE's default). Its loss is summed binary
  cross-entropy; it is not a likelihood of 8-bit images, so its bits/dim are not comparable.
- "mse": squared error of sigmoid(logits), 3 channels.
- "logistic": a discretised logistic per sub-pixel over the 256 levels of an 8-bit image (as in
  PixelCNN++ and NVAE), 6 channels: 3 means (in [-1, 1] space) and 3 log-scales. A proper
  likelihood of the pixels: the negative ELBO in bits/dim bounds the NLL (the hierarchical VAE's default).

All losses are per image, summed over pixels (B,); the objective averages them over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RECON_LOSSES = ("bce", "mse", "logistic")
LEVELS = 256  # an 8-bit image
MIN_LOG_SCALE = -7.0
INITIAL_LOG_SCALE = -2.0


def output_channels(recon: str) -> int:
    """Decoder output channels for the likelihood `recon`."""
    check_recon(recon)
    return 6 if recon == "logistic" else 3


def output_layer(channels: int, recon: str) -> nn.Conv2d:
    """A decoder's last layer (3x3 convolution) for the likelihood `recon`. A logistic's log-scales
    start at INITIAL_LOG_SCALE, a spread about that of faces around their mean, not at 0 (a scale of
    half the whole range, several bits/dim worse than a uniform guess)."""
    layer = nn.Conv2d(channels, output_channels(recon), 3, padding=1)
    if recon == "logistic":
        with torch.no_grad():
            layer.bias[3:].fill_(INITIAL_LOG_SCALE)
    return layer


def check_recon(recon: str) -> None:
    if recon not in RECON_LOSSES:
        raise ValueError(f"recon must be one of {RECON_LOSSES}, got {recon!r}")


def reconstruction_nll(out: Tensor, x: Tensor, recon: str) -> Tensor:
    """-log p(x | z) per image (B,), in nats (a summed squared error for "mse"); float32 throughout."""
    check_recon(recon)
    out, x = out.float(), x.float()
    if recon == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(out, x, reduction="none")
    elif recon == "mse":
        per_pixel = (torch.sigmoid(out) - x) ** 2
    else:
        per_pixel = -discretized_logistic_log_prob(out, x)
    return per_pixel.flatten(1).sum(1)


def discretized_logistic_log_prob(params: Tensor, x: Tensor) -> Tensor:
    """log P(x) per sub-pixel (B, 3, H, W) of images x in [0, 1] on 256 levels, under logistics with
    means params[:, :3] and log-scales params[:, 3:] in [-1, 1] space: the logistic's mass over the
    level's bin, with the two end bins open to -inf and +inf."""
    mean, log_scale = params[:, :3], params[:, 3:].clamp(min=MIN_LOG_SCALE)
    centred = 2 * x - 1 - mean
    inv_scale = torch.exp(-log_scale)
    half_bin = 1.0 / (LEVELS - 1)
    upper, lower = inv_scale * (centred + half_bin), inv_scale * (centred - half_bin)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): the first bin takes all below
    log_survival_lower = -F.softplus(lower)  # log (1 - sigmoid(lower)): the last bin takes all above
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    middle = inv_scale * centred  # where the bin's mass underflows, its density times the bin width
    log_density = middle - log_scale - 2 * F.softplus(middle) - math.log((LEVELS - 1) / 2)
    inner = torch.where(mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_density)
    return torch.where(x < 0.5 / (LEVELS - 1), log_cdf_upper,
                       torch.where(x > 1 - 0.5 / (LEVELS - 1), log_survival_lower, inner))


def output_images(out: Tensor, recon: str) -> Tensor:
    """The images (B, 3, H, W) in [0, 1] a decoder's output stands for (the likelihood's mean, or
    for the logistic its mode)."""
    if recon == "logistic":
        return ((out[:, :3].float().clamp(-1, 1) + 1) / 2)
    return torch.sigmoid(out.float())


def mean_image_output(mean_image: Tensor, x: Tensor, recon: str) -> Tensor:
    """The decoder output that predicts `mean_image` (3, H, W) for every image of the batch x (a
    baseline): for the logistic, with the scale that fits the batch's spread about it."""
    if recon != "logistic":
        return torch.logit(mean_image, eps=1e-6).expand_as(x)
    spread = (2 * (x - mean_image)).square().mean().sqrt().clamp(min=1e-3)  # RMS in [-1, 1] space
    log_scale = torch.log(spread * math.sqrt(3) / math.pi)  # a logistic of that standard deviation
    return torch.cat([(2 * mean_image - 1).expand_as(x), log_scale.expand_as(x)], dim=1)


def bits_per_dim(nats_per_image: float, image_shape: tuple[int, int, int]) -> float:
    """Nats per image -> bits per sub-pixel."""
    return nats_per_image / (math.prod(image_shape) * math.log(2))
