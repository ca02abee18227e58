"""The multi-label attribute classifier as a training task: BCE-with-logits over all attributes
(+ Inception's aux head), weighted by each attribute's positive weight, and its val metrics."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from celeb.config import TrainConfig
from celeb.data.dataset import CelebData
from celeb.data.loader import BatchLoader
from celeb.data.splits import positive_weight_array
from celeb.evaluation.classification import attribute_metrics, majority_baseline
from celeb.models import build_model, classifier_loss, input_size, parameter_groups
from celeb.training.adapter import DIVERGENCE_ADVICE, At, Evaluation, Visuals, image_size_of, split_indices


class ClassifierTask:
    """Multi-label attribute classifier: BCE-with-logits over all attributes (+ Inception's aux head)."""

    epoch_metrics: ClassVar[tuple[str, ...]] = ("val/loss", "val/accuracy", "val/balanced_accuracy", "val/auroc",
                                                "train/loss")
    divergence_advice: ClassVar[str] = DIVERGENCE_ADVICE
    final_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TrainConfig, data: CelebData, device: torch.device) -> None:
        self.config, self.device = config, device
        self.augment = config.classifier.augment
        self.names = tuple(data.attribute_names)
        warn_if_upscaled(config.classifier.backbone, image_size_of(data))
        train_idx, _ = split_indices(data, config.data.split)
        self.pos_weight = None
        if config.classifier.use_pos_weight:
            weights = data.pos_weight if data.pos_weight is not None else positive_weight_array(data.labels[train_idx])
            self.pos_weight = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=device)

    def build_model(self) -> nn.Module:
        return build_model(self.config)

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return parameter_groups(model, lr, self.config.classifier.backbone_lr_mult)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, at: At, noise: torch.Generator) -> tuple[Tensor, dict]:
        return classifier_loss(model(x), y, pos_weight=self.pos_weight), {}

    def train_extras(self, at: At) -> dict[str, float]:
        return {}

    def evaluate(self, model: nn.Module, loader: BatchLoader, at: At, final: bool) -> Evaluation:
        """Val loss, accuracy, balanced accuracy and AUROC (+ per attribute), and the majority baseline."""
        logits, targets, loss_sum, n = [], [], 0.0, 0
        for x, y in loader:
            out = model(x)
            loss_sum = loss_sum + classifier_loss(out, y, pos_weight=self.pos_weight).float() * x.shape[0]
            n += x.shape[0]
            logits.append(out.logits.float().cpu())
            targets.append(y.float().cpu())
        logits_np, targets_np = torch.cat(logits).numpy(), torch.cat(targets).numpy()
        metrics: dict[str, Any] = {"val/loss": (loss_sum / n).item()}
        metrics.update({f"val/{k}": v for k, v in attribute_metrics(logits_np, targets_np, self.names).items()})
        baseline = majority_baseline(targets_np, self.names)
        metrics.update({f"val/baseline_{k}": baseline[k] for k in ("accuracy", "balanced_accuracy", "auroc")
                        if k in baseline})
        return Evaluation(metrics)

    def visuals(self, model: nn.Module, evaluation: Evaluation, epoch: int, final: bool) -> Visuals:
        return Visuals()


def warn_if_upscaled(backbone: str, image_size: int) -> None:
    """Inception V3 upscales smaller images to its 299 px, which loses what it was trained to see."""
    wanted = input_size(backbone)
    if image_size < wanted and backbone == "inception_v3":
        warnings.warn(f"{backbone} is trained on {image_size}-px images, upscaled to {wanted} px; for its full "
                      f"detail prepare a {wanted}-px cache (`celeb prepare CELEBA_DIR --out DATA --size {wanted} "
                      f"--crop 178`) and set data.image_size: {wanted}, data.crop: 178", stacklevel=3)
