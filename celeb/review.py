"""Central review of trained checkpoints: find them, rank them, look at the best ones, export one.

A checkpoint is any folder holding both state.pt and meta.json (celeb/training/checkpoint.py), so a local
run (runs/<run>/checkpoints/epoch_NNN/) and a Ray Tune sweep (<storage>/<sweep>/<trial>/
checkpoint_00000K/) are read the same way; only meta.json is read to build the table.

- `find_checkpoints`: one row per checkpoint: trial, checkpoint, epoch, task, seed, the
  interesting and the varying config values (dotted keys) and every scalar metric.
- `rank_checkpoints`: sort on one metric. The rule (from the sweep review issue): rank on the
  objective the trial actually optimised (val/loss: recon + β·KL with the trial's own β) or on a
  held-out metric (val/mse, val/mig_fixed, ...), never on a loss with a different KL weight, so
  the β = 1 `neg_elbo` is refused for trials trained with β ≠ 1 (or a capacity target). Ranking
  val/loss across trials of different β is allowed, since it is what a β sweep's scheduler used,
  but it comes with a note (a `RankingWarning`, and a line on the page): a smaller β lowers the
  loss by itself, so that ranking partly ranks β.
- `export_checkpoint` / `load_model`: one self-describing file with the weights, the config, the
  metrics and where it came from; `load_model` reads that or a checkpoint folder
  (torch.load(weights_only=True)) and rebuilds the model in eval mode.
- `write_review`: leaderboard.csv, review.html (one self-contained page: a sortable, filterable
  table of every checkpoint and a card per top trial with its latent traversal, condition sweeps,
  reconstructions, KL chart, labelled dims, metrics and config) and, when asked, the exported best.
  Panels of decoded faces are inlined as JPEG (quality 90, no chroma subsampling) unless
  `lossless=True`: as PNG, one card's 16-dim traversal of 64 px faces is ~2.8 MB of base64 (JPEG
  ~0.5 MB), so five cards would make a 15 MB page. Charts are always PNG; `celeb traverse`
  writes every panel as PNG.
- `write_traversal`: the panels and the dimension table of one checkpoint, as files
  (`celeb traverse`).
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from celeb.atomic import atomic_path, write_text_atomic
from celeb.training.checkpoint import META_FILE, STATE_FILE, code_version, plain
from celeb.config import TrainConfig, config_from_dict, flatten, valid_keys
from celeb.dimensions import LABEL_MIN_MI
from celeb.models import build_model, config_beta

EXPORT_FORMAT = "celeb-model"
EXPORT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
ID_COLUMNS = ("rank", "trial", "epoch", "step", "task", "seed", "checkpoint")
# Config values worth a column even when every trial shares them (a reader wants to see the β).
INTERESTING_KEYS = ("cvae.beta", "cvae.beta_norm", "cvae.capacity", "cvae.latent_dim", "cvae.width",
                    "classifier.backbone", "classifier.dropout", "lr", "batch_size", "weight_decay")
TASK_SECTIONS = {"cvae": "cvae.", "classifier": "classifier."}
MIN_WORDS = ("loss", "mse", "recon", "kl", "elbo", "error")  # "neg_elbo" is a loss
MAX_WORDS = ("mig", "dci", "sap", "score", "accuracy", "auroc", "auc", "f1", "precision", "recall")
HELD_OUT_CVAE = "val/loss (each trial's own objective), val/mse or val/mig_fixed"

PAGE_FACES = 3  # reference faces per card; the traversal of one card is faces x steps x dims images
PAGE_MAX_DIMS = 16  # active dims shown per card (most used first); `celeb traverse` shows them all
PHOTO_PANELS = ("traversal", "conditions", "reconstructions")  # decoded faces; kl_per_dim is a chart
JPEG_QUALITY = 90


class RankingWarning(UserWarning):
    """A ranking that is allowed but easy to misread (e.g. val/loss across different β)."""


# ----------------------------------------------------------------------------- finding checkpoints


def find_checkpoints(roots: Sequence[str | Path]) -> pd.DataFrame:
    """One row per checkpoint folder (state.pt + meta.json) under `roots`, by trial then epoch.

    Columns: trial (the run dir or Tune trial dir's name), checkpoint (its folder), epoch, step,
    task, seed, the config values that are interesting or vary between checkpoints (dotted keys,
    lists joined by ", "), the effective KL weight `beta` of CVAE rows, and every scalar metric of
    meta.json (a metric named like a config key, i.e. the scheduled `lr`, becomes `train/lr`).
    """
    found: list[tuple[Path, Path]] = []
    for given in roots:
        if "://" in str(given):
            raise ValueError(f"{given}: remote storage is not read directly; copy the sweep first "
                             f"(e.g. `aws s3 sync {given} ./sweep-copy`) and review the local folder")
        root = Path(given)
        if not root.exists():
            raise FileNotFoundError(f"{root} not found; pass a run dir, a sweep dir or a folder holding them")
        dirs = checkpoint_dirs(root)
        if not dirs:
            raise FileNotFoundError(f"no checkpoints under {root}: looked for folders holding both {STATE_FILE} and "
                                    f"{META_FILE} (runs/<run>/checkpoints/epoch_NNN or <sweep>/<trial>/checkpoint_*)")
        found += [(root, d) for d in dirs]
    names = trial_names([trial_dir(d) for _, d in found])
    rows, seen = [], set()
    for (_, directory), name in zip(found, names):
        meta = read_meta(directory)
        key = (str(trial_dir(directory).resolve()), meta.get("epoch"))
        if key in seen:  # a Tune trial may also hold fit()'s own copy of the same checkpoint
            continue
        seen.add(key)
        rows.append(checkpoint_row(name, directory, meta))
    return checkpoint_table(rows)


def checkpoint_dirs(root: Path) -> list[Path]:
    """Folders under (or equal to) `root` that hold both state.pt and meta.json, sorted."""
    return sorted(meta.parent for meta in root.rglob(META_FILE) if (meta.parent / STATE_FILE).is_file())


def trial_dir(checkpoint: Path) -> Path:
    """The run or trial a checkpoint belongs to: runs/<run>/checkpoints/epoch_N -> runs/<run>;
    <sweep>/<trial>/checkpoint_N -> <sweep>/<trial>."""
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def trial_names(dirs: Sequence[Path]) -> list[str]:
    """Each trial dir's name, with its parent's name in front where two different dirs share one."""
    owners: dict[str, set[Path]] = {}
    for d in dirs:
        owners.setdefault(d.name, set()).add(d.resolve())
    return [d.name if len(owners[d.name]) == 1 else f"{d.parent.name}/{d.name}" for d in dirs]


def read_meta(directory: Path) -> dict[str, Any]:
    """meta.json of a checkpoint folder, with a clear error when it is not the file save_checkpoint writes."""
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the checkpoint is damaged: delete {directory} "
                         "or copy it again from the sweep's storage") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "epoch" not in meta:
        raise ValueError(f"{path} lacks the 'epoch' and 'config' of a celeb checkpoint; is {directory} one?")
    return meta


def checkpoint_row(trial: str, directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard row (config values under "config" until `checkpoint_table` picks the columns)."""
    config = flatten(meta["config"])
    task = config.get("task", "cvae")
    other_sections = tuple(prefix for name, prefix in TASK_SECTIONS.items() if name != task)
    own = {k: v for k, v in config.items() if not k.startswith(other_sections) and k not in ("task", "seed")}
    row = {"trial": trial, "checkpoint": str(directory), "epoch": meta["epoch"], "step": meta.get("step"),
           "task": task, "seed": config.get("seed"), "config": own}
    metrics = {(f"train/{k}" if k in row["config"] else k): v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and k not in ("epoch", "step")}
    if task == "cvae" and "beta" not in metrics:
        metrics["beta"] = config_beta(config_from_dict(meta["config"]))
    row["metrics"] = metrics
    return row


def checkpoint_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame: id columns, then config columns (interesting, then varying), then metrics."""
    config_keys = list(dict.fromkeys(k for row in rows for k in row["config"]))
    def distinct(key: str) -> int:  # among the rows of the tasks that have the key
        return len({json.dumps(row["config"][key], default=str) for row in rows if key in row["config"]})

    varying = [k for k in config_keys if distinct(k) > 1]
    chosen = [k for k in INTERESTING_KEYS if k in config_keys] + [k for k in varying if k not in INTERESTING_KEYS]
    metric_keys = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    metric_keys = sorted(metric_keys, key=lambda k: not k.startswith("val/"))  # stable: val/ first
    records = []
    for row in rows:
        record = {k: row[k] for k in ID_COLUMNS if k in row}
        record.update({k: cell(row["config"].get(k)) for k in chosen})
        record.update({k: row["metrics"].get(k, math.nan) for k in metric_keys})
        records.append(record)
    columns = [c for c in ID_COLUMNS if c != "rank"] + chosen + metric_keys
    table = pd.DataFrame.from_records(records, columns=columns)
    table = table.dropna(axis=1, how="all")  # e.g. cvae.beta_norm when no trial set it
    return table.sort_values(["trial", "epoch"], kind="stable").reset_index(drop=True)


def cell(value: Any) -> Any:
    """A config value as one table cell (lists joined by ", ")."""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return value


def config_columns(table: pd.DataFrame) -> list[str]:
    """The dotted config-key columns of a `find_checkpoints` table."""
    keys = set(valid_keys())
    return [c for c in table.columns if c in keys]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a `find_checkpoints` table (not ids, not config values)."""
    skip = set(ID_COLUMNS) | set(config_columns(table))
    return [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])]


