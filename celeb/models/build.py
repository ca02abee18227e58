"""The one model builder: the network a TrainConfig describes, for training, review, traverse and export.

A checkpoint stores its config (`model_args` in nanoGPT's terms): whoever loads it rebuilds the same
network from that config here, so training and review can never drift apart.
"""

from __future__ import annotations

from torch import nn

from celeb.config import TrainConfig
from celeb.models.classifier import build_classifier
from celeb.models.cvae import ConditionalVAE, effective_beta
from celeb.models.hvae import HierarchicalVAE
from celeb.data.schema import ATTRIBUTE_NAMES


def build_model(config: TrainConfig, image_size: int | None = None, pretrained: bool | None = None) -> nn.Module:
    """The untrained network of `config`.

    `image_size`: the side of the images it will see (training passes its cache's; default:
    config.data.image_size). `pretrained`: load the classifier's ImageNet (or local) weights as
    the config says (None), or not (False: weights are loaded from a checkpoint right after).
    """
    size = image_size if image_size is not None else config.data.image_size
    if config.task == "cvae":
        c = config.cvae
        return ConditionalVAE(image_size=size, latent_dim=c.latent_dim, width=c.width, cond_dim=len(c.conditions),
                              recon=c.recon)
    if config.task == "nvae":
        c, n = config.cvae, config.nvae
        return HierarchicalVAE(image_size=size, latent_dim=c.latent_dim, width=c.width, cond_dim=len(c.conditions),
                               scales=n.scales, groups=n.groups, latent_channels=n.latent_channels, cells=n.cells,
                               residual_posterior=n.residual_posterior, recon=c.recon)
    c = config.classifier
    return build_classifier(c.backbone, num_outputs=len(ATTRIBUTE_NAMES),
                            pretrained=c.pretrained if pretrained is None else pretrained,
                            freeze_backbone=c.freeze_backbone, dropout=c.dropout)


def config_beta(config: TrainConfig, image_size: int | None = None) -> float:
    """The KL weight a CVAE config trains with: cvae.beta, or the β that cvae.beta_norm implies."""
    c = config.cvae
    return effective_beta(c.beta, c.beta_norm, c.latent_dim, image_size if image_size is not None else config.data.image_size)
