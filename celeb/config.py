"""The typed training config: `TrainConfig` and its sections, built from YAML, nested or flat dicts.

One `TrainConfig` describes a whole run (task, optimisation, data, model). It is built from

- a YAML file (`load_config`), with `--set key=value` overrides whose values are parsed as YAML,
- a nested dict ({"cvae": {"beta": 4.0}}) or a flat dict with dotted keys ({"cvae.beta": 4.0}, what
  Ray Tune passes a trial), or a mix (`config_from_dict`),

through the project's one config mechanism (celeb.typed): an unknown key is an error naming the key,
its section and the closest valid key; a value of the wrong type names the key and the expected
type. `validate_keys` checks the keys of a search space without building anything.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from celeb.data.schema import ATTRIBUTE_NAMES
from celeb.typed import (ConfigError, at_least, build, dotted_keys, flatten, nest, parse_override, read_yaml_mapping,
                         unknown_key_error)


LATENT_TASKS = ("cvae", "nvae")  # the VAE families: latents, traversals, disentanglement, the cvae section


@dataclass
class DataConfig:
    data_dir: str = ""  # output of `celeb prepare` (+ `celeb split`)
    split: str = "balanced"  # folder under DATA_DIR/splits/
    image_size: int = 64  # which image cache to use (DATA_DIR/cache/c<crop>_s<size>)
    crop: int = 148
    # where the loaders' rows live (celeb.data.loader): auto picks device, ram or stream from the
    # split's size and memory_gb (None: a share of the GPU's free memory and of the available RAM)
    placement: Literal["auto", "device", "ram", "stream"] = "auto"
    memory_gb: float | None = None
    augment: Literal["none", "flip", "light", "heavy"] = "light"  # CVAE training batches


@dataclass
class CVAEConfig:
    latent_dim: int = 64
    width: int = 32  # k: channels k, 2k, 4k, 8k
    conditions: list[str] = field(default_factory=list)  # attribute names fed to encoder and decoder
    beta: float = 1.0
    beta_norm: float | None = None  # if set, overrides beta: beta = beta_norm * pixels / latent_dim
    warmup_epochs: float = 0.0  # linear KL-weight warm-up from 0 to beta
    capacity: float = 0.0  # Burgess et al.: target KL (nats) grows 0 -> capacity ...
    capacity_epochs: int = 0  # ... over this many epochs
    recon: Literal["bce", "mse", "logistic"] = "bce"  # the decoder's likelihood (celeb.models.likelihood)
    panel_every: int = 1  # latent traversal panels and the dimension table every N evaluations (0: never)
    panel_faces: int = 3  # reference val faces in the traversal panels
    panel_steps: int = 7  # values per traversal row
    panel_span: float = 3.0  # each dim is swept over mean ± span·σ of its aggregate posterior
    final_metrics: bool = False  # after the last epoch, also DCI, SAP and the β-VAE/FactorVAE scores (seconds)


@dataclass
class NVAEConfig:
    """The hierarchy of the nvae task (celeb.models.hvae). Its objective, conditions, top group size
    (cvae.latent_dim), width (cvae.width), likelihood (cvae.recon) and panels are the cvae
    section's, shared by both VAE families, so that β means the same in both."""

    scales: int = field(default=2, metadata=at_least(1))  # latent scales from 8x8 up (at 64 px: 8, 16)
    groups: int = field(default=2, metadata=at_least(1))  # latent groups per scale
    latent_channels: int = field(default=8, metadata=at_least(1))  # channels of each spatial latent group
    cells: int = field(default=1, metadata=at_least(1))  # residual cells per resolution (the depth)
    residual_posterior: bool = True  # q as an offset from the prior (NVAE's residual normal)
    # coefficient of the spectral regulariser (raise it if training diverges)
    spectral: float = field(default=0.01, metadata=at_least(0))
    kl_balance: bool = True  # balance the groups' KL while the KL weight warms up
    # > 0: after the last epoch also val/iw_bits_per_dim, the NLL by importance sampling with this many samples
    iw_samples: int = field(default=0, metadata=at_least(0))