# ----------------------------------------------------------------------------- ranking


def infer_mode(metric: str) -> str | None:
    """"min" or "max" from a metric's name (val/mse -> min, val/mig_fixed -> max); None if unclear."""
    words = set(re.split(r"[/_.\-\s]+", metric.lower()))
    is_min = bool(words & set(MIN_WORDS))
    is_max = bool(words & set(MAX_WORDS))
    return None if is_min == is_max else ("min" if is_min else "max")


def rank_checkpoints(table: pd.DataFrame, metric: str, mode: str | None = None) -> pd.DataFrame:
    """`table` sorted best first on `metric`, with a 1-based `rank` column (blank where it has no value).

    `mode` ("min"/"max") is inferred from the metric's name when not given. Refused: a metric the
    checkpoints do not report (the error lists them), and the β = 1 neg_elbo for trials trained
    with another KL weight. Allowed rankings that are easy to misread emit a `RankingWarning`; the
    notes are also kept in `.attrs["notes"]` (with `.attrs["metric"]` and `.attrs["mode"]`).
    """
    check_metric(table, metric)
    if mode is None:
        mode = infer_mode(metric)
        if mode is None:
            raise ValueError(f"cannot tell from its name whether a higher or a lower {metric} is better; "
                             "pass --mode min or --mode max")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    refuse_other_kl_weight(table, metric)
    notes = ranking_notes(table, metric)
    for note in notes:
        warnings.warn(note, RankingWarning, stacklevel=2)

    values = pd.to_numeric(table[metric], errors="coerce")
    finite = values.where(np.isfinite(values))
    order = finite.sort_values(ascending=mode == "min", na_position="last", kind="stable").index
    ranked = table.loc[order].reset_index(drop=True)
    has_value = finite.loc[order].notna().to_numpy()
    ranks = [int(r) if ok else pd.NA for r, ok in zip(np.cumsum(has_value), has_value)]
    ranked.insert(0, "rank", pd.array(ranks, dtype="Int64"))
    ranked.attrs.update(metric=metric, mode=mode, notes=notes)
    return ranked


