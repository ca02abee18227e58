"""Multi-label attribute classifiers: a small CNN and torchvision's ResNet-18 / Inception-v3.

Every backbone is wrapped in `AttributeClassifier`, which takes images in [0,1] and returns a
`ClassifierOutput(logits, aux_logits)`; `aux_logits` is set only by Inception-v3 in training mode.
For the torchvision backbones the wrapper normalises inputs with ImageNet's mean/std (what their
ImageNet weights expect), and for Inception-v3 it resizes inputs smaller than 299x299 up to
299x299 (bilinear), the size its weights were trained at; 64-px cached images therefore work
with every backbone.

The heads are new `num_outputs`-way linear layers: `head` on the pooled features and, for
Inception-v3, the fc layer of its auxiliary classifier. Freezing the backbone leaves only these
trainable and also keeps the backbone's BatchNorm statistics fixed (linear probing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

BACKBONES = ("small", "resnet18", "inception_v3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_SIZE = 299


class ClassifierOutput(NamedTuple):
    """Logits (B, num_outputs) and, for Inception-v3 in training mode, its auxiliary logits."""

    logits: Tensor
    aux_logits: Tensor | None = None


def input_size(backbone: str) -> int:
    """The image size a backbone is meant for: 299 for inception_v3, else 64 (resnet18 works at any)."""
    _check_backbone(backbone)
    return INCEPTION_SIZE if backbone == "inception_v3" else 64


def _check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")


# -- the small CNN -----------------------------------------------------------------------------


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def small_cnn(width: int = 32) -> nn.Sequential:
    """A compact CNN for 64x64 inputs in the style of airbench's blocks: four stages of
    conv -> max-pool -> conv (each conv followed by BatchNorm and ReLU), widths k, 2k, 4k, 8k,
    then global average pooling. Pooling before the second conv keeps it cheap (~0.1 GFLOP per
    64-px image at k=32). Returns the feature extractor; its output is (B, 8 * width).
    """
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (width, 2 * width, 4 * width, 8 * width):  # 64 -> 32 -> 16 -> 8 -> 4 px
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), _bn_relu(c_out),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _bn_relu(c_out),
        ]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


# -- the wrapper -------------------------------------------------------------------------------


class AttributeClassifier(nn.Module):
    """Backbone features -> dropout -> linear head; see the module docstring for the input handling."""

    def __init__(
        self,
        backbone_name: str,
        backbone: nn.Module,
        feature_dim: int,
        num_outputs: int,
        dropout: float = 0.0,
        imagenet_normalize: bool = False,
        min_size: int | None = None,
    ):
        super().__init__()
        self.backbone_name = backbone_name
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_outputs)
        self.min_size = min_size
        self.frozen = False
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def head_modules(self) -> list[nn.Module]:
        """The freshly initialised output layers (trained at the full learning rate, never frozen)."""
        heads: list[nn.Module] = [self.head]
        aux = getattr(self.backbone, "AuxLogits", None)
        if aux is not None:
            heads.append(aux.fc)
        return heads

    def freeze_backbone(self) -> None:
        """Train only the heads: no gradients for the backbone, and its BatchNorm stats stay fixed."""
        self.frozen = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for head in self.head_modules():
            for p in head.parameters():
                p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> AttributeClassifier:
        super().train(mode)
        if self.frozen:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> ClassifierOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
        if self.min_size is not None and min(x.shape[-2:]) < self.min_size:
            x = F.interpolate(x, size=(self.min_size, self.min_size), mode="bilinear", align_corners=False)
        if self.imagenet_normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        features = self.backbone(x)
        aux_logits = None
        if isinstance(features, tuple):  # Inception-v3 in training mode: (features, aux_logits)
            features, aux_logits = features
        return ClassifierOutput(self.head(self.dropout(features)), aux_logits)


# -- building one ------------------------------------------------------------------------------


def build_classifier(
    backbone: str = "small",
    num_outputs: int = 40,
    pretrained: bool | str | Path = False,
    freeze_backbone: bool = False,
    dropout: float = 0.0,
) -> AttributeClassifier:
    """An attribute classifier whose forward(x in [0,1]) returns ClassifierOutput(logits, aux_logits).

    pretrained: False = random init; True = torchvision's ImageNet weights (downloaded on first use);
    a path = a local state_dict of the backbone network (for resnet18/inception_v3 as torchvision
    names it, e.g. saved from `torchvision.models.resnet18(weights=...).state_dict()`; for "small"
    the state_dict of `small_cnn()`). The original classifier layers' keys (fc.*, AuxLogits.fc.*)
    are ignored, since those heads are replaced.
    """
    _check_backbone(backbone)
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    state_dict = _pretrained_state_dict(backbone, pretrained)
    if backbone == "small":
        net, feature_dim = small_cnn(), 8 * 32
        model = AttributeClassifier(backbone, net, feature_dim, num_outputs, dropout)
    elif backbone == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        feature_dim = net.fc.in_features
        model = AttributeClassifier(backbone, net, feature_dim, num_outputs, dropout, imagenet_normalize=True)
    else:
        # transform_input maps ImageNet-normalised inputs to the [-1, 1] range the ported Google
        # weights expect; with random weights there is nothing to match, so it stays off.
        net = torchvision.models.inception_v3(
            weights=None, aux_logits=True, transform_input=state_dict is not None, init_weights=state_dict is None
        )
        feature_dim = net.fc.in_features
        net.dropout = nn.Identity()  # the wrapper's own dropout (the `dropout` argument) replaces it
        model = AttributeClassifier(
            backbone, net, feature_dim, num_outputs, dropout, imagenet_normalize=True, min_size=INCEPTION_SIZE
        )

    if state_dict is not None:
        _load_backbone(net, state_dict, backbone, pretrained)
    if hasattr(net, "fc"):
        net.fc = nn.Identity()  # the wrapper's head takes the pooled features
    if backbone == "inception_v3":
        net.AuxLogits.fc = nn.Linear(net.AuxLogits.fc.in_features, num_outputs)
    if freeze_backbone:
        model.freeze_backbone()
    return model


_HEAD_PREFIXES = ("fc.", "AuxLogits.fc.")
_SAVE_HINT = "save one with torch.save(model.state_dict(), path)"


def _pretrained_state_dict(backbone: str, pretrained: bool | str | Path) -> dict[str, Tensor] | None:
    if pretrained is False:
        return None
    if pretrained is True:
        return _download_imagenet_weights(backbone)
    path = Path(os.fspath(pretrained)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file {path} not found; pass pretrained=PATH to an existing "
            f"state_dict file for {backbone}, pretrained=True to download, or pretrained=False"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"could not read {path} as a torch state_dict ({exc}); {_SAVE_HINT}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict; {_SAVE_HINT}")
    return state


def _download_imagenet_weights(backbone: str) -> dict[str, Tensor]:
    if backbone == "small":
        raise ValueError(
            "the 'small' backbone has no ImageNet weights; pass pretrained=PATH to a local state_dict "
            "or pretrained=False"
        )
    weights = {
        "resnet18": torchvision.models.ResNet18_Weights.DEFAULT,
        "inception_v3": torchvision.models.Inception_V3_Weights.DEFAULT,
    }[backbone]
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise RuntimeError(
            f"could not download ImageNet weights for {backbone} ({exc}); "
            "pass pretrained=PATH to a local state_dict file, or pretrained=False"
        ) from exc


def _load_backbone(net: nn.Module, state_dict: dict[str, Tensor], backbone: str, source: object) -> None:
    body = {k: v for k, v in state_dict.items() if not k.startswith(_HEAD_PREFIXES)}
    expected = {k for k in net.state_dict() if not k.startswith(_HEAD_PREFIXES)}
    missing, unexpected = sorted(expected - body.keys()), sorted(body.keys() - expected)
    if missing or unexpected:
        where = "ImageNet weights" if source is True else f"weights file {source}"
        raise ValueError(
            f"{where} do not fit the {backbone} backbone: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}; save the file "
            f"from the same architecture (torchvision's {backbone} state_dict)"
        )
    try:
        net.load_state_dict(body, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"weights for {backbone} from {source} have the wrong shapes: {exc}") from exc


# -- optimisation helpers ----------------------------------------------------------------------


def parameter_groups(model: AttributeClassifier, lr: float, backbone_lr_mult: float) -> list[dict]:
    """Optimizer groups with discriminative learning rates: heads at `lr`, backbone at lr*mult.

    Frozen parameters are left out; a group with nothing trainable is dropped.
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    head_ids = {id(p) for head in model.head_modules() for p in head.parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids and p.requires_grad]
    body = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    groups = [
        {"name": "backbone", "params": body, "lr": lr * backbone_lr_mult},
        {"name": "head", "params": head, "lr": lr},
    ]
    return [g for g in groups if g["params"]]


def classifier_loss(
    out: ClassifierOutput, target: Tensor, pos_weight: Tensor | None = None, aux_weight: float = 0.4
) -> Tensor:
    """Mean binary cross-entropy with logits over images and attributes, plus aux_weight times the
    same on the auxiliary logits when present (Szegedy et al. weight the aux loss by 0.4)."""
    target = target.float()
    pw = pos_weight.float() if pos_weight is not None else None
    loss = F.binary_cross_entropy_with_logits(out.logits.float(), target, pos_weight=pw)
    if out.aux_logits is not None:
        loss = loss + aux_weight * F.binary_cross_entropy_with_logits(out.aux_logits.float(), target, pos_weight=pw)
    return loss