@dataclass
class ClassifierConfig:
    backbone: Literal["small", "resnet18", "inception_v3"] = "small"
    pretrained: bool | str = False  # True: torchvision's ImageNet weights; a path: a local state_dict
    freeze_backbone: bool = False
    backbone_lr_mult: float = 0.1  # backbone lr = lr * this (the head gets lr)
    use_pos_weight: bool = True  # weigh positives by neg/pos per attribute in the loss
    dropout: float = 0.0
    augment: Literal["none", "flip", "light", "heavy"] = "heavy"  # classifier training batches


@dataclass
class TrainConfig:
    task: Literal["cvae", "nvae", "classifier"] = "cvae"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw"] = "adamw"
    scheduler: Literal["cosine", "none"] = "cosine"
    lr_warmup_epochs: float = 0.0  # linear lr warm-up, then the scheduler
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    early_stopping_metric: str = "val/loss"  # also picks the "best" checkpoint
    early_stopping_mode: Literal["min", "max"] = "min"
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"  # auto: bf16 autocast on cuda, none on cpu
    channels_last: bool | Literal["auto"] = "auto"  # auto: on cuda
    # torch.compile the model; auto: on cuda (as CUDA graphs, mode reduce-overhead), off on the CPU
    compile: bool | Literal["auto"] = "auto"
    max_train_batches: int | None = None  # cap batches per epoch (tests, benchmarks)
    eval_every: int = 1  # evaluate on val every N epochs (and after the last)
    num_recon: int = 16  # CVAE: val images shown with their reconstructions
    data: DataConfig = field(default_factory=DataConfig)
    cvae: CVAEConfig = field(default_factory=CVAEConfig)
    nvae: NVAEConfig = field(default_factory=NVAEConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        check_values(self)


SECTIONS: dict[str, type] = {"data": DataConfig, "cvae": CVAEConfig, "nvae": NVAEConfig, "classifier": ClassifierConfig}


# Keys that were renamed: old key -> (new key, old value -> new value). Saved configs (checkpoints,
# exports, Tune's restored trials) are migrated; a file a person edits gets a message saying how.
RENAMED: dict[str, tuple[str, dict[Any, Any]]] = {
    "data.on_device": ("data.placement", {True: "device", False: "ram", None: "auto"}),
}


def migrate(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat config with renamed keys (RENAMED) under their new names and values."""
    out = dict(flat)
    for old, (new, values) in RENAMED.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, values.get(value, value))
    return out


def valid_keys() -> list[str]:
    """Every settable key, dotted: "seed", "lr", ..., "data.data_dir", "cvae.beta", ..."""
    return dotted_keys(TrainConfig)


def validate_keys(flat_keys: Iterable[str], where: str = "") -> None:
    """Raise ConfigError for the first key that is not a settable config key (dotted form)."""
    known = valid_keys()
    for key in flat_keys:
        if key in SECTIONS:
            raise ConfigError(f"{where}config key '{key}' is a section, not a value; set its keys, "
                              f"e.g. '{key}.{dataclasses.fields(SECTIONS[key])[0].name}'", key)
        if key in RENAMED:
            new, values = RENAMED[key]
            how = ", ".join(f"{old!r} -> {value!r}" for old, value in values.items())
            raise ConfigError(f"{where}config key '{key}' is now '{new}'; write {new} instead ({how})", key)
        if key not in known:
            error = unknown_key_error(key, known)
            raise ConfigError(f"{where}{error}", key)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (YAML- and JSON-able) of a config; `config_from_dict` inverts it."""
    return dataclasses.asdict(config)


def config_from_dict(d: Mapping[str, Any], where: str = "") -> TrainConfig:
    """Build a TrainConfig from a nested, flat (dotted keys) or mixed dict; unset keys keep defaults.

    `where` prefixes error messages (e.g. "configs/x.yaml: ").
    """
    flat = migrate({k: v for k, v in flatten(d).items() if not (k in SECTIONS and v is None)})  # "cvae:" empty
    try:
        return build(TrainConfig, nest(flat, SECTIONS))
    except ConfigError as error:
        raise ConfigError(f"{where}{error}", error.key) from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config and apply `--set key=value` overrides on top."""
    raw, source = read_yaml_mapping(path, "configs/")
    flat = {k: v for k, v in flatten(raw).items() if not (k in SECTIONS and v is None)}
    for key in flat:
        try:
            validate_keys([key])
        except ConfigError as error:
            raise ConfigError(source.describe(error), key) from None
    for text_override in overrides:
        key, value = parse_override(text_override)
        validate_keys([key], where=f"--set {text_override}: ")
        flat[key] = value
    try:
        return config_from_dict(flat)
    except ConfigError as error:
        raise ConfigError(source.describe(error), error.key) from None


def check_values(config: TrainConfig) -> None:
    """Range checks that types alone cannot express."""
    positive = {"epochs": config.epochs, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
                "eval_every": config.eval_every, "data.image_size": config.data.image_size,
                "cvae.latent_dim": config.cvae.latent_dim, "cvae.width": config.cvae.width,
                "cvae.panel_steps": config.cvae.panel_steps}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {value}", key)
    if not config.lr > 0:
        raise ConfigError(f"config key 'lr' must be > 0, got {config.lr}", "lr")
    non_negative = {"weight_decay": config.weight_decay, "lr_warmup_epochs": config.lr_warmup_epochs,
                    "num_recon": config.num_recon, "data.crop": config.data.crop, "cvae.beta": config.cvae.beta,
                    "cvae.warmup_epochs": config.cvae.warmup_epochs, "cvae.capacity": config.cvae.capacity,
                    "cvae.capacity_epochs": config.cvae.capacity_epochs, "cvae.panel_every": config.cvae.panel_every,
                    "cvae.panel_faces": config.cvae.panel_faces, "cvae.panel_span": config.cvae.panel_span,
                    "classifier.backbone_lr_mult": config.classifier.backbone_lr_mult}
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}", key)
    if config.cvae.beta_norm is not None and config.cvae.beta_norm < 0:
        raise ConfigError(f"config key 'cvae.beta_norm' must be >= 0, got {config.cvae.beta_norm}", "cvae.beta_norm")
    if config.data.memory_gb is not None and not config.data.memory_gb > 0:
        raise ConfigError(f"config key 'data.memory_gb' must be > 0 or null, got {config.data.memory_gb}",
                          "data.memory_gb")
    if not 0.0 <= config.classifier.dropout < 1.0:
        raise ConfigError(f"config key 'classifier.dropout' must be in [0, 1), got {config.classifier.dropout}", "classifier.dropout")
    for key, value in (("grad_clip", config.grad_clip), ("max_train_batches", config.max_train_batches),
                       ("early_stopping_patience", config.early_stopping_patience)):
        if value is not None and value <= 0:
            raise ConfigError(f"config key '{key}' must be > 0 or null, got {value}", key)
    if config.cvae.capacity > 0 and config.cvae.capacity_epochs < 1:
        raise ConfigError("config key 'cvae.capacity_epochs' must be >= 1 when cvae.capacity > 0 "
                          "(the epochs over which the KL target grows)", "cvae.capacity_epochs")
    for name in config.cvae.conditions:
        if name not in ATTRIBUTE_NAMES:
            close = difflib.get_close_matches(name, ATTRIBUTE_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(ATTRIBUTE_NAMES)}"
            raise ConfigError(f"config key 'cvae.conditions': unknown attribute '{name}'{hint}", "cvae.conditions")
    if len(set(config.cvae.conditions)) != len(config.cvae.conditions):
        raise ConfigError(f"config key 'cvae.conditions' lists an attribute twice: {config.cvae.conditions}", "cvae.conditions")