def check_metric(table: pd.DataFrame, metric: str) -> None:
    """A clear error for a metric no checkpoint reports, with the closest names and all of them."""
    available = [c for c in metric_columns(table) if table[c].notna().any()]
    if metric in available:
        return
    close = difflib.get_close_matches(metric, available, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"no checkpoint reports the metric {metric!r}; {hint}available: {', '.join(available)}")


def refuse_other_kl_weight(table: pd.DataFrame, metric: str) -> None:
    """Refuse the β = 1 ELBO for CVAE trials whose own objective weighs the KL differently."""
    if "elbo" not in metric.lower() or "beta" not in table:
        return
    cvae = table[table["task"] == "cvae"]
    capacity = cvae["cvae.capacity"].fillna(0) if "cvae.capacity" in cvae else pd.Series(0.0, index=cvae.index)
    other = cvae[~np.isclose(cvae["beta"].astype(float), 1.0) | (capacity > 0)]
    if other.empty:
        return
    betas = sorted({round(float(b), 4) for b in other["beta"]})
    example = other.iloc[0]
    raise ValueError(
        f"refusing to rank on {metric}: it weighs the KL by 1, but {other['trial'].nunique()} trial(s) trained "
        f"with another KL weight (β = {', '.join(map(str, betas[:6]))}{' ...' if len(betas) > 6 else ''}"
        f"{' or a capacity target' if (capacity > 0).any() else ''}; e.g. {example['trial']}). Ranking on a loss "
        "with a different KL weight favours whichever β happens to suit it, not the best trial. "
        f"Rank on {HELD_OUT_CVAE} instead")


def ranking_notes(table: pd.DataFrame, metric: str) -> list[str]:
    """Caveats of ranking `table` on `metric`: different objectives, training-set metrics, mixed tasks."""
    notes = []
    rows = table[table[metric].notna()]
    if rows["task"].nunique() > 1:
        notes.append(f"{metric} ranks {' and '.join(sorted(rows['task'].unique()))} checkpoints together; "
                     "review one task per call for a meaningful order")
    cvae = rows[rows["task"] == "cvae"]
    betas = sorted(set(np.round(cvae["beta"].astype(float), 4))) if "beta" in cvae else []
    leaf = metric.rsplit("/", 1)[-1]
    if len(betas) > 1 and leaf == "loss":
        notes.append(f"{metric} is each trial's own objective, recon + β·KL, and these trials use different β "
                     f"({betas[0]:g} to {betas[-1]:g}): they optimise different objectives, and a smaller β lowers "
                     "the loss by itself, so this order partly ranks β. Compare val/loss within one β, or rank "
                     "on a held-out metric (val/mse, val/mig_fixed)")
    elif len(betas) > 1 and leaf in ("recon", "kl"):
        notes.append(f"{metric} is one side of the trade-off β sets (a smaller β favours recon, a larger one kl), "
                     f"and these trials use β from {betas[0]:g} to {betas[-1]:g}")
    if "cvae.capacity" in cvae and (cvae["cvae.capacity"].fillna(0) > 0).any() and leaf == "loss":
        notes.append("some trials train with a capacity target (β·|KL − C|): their loss also depends on C")
    if metric.startswith("train/"):
        notes.append(f"{metric} is measured on augmented training batches (during KL warm-up with a smaller KL "
                     "weight); prefer a val/ metric")
    return notes


def best_per_trial(ranked: pd.DataFrame, top: int) -> pd.DataFrame:
    """The best-ranked checkpoint of each of the first `top` trials (rows without a rank left out)."""
    rated = ranked[ranked["rank"].notna()]
    return rated.drop_duplicates("trial", keep="first").head(top)


# ----------------------------------------------------------------------------- export and load


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


def export_checkpoint(checkpoint_dir: str | Path, out_file: str | Path) -> Path:
    """Write ONE file (atomically) with the model weights, the config dict, metrics, epoch, the
    source folder and the code versions; `load_model` reads it. Optimizer and RNG states stay out:
    the file is for using the model, a checkpoint folder is for resuming training."""
    checkpoint_dir, out_file = Path(checkpoint_dir), Path(out_file)
    state = read_state(checkpoint_dir / STATE_FILE)
    meta_path = checkpoint_dir / META_FILE
    meta = read_meta(checkpoint_dir) if meta_path.exists() else {}
    exported = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "task": state["config"].get("task"),
                "model": state["model"], "config": state["config"], "metrics": plain(state.get("metrics", {})),
                "epoch": int(state["epoch"]), "step": state.get("step"), "source": str(checkpoint_dir.resolve()),
                "code": meta.get("code", {}), "exported_by": code_version()}
    with atomic_path(out_file) as tmp:
        torch.save(exported, tmp)
    return out_file


