"""Export and load: one self-describing file with a model's weights, config, metrics and origin.

`export_checkpoint` writes it; `load_model` reads that or a checkpoint folder
(torch.load(weights_only=True)) and rebuilds the model in eval mode. Either may be local or at a
URI (s3://, gs://, ...): the bytes are read and written through celeb.storage.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from celeb import storage
from celeb.config import TrainConfig, config_from_dict
from celeb.models import build_model
from celeb.review.discover import read_meta
from celeb.training.checkpoint import META_FILE, STATE_FILE, code_version, plain

EXPORT_FORMAT = "celeb-model"
EXPORT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


@dataclass
class LoadedModel:
    """A trained model in eval mode with its config and the metrics of the epoch it was saved at."""

    model: nn.Module
    config: TrainConfig
    metrics: dict[str, Any]
    epoch: int
    step: int | None = None
    source: str = ""
    code: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.config.task


def export_checkpoint(checkpoint_dir: str | Path, out_file: str | Path) -> str | Path:
    """Write ONE file (atomically on a local disk) with the model weights, the config dict, metrics,
    epoch, the source folder and the code versions; `load_model` reads it. Optimizer and RNG states
    stay out: the file is for using the model, a checkpoint folder is for resuming training."""
    state = read_state(storage.join(checkpoint_dir, STATE_FILE))
    exported = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "task": state["config"].get("task"),
                "model": state["model"], "config": state["config"], "metrics": plain(state.get("metrics", {})),
                "epoch": int(state["epoch"]), "step": state.get("step"), "source": storage.canonical(checkpoint_dir),
                "code": recorded_code(checkpoint_dir) or {}, "exported_by": code_version()}
    buffer = io.BytesIO()
    torch.save(exported, buffer)
    storage.write_bytes(out_file, buffer.getvalue())
    return storage.location(out_file)


def recorded_code(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """The code versions meta.json records ({} when it records none), or None when the folder has no meta.json."""
    if not storage.exists(storage.join(checkpoint_dir, META_FILE)):
        return None
    return read_meta(checkpoint_dir).get("code", {})


def read_state(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) of a checkpoint's state.pt or an exported file, with clear errors."""
    data = storage.read_bytes(path)
    if data is None:
        hint = (f"{storage.parent(path)} is not a complete checkpoint folder (expected one holding {STATE_FILE} "
                f"and {META_FILE}, e.g. runs/<run>/checkpoints/epoch_NNN)") if storage.name(path) == STATE_FILE else \
            "pass an exported file (celeb review --export) or a checkpoint folder"
        raise FileNotFoundError(f"{path} not found: {hint}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad bytes
        raise ValueError(f"{path} {why_unreadable(data, error)}; export it again (celeb review --export) "
                         "or copy the checkpoint folder again") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise ValueError(f"{path} holds no celeb model (no 'model', 'config' and 'epoch'); pass a file written by "
                         "`celeb review --export` or a checkpoint folder")
    return state


def why_unreadable(data: bytes, error: Exception) -> str:
    """torch.load's failure in words (its own message for bytes that are not a torch file is misleading)."""
    if not data.startswith(ZIP_MAGIC):
        return "is corrupt or truncated: it is not a file torch.save wrote (no zip header)"
    if "Weights only load failed" in str(error):
        return ("holds Python objects besides tensors and plain containers, which celeb checkpoints never do: "
                "it is not one, or it is damaged")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"is corrupt or truncated ({first_line})"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A model from an exported file or a checkpoint folder (or its state.pt), in eval mode on `device`."""
    directory, state_path = checkpoint_folder_and_state(path)
    state = read_state(state_path)
    config = config_from_dict(state["config"], where=f"{state_path}: ")
    model = model_with_weights(config, state["model"], state_path)
    recorded = recorded_code(directory) if directory is not None else None
    source = str(state["source"]) if "source" in state else storage.canonical(directory or path)
    return LoadedModel(model=model.to(device).eval(), config=config, metrics=dict(state.get("metrics", {})),
                       epoch=int(state["epoch"]), step=state.get("step"), source=source,
                       code=recorded if recorded is not None else state.get("code", {}))


def checkpoint_folder_and_state(path: str | Path) -> tuple[str | None, str]:
    """The checkpoint folder `path` names (None for an exported file) and the file holding the state."""
    if storage.is_dir(path):
        return str(path), storage.join(path, STATE_FILE)
    return (storage.parent(path) if storage.name(path) == STATE_FILE else None), str(path)


def model_with_weights(config: TrainConfig, weights: dict[str, Any], state_path: str) -> nn.Module:
    """The network `config` describes with `weights` loaded, or a clear error when they do not fit."""
    model = build_model(config, pretrained=False)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"{state_path}: the weights do not fit the model its config describes "
                         f"({str(error).splitlines()[0]}); was it written by another version of celeb?") from None
    return model
