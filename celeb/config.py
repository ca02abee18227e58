"""The typed training config: dataclasses, and building them from YAML, nested or flat dicts.

One `TrainConfig` describes a whole run (task, optimisation, data, model). It is built from

- a YAML file (`load_config`), with `--set key=value` overrides whose values are parsed as YAML,
- a nested dict ({"cvae": {"beta": 4.0}}) or a flat dict with dotted keys ({"cvae.beta": 4.0}, what
  Ray Tune passes a trial), or a mix (`config_from_dict`).

Every key and value is checked: an unknown key is an error naming the key, its section and the
closest valid key; a value of the wrong type is an error naming the key and the expected type.
`validate_keys` checks the keys of a search space without building anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from celeb.data.schema import ATTRIBUTE_NAMES


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says which and how to fix it."""


@dataclass
class DataConfig:
    data_dir: str = ""  # output of `celeb prepare` (+ `celeb split`)
    split: str = "balanced"  # folder under DATA_DIR/splits/
    image_size: int = 64  # which image cache to use (DATA_DIR/cache/c<crop>_s<size>)
    crop: int = 148
    on_device: bool | None = None  # keep the whole split on the GPU; None: yes on cuda
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
    recon: Literal["bce", "mse"] = "bce"
    panel_every: int = 1  # latent traversal panels and the dimension table every N evaluations (0: never)
    panel_faces: int = 3  # reference val faces in the traversal panels
    panel_steps: int = 7  # values per traversal row
    panel_span: float = 3.0  # each dim is swept over mean ± span·σ of its aggregate posterior
    final_metrics: bool = False  # after the last epoch, also DCI, SAP and the β-VAE/FactorVAE scores (seconds)


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
    task: Literal["cvae", "classifier"] = "cvae"
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
    compile: bool = False  # torch.compile the model
    max_train_batches: int | None = None  # cap batches per epoch (tests, benchmarks)
    eval_every: int = 1  # evaluate on val every N epochs (and after the last)
    num_recon: int = 16  # CVAE: val images shown with their reconstructions
    data: DataConfig = field(default_factory=DataConfig)
    cvae: CVAEConfig = field(default_factory=CVAEConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        check_values(self)


SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
SECTIONS: dict[str, type] = {"data": DataConfig, "cvae": CVAEConfig, "classifier": ClassifierConfig}


def valid_keys() -> list[str]:
    """Every settable key, dotted: "seed", "lr", ..., "data.data_dir", "cvae.beta", ..."""
    keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _unknown_key_error(key: str, where: str = "") -> ConfigError:
    section = key.split(".")[0] if "." in key and key.split(".")[0] in SECTIONS else "top level"
    candidates = valid_keys()
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(candidates)}"
    return ConfigError(f"{where}unknown config key '{key}' (section: {section}){hint}")


def validate_keys(flat_keys: Iterable[str], where: str = "") -> None:
    """Raise ConfigError for the first key that is not a settable config key (dotted form)."""
    known = set(valid_keys())
    for key in flat_keys:
        if key in SECTIONS:
            raise ConfigError(f"{where}config key '{key}' is a section, not a value; set its keys, "
                              f"e.g. '{key}.{dataclasses.fields(SECTIONS[key])[0].name}'")
        if key not in known:
            raise _unknown_key_error(key, where)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"cvae": {"beta": 4}} -> {"cvae.beta": 4}; already-dotted keys pass through."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (YAML- and JSON-able) of a config; `config_from_dict` inverts it."""
    return dataclasses.asdict(config)