def read_state(path: Path) -> dict[str, Any]:
    """torch.load(weights_only=True) of a checkpoint's state.pt or an exported file, with clear errors."""
    if not path.exists():
        hint = (f"{path.parent} is not a complete checkpoint folder (expected one holding {STATE_FILE} and "
                f"{META_FILE}, e.g. runs/<run>/checkpoints/epoch_NNN)") if path.name == STATE_FILE else \
            "pass an exported file (celeb review --export) or a checkpoint folder"
        raise FileNotFoundError(f"{path} not found: {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad bytes
        raise ValueError(f"{path} {why_unreadable(path, error)}; export it again (celeb review --export) "
                         "or copy the checkpoint folder again") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise ValueError(f"{path} holds no celeb model (no 'model', 'config' and 'epoch'); pass a file written by "
                         "`celeb review --export` or a checkpoint folder")
    return state


def why_unreadable(path: Path, error: Exception) -> str:
    """torch.load's failure in words (its own message for bytes that are not a torch file is misleading)."""
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            return "is corrupt or truncated: it is not a file torch.save wrote (no zip header)"
    if "Weights only load failed" in str(error):
        return ("holds Python objects besides tensors and plain containers, which celeb checkpoints never do: "
                "it is not one, or it is damaged")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"is corrupt or truncated ({first_line})"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A model from an exported file or a checkpoint folder (or its state.pt), in eval mode on `device`."""
    path = Path(path)
    if path.is_dir():
        directory, state_path = path, path / STATE_FILE
    else:
        directory, state_path = (path.parent if path.name == STATE_FILE else None), path
    state = read_state(state_path)
    config = config_from_dict(state["config"], where=f"{state_path}: ")
    model = build_model(config, pretrained=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{state_path}: the weights do not fit the model its config describes "
                         f"({str(error).splitlines()[0]}); was it written by another version of celeb?") from None
    code = state.get("code", {})
    if directory is not None and (directory / META_FILE).exists():
        code = read_meta(directory).get("code", {})
    return LoadedModel(model=model.to(device).eval(), config=config, metrics=dict(state.get("metrics", {})),
                       epoch=int(state["epoch"]), step=state.get("step"),
                       source=str(state.get("source", (directory or path).resolve())), code=code)


# ----------------------------------------------------------------------------- latents of one model


def eval_images(config: TrainConfig, data_dir: str | Path | None, num_images: int) -> EvalSet:
    """Up to `num_images` val images of the data a config trained on, their labels and (for the
    synthetic faces, whose data dir holds factors.parquet) their true factors."""
    from celeb.data.dataset import load_data

    d = config.data
    source = Path(data_dir) if data_dir is not None else Path(d.data_dir)
    if not str(source) or str(source) == ".":
        raise ValueError("the checkpoint's config names no data dir; pass --data-dir DIR (a `celeb prepare` folder)")
    data = load_data(source, split=d.split, image_size=d.image_size, crop=d.crop)
    rows = data.indices("val")[:num_images]
    if len(rows) == 0:
        raise ValueError(f"{source}: the '{d.split}' split has no val images to review the latents on")
    return EvalSet(np.ascontiguousarray(data.images[rows]), np.asarray(data.labels[rows]),
                   tuple(data.attribute_names), true_factors_of(source, rows))


@dataclass
class EvalSet:
    """The images a model's latents are reviewed on."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N, 40) bool
    attribute_names: tuple[str, ...]
    true_factors: pd.DataFrame | None = None  # (N, F) for synthetic faces, else None


def true_factors_of(data_dir: Path, rows: np.ndarray) -> pd.DataFrame | None:
    """The true generative factors of `rows` when the data dir holds factors.parquet (synthetic faces)."""
    from celeb.synth import FACTOR_NAMES, FACTORS_FILE

    path = Path(data_dir) / FACTORS_FILE
    if not path.exists():
        return None
    return pd.read_parquet(path, columns=list(FACTOR_NAMES)).iloc[rows].reset_index(drop=True)


def review_model(loaded: LoadedModel, eval_set: EvalSet, faces: int = PAGE_FACES, steps: int | None = None,
                 span: float | None = None, include_inactive: bool = True, max_dims: int | None = None,
                 all_metrics: bool = False):
    """celeb.traversal.review_latents for a loaded CVAE (steps and span default to its config's panels);
    labels are checked against the true factors when `eval_set` has them."""
    from celeb.synth import ATTRIBUTE_FACTORS
    from celeb.traversal import review_latents

    if loaded.task != "cvae":
        raise ValueError(f"{loaded.source} is a {loaded.task} checkpoint; latent traversals need a cvae checkpoint")
    c = loaded.config.cvae
    with torch.no_grad():
        return review_latents(loaded.model, eval_set.images, eval_set.labels, eval_set.attribute_names,
                              c.conditions, num_faces=faces, steps=steps or c.panel_steps,
                              span=c.panel_span if span is None else span, include_inactive=include_inactive,
                              max_dims=max_dims, true_factors=eval_set.true_factors,
                              attribute_factors=ATTRIBUTE_FACTORS, all_metrics=all_metrics,
                              seed=loaded.config.seed)


def labelled_dimensions(dimensions: pd.DataFrame) -> pd.DataFrame:
    """The active dims whose best attribute reaches the labelling threshold, most used first."""
    keep = dimensions["active"].astype(bool) & (dimensions["best_mi"] >= LABEL_MIN_MI)
    columns = ["dim", "label", "kl", "best_attribute", "best_mi", "best_corr"]
    columns += [c for c in ("true_factor", "label_matches") if c in dimensions]  # synthetic faces only
    return dimensions.loc[keep, columns]


@dataclass
class TraversalResult:
    """What `write_traversal` wrote, and the review it came from."""

    out_dir: Path
    files: list[Path]
    review: Any  # celeb.traversal.LatentReview
    loaded: LoadedModel


def write_traversal(checkpoint: str | Path, out_dir: str | Path | None = None, data_dir: str | Path | None = None,
                    faces: int = 4, steps: int = 7, span: float = 3.0, active_only: bool = False,
                    num_eval_images: int = 2000) -> TraversalResult:
    """traversal.png, conditions.png (conditional models), reconstructions.png, kl_per_dim.png and
    dimensions.csv of one CVAE checkpoint (folder or exported file), on up to `num_eval_images` val
    images. `out_dir` defaults to CHECKPOINT_DIR/traverse or <file stem>_traverse beside the file."""
    checkpoint = Path(checkpoint)
    loaded = load_model(checkpoint)
    if loaded.task != "cvae":
        raise ValueError(f"{checkpoint} is a {loaded.task} checkpoint; `celeb traverse` needs a cvae checkpoint")
    out = Path(out_dir) if out_dir is not None else (
        checkpoint / "traverse" if checkpoint.is_dir() else checkpoint.with_name(f"{checkpoint.stem}_traverse"))
    review = review_model(loaded, eval_images(loaded.config, data_dir, num_eval_images), faces=faces, steps=steps, span=span,
                          include_inactive=not active_only)
    files = [save_png(image, out / f"{name}.png") for name, image in review.images.items()]
    csv_path = out / "dimensions.csv"
    write_text_atomic(csv_path, review.dimensions.to_csv(index=False))
    return TraversalResult(out_dir=out, files=files + [csv_path], review=review, loaded=loaded)


def save_png(image: torch.Tensor | np.ndarray, path: Path) -> Path:
    """A panel (float (3,H,W) tensor or (H,W,3) uint8 array) as a PNG, written atomically."""
    from PIL import Image

    from celeb.training.tracking import as_image_array

    with atomic_path(path) as tmp:
        Image.fromarray(as_image_array(image)).save(tmp, format="PNG")
    return path


# ----------------------------------------------------------------------------- the review


@dataclass
class Card:
    """One top trial on the page: its leaderboard row and, for a CVAE, its latent review."""

    row: dict[str, Any]
    review: Any = None  # celeb.traversal.LatentReview
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class ReviewResult:
    """What `write_review` produced."""

    leaderboard: pd.DataFrame
    csv: Path
    html: Path
    export: Path | None
    cards: list[Card]
    notes: list[str]


def write_review(roots: Sequence[str | Path], out_dir: str | Path, metric: str, mode: str | None = None,
                 top: int = 5, export: str | Path | None = None, data_dir: str | Path | None = None,
                 num_eval_images: int = 2000, progress: bool = True, lossless: bool = False,
                 all_metrics: bool = True) -> ReviewResult:
    """Rank every checkpoint under `roots` on `metric` and write out_dir/leaderboard.csv, out_dir/review.html
    and (when `export` is a path) the best checkpoint as one file.

    The best checkpoint of each of the `top` best trials gets a card; CVAE cards show the latent
    traversal, condition sweeps, reconstructions and KL chart on up to `num_eval_images` val images
    of the data each trial trained on (`data_dir` overrides the config's), the labelled dims and
    the metrics. When a card's model or data cannot be read, the card says why and the review goes on.
    `lossless` inlines the face panels as PNG rather than JPEG (a page about 5x larger).
    `all_metrics` scores every card's latents with all fixed-setting disentanglement metrics
    (a few seconds each), not only MIG; on synthetic faces the labels are checked against the truth.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} not found; pass the folder `celeb prepare` wrote")
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    out_dir = Path(out_dir)
    table = find_checkpoints(roots)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)  # the notes go on the page and into the result
        ranked = rank_checkpoints(table, metric, mode)
    notes = list(ranked.attrs["notes"])
    csv_path = out_dir / "leaderboard.csv"
    write_text_atomic(csv_path, ranked.to_csv(index=False))

    cards, cache = [], {}
    top_rows = best_per_trial(ranked, top)
    for _, row in tqdm(list(top_rows.iterrows()), desc="reviewing top checkpoints", disable=not progress,
                       file=sys.stderr, dynamic_ncols=True):
        cards.append(review_card(row.to_dict(), data_dir, num_eval_images, cache, all_metrics))
    notes += [f"{card.row['trial']}: {card.note}" for card in cards if card.note]

    export_path = export_checkpoint(ranked.iloc[0]["checkpoint"], export) if export is not None else None
    html_path = out_dir / "review.html"
    page = render_page(ranked, cards, roots=[str(r) for r in roots], notes=notes, export=export_path,
                       lossless=lossless)
    write_text_atomic(html_path, page)
    return ReviewResult(leaderboard=ranked, csv=csv_path, html=html_path, export=export_path, cards=cards, notes=notes)


def review_card(row: dict[str, Any], data_dir: str | Path | None, num_eval_images: int,
                cache: dict[tuple, EvalSet], all_metrics: bool = True) -> Card:
    """A card for one leaderboard row; `cache` keeps loaded eval images per data source."""
    card = Card(row=row)
    try:
        card.config = read_meta(Path(row["checkpoint"]))["config"]
        if row["task"] != "cvae":
            return card
        loaded = load_model(row["checkpoint"])
        d = loaded.config.data
        key = (str(data_dir or d.data_dir), d.split, d.image_size, d.crop)
        if key not in cache:
            cache[key] = eval_images(loaded.config, data_dir, num_eval_images)
        card.review = review_model(loaded, cache[key], faces=PAGE_FACES, include_inactive=False,
                                   max_dims=PAGE_MAX_DIMS, all_metrics=all_metrics)
    except (ValueError, FileNotFoundError) as error:
        hint = "" if data_dir is not None else " (pass --data-dir if the data lives elsewhere on this machine)"
        card.note = f"no panels: {error}{hint if isinstance(error, FileNotFoundError) else ''}"
    return card


# ----------------------------------------------------------------------------- the page


def render_page(ranked: pd.DataFrame, cards: Sequence[Card], roots: Sequence[str], notes: Sequence[str],
                export: Path | None, lossless: bool = False) -> str:
    """The review as one self-contained HTML page (inline CSS, JS and base64 PNGs; no network)."""
    metric, mode = ranked.attrs["metric"], ranked.attrs["mode"]
    e = html.escape
    best = ranked.iloc[0]
    exported = (f"exported to <code>{e(str(export))}</code>" if export is not None
                else "not exported (add <code>--export best.pt</code>)")
    headline = (f"Ranked by <code>{e(metric)}</code> ({mode}: {'lower' if mode == 'min' else 'higher'} is better): "
                f"{len(ranked)} checkpoints of {ranked['trial'].nunique()} trials under "
                f"{', '.join(f'<code>{e(r)}</code>' for r in roots)}. Best: <b>{e(str(best['trial']))}</b> epoch "
                f"{e(str(best['epoch']))} ({e(metric)} {e(fmt(best[metric]))}), {exported}.")
    note_items = "".join(f"<li>{e(n)}</li>" for n in notes)
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>celeb review: {e(metric)}</title>", f"<style>{PAGE_CSS}</style></head>",
        '<body data-state="loading">',
        f'<header><h1>Checkpoint review</h1><p class="headline">{headline}</p>',
        f'<ul class="notes">{note_items}</ul>' if notes else "", "</header>",
        f'<section id="top"><h2>Top {len(cards)} trial{"s" if len(cards) != 1 else ""}</h2>',
        '<p class="hint">The best checkpoint of each trial; click a picture to enlarge it.</p>',
        '<div class="cards">', *(render_card(i + 1, card, metric, lossless) for i, card in enumerate(cards)),
        "</div></section>",
        render_leaderboard(ranked, metric),
        '<div id="lightbox" hidden><img alt="enlarged panel"></div>',
        f"<script>{PAGE_JS}</script>", "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def render_card(position: int, card: Card, metric: str, lossless: bool = False) -> str:
    e, row = html.escape, card.row
    trial = str(row["trial"])
    head = (f'<article class="card" id="card-{position}" data-trial="{e(trial)}"><h3>#{position} {e(trial)}</h3>'
            f'<p class="sub">epoch {e(str(row["epoch"]))} · {e(str(row["task"]))} · seed {e(str(row["seed"]))}</p>'
            f'<p class="value"><code>{e(metric)}</code> {e(fmt(row[metric]))}</p>')
    body = []
    if card.note:
        body.append(f'<p class="note">{e(card.note)}</p>')
    if card.review is not None:
        captions = {"traversal": f"latent traversal: active dims by KL (up to {PAGE_MAX_DIMS}), each swept ±span·σ",
                    "conditions": "condition attributes swept off → on",
                    "reconstructions": "val originals (top) and reconstructions",
                    "kl_per_dim": "KL per latent dim (nats)"}
        for name in ("traversal", "conditions", "reconstructions", "kl_per_dim"):
            if name in card.review.images:
                kind = "png" if lossless or name not in PHOTO_PANELS else "jpeg"
                url, width = data_url(card.review.images[name], kind)
                body.append(f'<figure><img class="panel" data-panel="{name}" alt="{e(name)} of {e(trial)}" '
                            f'width="{2 * width}" src="{url}"><figcaption>{e(captions[name])}</figcaption></figure>')
        body.append(render_dims(labelled_dimensions(card.review.dimensions)))
        scores = {f"review/{k}": v for k, v in card.review.metrics.items()}
        body.append(key_value_table("latents on the reviewed val images", scores))
        body.extend(f'<p class="note">{e(note)}</p>' for note in card.review.notes)
    metrics = {k: v for k, v in row.items() if (k == "beta" or (k.startswith("val/") and k.count("/") == 1))
               and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
    body.append(key_value_table("metrics at this epoch", metrics))
    config_text = yaml.safe_dump(card.config, sort_keys=False) if card.config else ""
    if config_text:
        body.append(f"<details><summary>config</summary><pre>{e(config_text)}</pre></details>")
    body.append(f'<p class="path">checkpoint <code>{e(str(row["checkpoint"]))}</code></p>')
    return head + "".join(body) + "</article>"


def render_dims(dims: pd.DataFrame) -> str:
    if dims.empty:
        return (f'<p class="dims-empty">no labelled latent dimensions (no active dim reaches MI {LABEL_MIN_MI} '
                "with an attribute)</p>")
    e = html.escape
    truth = "true_factor" in dims

    def check(r) -> str:
        mark = "✓" if r.label_matches else "✗"
        return f'<td class="{"ok" if r.label_matches else "bad"}">{mark} {e(str(r.true_factor))}</td>'

    rows = "".join(f"<tr><td>{int(r.dim)}</td><td>{e(str(r.best_attribute))}</td><td>{r.best_mi:.2f}</td>"
                   f"<td>{r.best_corr:+.2f}</td><td>{r.kl:.2f}</td>{check(r) if truth else ''}</tr>"
                   for r in dims.itertuples())
    truth_head = "<th title=\"the dim's most informative true factor (synthetic faces)\">true factor</th>" if truth else ""
    return ('<table class="dims"><caption>labelled dims</caption><thead><tr><th>dim</th><th>attribute</th>'
            f"<th>MI</th><th>corr</th><th>KL</th>{truth_head}</tr></thead><tbody>{rows}</tbody></table>")


def key_value_table(caption: str, values: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(fmt(v))}</td></tr>" for k, v in values.items())
    return f'<table class="kv"><caption>{e(caption)}</caption><tbody>{rows}</tbody></table>'


def leaderboard_columns(ranked: pd.DataFrame, metric: str) -> list[str]:
    """The page's columns: ids, the ranking metric, config values, then the headline metrics
    (one "/" in the name, so per-attribute ones stay in the CSV), then the checkpoint path."""
    first = ["rank", "trial", "epoch", metric]
    config = [c for c in config_columns(ranked) if c not in first]
    metrics = [c for c in metric_columns(ranked) if c not in first and c != "step"
               and c.count("/") <= 1 and not c.startswith("time/")]
    return first + ["task", "seed"] + config + metrics + ["checkpoint"]


def render_leaderboard(ranked: pd.DataFrame, metric: str) -> str:
    e = html.escape
    columns = [c for c in dict.fromkeys(leaderboard_columns(ranked, metric)) if c in ranked]
    numeric = {c: pd.api.types.is_numeric_dtype(ranked[c]) for c in columns}
    head = "".join(f'<th data-type="{"num" if numeric[c] else "text"}" title="sort by {e(c)}"'
                   f'{" class=ranking" if c == metric else ""}>{e(c)}</th>' for c in columns)
    first_of_trial = ~ranked["trial"].duplicated()
    body = []
    for index, row in ranked[columns].iterrows():
        cells = []
        for c in columns:
            value = row[c]
            missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
            sort_key = "" if missing else (repr(float(value)) if numeric[c] else str(value))
            cells.append(f'<td data-v="{e(sort_key)}">{"" if missing else e(fmt(value))}</td>')
        body.append(f'<tr data-trial="{e(str(row["trial"]))}" data-best="{int(first_of_trial[index])}">'
                    f'{"".join(cells)}</tr>')
    return ('<section id="leaderboard"><h2>Leaderboard</h2><div class="controls">'
            '<input id="filter" type="search" placeholder="filter: words, or col>value / col<value / col=value" '
            'size="48"> <label><input id="best-only" type="checkbox"> best checkpoint per trial</label> '
            '<span id="count"></span> <span class="hint">click a column to sort</span></div>'
            f'<div class="table-wrap"><table id="board"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div></section>")


def fmt(value: Any) -> str:
    """A cell as text: floats with 4 significant digits."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def data_url(image: torch.Tensor | np.ndarray, kind: str = "png") -> tuple[str, int]:
    """A panel as an inline data: URL, "png" (lossless) or "jpeg" (no chroma subsampling: faces are
    small), and its width in pixels."""
    from PIL import Image

    from celeb.training.tracking import as_image_array

    buffer = io.BytesIO()
    picture = Image.fromarray(as_image_array(image))
    if kind == "png":
        picture.save(buffer, format="PNG", optimize=True)
    else:
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}", picture.width


