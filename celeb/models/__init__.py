"""The two model families, the conditional β-VAE (cvae) and the attribute classifier (classifier), and their one builder."""

from celeb.models.build import build_model, config_beta
from celeb.models.classifier import (
    BACKBONES,
    AttributeClassifier,
    ClassifierOutput,
    build_classifier,
    classifier_loss,
    input_size,
    parameter_groups,
)
from celeb.models.cvae import (
    ConditionalVAE,
    VAELoss,
    VAEOutput,
    capacity_schedule,
    effective_beta,
    kl_weight_schedule,
    normalized_beta_to_beta,
    standard_normal,
    vae_loss,
)

__all__ = [
    "BACKBONES",
    "AttributeClassifier",
    "ClassifierOutput",
    "ConditionalVAE",
    "VAELoss",
    "VAEOutput",
    "build_classifier",
    "build_model",
    "config_beta",
    "capacity_schedule",
    "classifier_loss",
    "effective_beta",
    "input_size",
    "kl_weight_schedule",
    "normalized_beta_to_beta",
    "parameter_groups",
    "standard_normal",
    "vae_loss",
]