def config_from_dict(d: Mapping[str, Any], where: str = "") -> TrainConfig:
    """Build a TrainConfig from a nested, flat (dotted keys) or mixed dict; unset keys keep defaults.

    `where` prefixes error messages (e.g. "configs/x.yaml: ").
    """
    flat = {k: v for k, v in flatten(d).items() if not (k in SECTIONS and v is None)}  # "cvae:" left empty
    validate_keys(flat, where)
    hints = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}
    hints[""] = typing.get_type_hints(TrainConfig)
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        value = _coerce(key, value, hints[section][name], where)
        (sections[section] if section else top)[name] = value
    try:
        return TrainConfig(**top, **{name: SECTIONS[name](**kw) for name, kw in sections.items()})
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """"cvae.beta=4" -> ("cvae.beta", 4): the value is parsed as YAML (so 4 is an int, [a, b] a list)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE; write e.g. --set cvae.beta=4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error})") from None
    return key.strip(), parsed


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config and apply `--set key=value` overrides on top."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found; see configs/ for examples")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top, got {type(raw).__name__}")
    lines = key_lines(text)
    flat = flatten(raw)
    for key in flat:
        if not (key in SECTIONS and flat[key] is None):
            validate_keys([key], where=f"{path}, line {lines[key]}: " if key in lines else f"{path}: ")
    for text_override in overrides:
        key, value = parse_override(text_override)
        validate_keys([key], where=f"--set {text_override}: ")
        flat[key] = value
    try:
        return config_from_dict(flat)
    except ConfigError as error:
        key = _key_named_in(str(error), flat)
        line = f", line {lines[key]}" if key in lines else ""
        raise ConfigError(f"{path}{line}: {error}") from None


def key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line number in a YAML text, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                name = f"{prefix}{key_node.value}"
                lines[name] = key_node.start_mark.line + 1
                walk(value_node, f"{name}.")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def _key_named_in(message: str, flat: Mapping[str, Any]) -> str | None:
    for key in sorted(flat, key=len, reverse=True):
        if f"'{key}'" in message:
            return key
    return None


def _coerce(key: str, value: Any, annotation: Any, where: str = "") -> Any:
    """Return `value` as the annotated type (int -> float is allowed), or raise ConfigError."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):  # numpy/torch scalars
        value = value.item()
    ok, coerced = _match(value, annotation)
    if not ok:
        raise ConfigError(
            f"{where}config key '{key}' must be {_describe(annotation)}, got {value!r} ({type(value).__name__})"
        )
    return coerced


def _match(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, coerced = _match(value, option)
            if ok:
                return True, coerced
        return False, None
    if origin is Literal:
        allowed = typing.get_args(annotation)
        return any(value == a and type(value) is type(a) for a in allowed), value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):  # "--set cvae.conditions=Male" means one condition
            value = [value]
        if not isinstance(value, (list, tuple)):
            return False, None
        items = [_match(v, item_type) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if annotation is type(None):
        return value is None, None
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, str) and SCIENTIFIC.match(value):  # PyYAML reads 1e-3 as a string
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if annotation is str:
        return isinstance(value, (str, Path)), str(value) if isinstance(value, (str, Path)) else None
    raise TypeError(f"unsupported config annotation {annotation!r}")


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))


def check_values(config: TrainConfig) -> None:
    """Range checks that types alone cannot express."""
    positive = {"epochs": config.epochs, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
                "eval_every": config.eval_every, "data.image_size": config.data.image_size,
                "cvae.latent_dim": config.cvae.latent_dim, "cvae.width": config.cvae.width,
                "cvae.panel_steps": config.cvae.panel_steps}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {value}")
    if not config.lr > 0:
        raise ConfigError(f"config key 'lr' must be > 0, got {config.lr}")
    non_negative = {"weight_decay": config.weight_decay, "lr_warmup_epochs": config.lr_warmup_epochs,
                    "num_recon": config.num_recon, "data.crop": config.data.crop, "cvae.beta": config.cvae.beta,
                    "cvae.warmup_epochs": config.cvae.warmup_epochs, "cvae.capacity": config.cvae.capacity,
                    "cvae.capacity_epochs": config.cvae.capacity_epochs, "cvae.panel_every": config.cvae.panel_every,
                    "cvae.panel_faces": config.cvae.panel_faces, "cvae.panel_span": config.cvae.panel_span,
                    "classifier.backbone_lr_mult": config.classifier.backbone_lr_mult}
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
    if config.cvae.beta_norm is not None and config.cvae.beta_norm < 0:
        raise ConfigError(f"config key 'cvae.beta_norm' must be >= 0, got {config.cvae.beta_norm}")
    if not 0.0 <= config.classifier.dropout < 1.0:
        raise ConfigError(f"config key 'classifier.dropout' must be in [0, 1), got {config.classifier.dropout}")
    for key, value in (("grad_clip", config.grad_clip), ("max_train_batches", config.max_train_batches),
                       ("early_stopping_patience", config.early_stopping_patience)):
        if value is not None and value <= 0:
            raise ConfigError(f"config key '{key}' must be > 0 or null, got {value}")
    if config.cvae.capacity > 0 and config.cvae.capacity_epochs < 1:
        raise ConfigError("config key 'cvae.capacity_epochs' must be >= 1 when cvae.capacity > 0 "
                          "(the epochs over which the KL target grows)")
    for name in config.cvae.conditions:
        if name not in ATTRIBUTE_NAMES:
            close = difflib.get_close_matches(name, ATTRIBUTE_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(ATTRIBUTE_NAMES)}"
            raise ConfigError(f"config key 'cvae.conditions': unknown attribute '{name}'{hint}")
    if len(set(config.cvae.conditions)) != len(config.cvae.conditions):
        raise ConfigError(f"config key 'cvae.conditions' lists an attribute twice: {config.cvae.conditions}")
