"""Checkpoints that resume a run exactly: one directory per checkpoint, state.pt + meta.json.

state.pt holds everything a resumed run needs to continue bit for bit: model, optimizer, scheduler
and grad-scaler states, the epoch/step reached, the config, the loop's own state (best metric,
early-stopping counter, metric history) and every random number generator's state (torch CPU and
CUDA, numpy, Python's `random`, and the generators the loop owns). It is loaded with
`torch.load(weights_only=True)`, so it holds only tensors and plain containers: numpy's and
Python's RNG states are converted to tensors and lists. meta.json is a small human-readable
summary (epoch, metrics, config, code version). The folder is sealed last (celeb.training.sealed: a
manifest of every file's size and hash), so a checkpoint cut short while written, or while copied
to storage, is recognised and never resumed from.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

import celeb
from celeb.training import sealed
from celeb.atomic import atomic_path, write_text_atomic

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The state of every RNG a run touches, as tensors and plain containers only."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of `capture_rng_state`; `generators` are restored in place by name."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"checkpoint has no state for generator {name!r}")
        generator.set_state(state["generators"][name])


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    step: int,
    config: dict[str, Any],
    metrics: dict[str, Any],
    rng_state: dict[str, Any],
    loop_state: dict[str, Any] | None = None,
) -> Path:
    """Write directory/state.pt and directory/meta.json (each atomically), then seal the folder; return it.

    `epoch` is the number of epochs completed; `loop_state` is the training loop's own counters.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metrics = plain(metrics)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": config,
        "metrics": metrics,
        "rng_state": rng_state,
        "loop_state": plain(loop_state or {}),
    }
    with atomic_path(directory / STATE_FILE) as tmp:
        torch.save(state, tmp)
    meta = {"epoch": int(epoch), "step": int(step), "metrics": metrics, "config": config, "code": code_version()}
    write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
    sealed.seal(directory, {"epoch": int(epoch), "step": int(step)})
    return directory


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain containers only).

    A folder that is not a complete, sealed checkpoint is an IncompleteFolderError naming it.
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {directory} is not a complete checkpoint directory "
                                "(expected the epoch_NNN folder that holds state.pt)")
    try:
        sealed.check(directory)
    except sealed.IncompleteFolderError as error:
        raise sealed.IncompleteFolderError(f"checkpoint {directory} is incomplete: {error}; resume from an "
                                           "earlier checkpoint of the run") from None
    return torch.load(path, map_location=map_location, weights_only=True)


def checkpoint_name(epoch: int) -> str:
    """Folder name of the checkpoint taken after `epoch` completed epochs."""
    return f"epoch_{epoch:03d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint folders under `root` holding a state file, oldest epoch first (check them with celeb.training.sealed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("epoch_*") if (p / STATE_FILE).exists()), key=lambda p: p.name)


def prune_checkpoints(root: str | Path, keep: set[Path]) -> None:
    """Delete every checkpoint folder under `root` not in `keep` (e.g. keep the last and the best)."""
    keep = {Path(p).resolve() for p in keep}
    for path in Path(root).glob("epoch_*"):
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)


def plain(value: Any) -> Any:
    """Numpy/torch scalars and arrays -> Python numbers and lists, recursively (JSON- and weights_only-safe)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """celeb.__version__ and the git commit of the source tree, when it is a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(celeb.__file__).parent,
                                capture_output=True, text=True, timeout=5)
        sha = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"version": celeb.__version__, "git_commit": sha}