PAGE_CSS = """
td.ok { color: #1a7f37; } td.bad { color: #b42318; }
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fafafa}
h1{margin:.6em 0 .2em}h2{margin:1.2em 0 .3em}code{background:#eee;padding:0 .25em;border-radius:3px}
.headline{font-size:15px;max-width:80em}.notes{color:#8a4b00;max-width:80em}.hint{color:#777;font-size:12px}
.cards{display:flex;gap:1em;overflow-x:auto;padding-bottom:.8em;align-items:flex-start}
.card{flex:0 0 540px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .9em}
.card h3{margin:.1em 0;word-break:break-all}.card .sub{margin:0;color:#666}.card .value{font-size:16px;margin:.3em 0}
.card .note{color:#a33}.card figure{margin:.5em 0}.card img.panel{max-width:100%;height:auto;cursor:zoom-in;
image-rendering:pixelated;border:1px solid #eee}.card figcaption{font-size:12px;color:#666}
.card .path{font-size:11px;word-break:break-all}
.card pre{font-size:11px;max-height:20em;overflow:auto;background:#f4f4f4;padding:.4em}
table.kv,table.dims{border-collapse:collapse;font-size:12px;margin:.4em 0;width:100%}
table.kv th{text-align:left;font-weight:normal;color:#555}table.kv td,table.dims td{text-align:right}
table.kv th,table.kv td,table.dims td,table.dims th{padding:1px 6px;border-bottom:1px solid #f0f0f0}
caption{text-align:left;font-weight:600;padding:.3em 0}
.controls{margin:.4em 0}#count{margin:0 1em;font-weight:600}.table-wrap{overflow:auto;max-height:75vh;border:1px solid #ddd;background:#fff}
#board{border-collapse:collapse;font-size:12px;white-space:nowrap}
#board th{position:sticky;top:0;background:#f0f0f0;cursor:pointer;padding:3px 6px;text-align:left}
#board th.ranking{background:#dde9f7}
#board th[data-dir=asc]::after{content:" ▲"}#board th[data-dir=desc]::after{content:" ▼"}
#board td{padding:2px 6px;border-bottom:1px solid #f2f2f2}#board tr:hover td{background:#fffbe6}
#board tr[data-best="1"] td:nth-child(2){font-weight:600}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);overflow:auto;cursor:zoom-out;z-index:9}
#lightbox img{display:block;margin:2em auto;max-width:none;image-rendering:pixelated;background:#fff}
"""

# Sorting, filtering, the best-per-trial switch and the lightbox. State lives in the URL's hash
# (#sort=<column>&dir=asc|desc&q=<filter>&best=1), so a view can be shared as a link.
PAGE_JS = r"""
(function () {
  try {
    var table = document.getElementById("board"), tbody = table.tBodies[0];
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var rows = Array.prototype.slice.call(tbody.rows);
    var names = heads.map(function (th) { return th.textContent; });
    var filter = document.getElementById("filter"), bestOnly = document.getElementById("best-only");
    var count = document.getElementById("count"), state = {sort: null, dir: "asc", q: "", best: false};

    function readHash() {
      var params = new URLSearchParams(location.hash.slice(1));
      state.sort = params.get("sort"); state.dir = params.get("dir") === "desc" ? "desc" : "asc";
      state.q = params.get("q") || ""; state.best = params.get("best") === "1";
      filter.value = state.q; bestOnly.checked = state.best;
    }
    function writeHash() {
      var params = new URLSearchParams();
      if (state.sort !== null) { params.set("sort", state.sort); params.set("dir", state.dir); }
      if (state.q) params.set("q", state.q);
      if (state.best) params.set("best", "1");
      history.replaceState(null, "", "#" + params.toString());
    }
    function key(row, col) { return row.cells[col].getAttribute("data-v"); }
    function sortRows() {
      var col = names.indexOf(state.sort);
      heads.forEach(function (th) { th.removeAttribute("data-dir"); });
      if (col < 0) return;
      heads[col].setAttribute("data-dir", state.dir);
      var numeric = heads[col].getAttribute("data-type") === "num", sign = state.dir === "desc" ? -1 : 1;
      var order = rows.map(function (row, i) { return [row, i]; });
      order.sort(function (a, b) {
        var x = key(a[0], col), y = key(b[0], col);
        if (x === "" || y === "") return (x === "") - (y === "") || a[1] - b[1];  // blanks last
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return sign * c || a[1] - b[1];
      });
      order.forEach(function (pair) { tbody.appendChild(pair[0]); });
    }
    function matches(row, term) {
      var m = term.match(/^(.+?)(<=|>=|=|<|>)(.+)$/);
      var col = m ? names.indexOf(m[1]) : -1;
      if (col < 0) return row.textContent.toLowerCase().indexOf(term) >= 0;
      var v = key(row, col), x = parseFloat(v), y = parseFloat(m[3]);
      if (m[2] === "=") return isNaN(y) ? v.toLowerCase() === m[3] : x === y;
      if (v === "" || isNaN(x) || isNaN(y)) return false;
      return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y}[m[2]];
    }
    function filterRows() {
      var terms = state.q.toLowerCase().split(/\s+/).filter(Boolean), shown = 0;
      rows.forEach(function (row) {
        var ok = (!state.best || row.getAttribute("data-best") === "1") &&
                 terms.every(function (t) { return matches(row, t); });
        row.hidden = !ok; shown += ok;
      });
      count.textContent = shown + " of " + rows.length + " checkpoints";
      count.setAttribute("data-shown", shown);
    }
    function update() { sortRows(); filterRows(); writeHash(); }

    heads.forEach(function (th, i) {
      th.addEventListener("click", function () {
        state.dir = state.sort === names[i] && state.dir === "asc" ? "desc" : "asc";
        state.sort = names[i]; update();
      });
    });
    filter.addEventListener("input", function () { state.q = filter.value; update(); });
    bestOnly.addEventListener("change", function () { state.best = bestOnly.checked; update(); });
    var box = document.getElementById("lightbox"), big = box.querySelector("img");
    Array.prototype.forEach.call(document.querySelectorAll("img.panel"), function (img) {
      img.addEventListener("click", function () { big.src = img.src; box.hidden = false; });
    });
    box.addEventListener("click", function () { box.hidden = true; });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") box.hidden = true; });
    readHash(); update();
    document.body.setAttribute("data-state", "ready");
  } catch (err) {
    document.body.setAttribute("data-state", "error");
    document.body.setAttribute("data-error", String(err));
  }
})();
"""
