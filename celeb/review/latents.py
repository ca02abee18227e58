"""The latents of one trained CVAE on val images, for `celeb traverse` (files) and the review's cards.

- `eval_images` / `EvalSet`: the val images (labels, and true factors for synthetic faces) of the
  data a config trained on.
- `review_model`: celeb.evaluation.latents.review_latents for a loaded model.
- `write_traversal`: the panels and the dimension table of one checkpoint, as PNG and CSV files.
- `review_card` / `Card`: one top trial on the review page; when its model or data cannot be read,
  the card says why instead of stopping the review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from celeb.atomic import atomic_path, write_text_atomic
from celeb.config import LATENT_TASKS, TrainConfig
from celeb.evaluation.dimensions import LABEL_MIN_MI
from celeb.evaluation.traversal import conditions_of, group_panel, images_as_tensor
from celeb.review.discover import read_meta
from celeb.review.export import LoadedModel, load_model

if TYPE_CHECKING:
    from celeb.evaluation.latents import LatentReview

PAGE_FACES = 3  # reference faces per card; the traversal of one card is faces x steps x dims images
PAGE_MAX_DIMS = 16  # active dims shown per card (most used first); `celeb traverse` shows them all


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
                 all_metrics: bool = False) -> LatentReview:
    """celeb.evaluation.latents.review_latents for a loaded CVAE (steps and span default to its config's panels);
    labels are checked against the true factors when `eval_set` has them."""
    from celeb.synth import ATTRIBUTE_FACTORS
    from celeb.evaluation.latents import review_latents

    if loaded.task not in LATENT_TASKS:
        raise ValueError(f"{loaded.source} is a {loaded.task} checkpoint; latent traversals need a cvae or nvae checkpoint")
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
    review: LatentReview
    loaded: LoadedModel


def write_traversal(checkpoint: str | Path, out_dir: str | Path | None = None, data_dir: str | Path | None = None,
                    faces: int = 4, steps: int = 7, span: float = 3.0, active_only: bool = False,
                    num_eval_images: int = 2000, groups: Sequence[int] = ()) -> TraversalResult:
    """traversal.png, conditions.png (conditional models), reconstructions.png, kl_per_dim.png and
    dimensions.csv of one CVAE or hierarchical VAE checkpoint (folder or exported file), on up to
    `num_eval_images` val images; for a hierarchical VAE also group_G.png for each of `groups` (its
    lower latent groups, channel by channel). `out_dir` defaults to CHECKPOINT_DIR/traverse or
    <file stem>_traverse beside the file."""
    checkpoint = Path(checkpoint)
    loaded = load_model(checkpoint)
    if loaded.task not in LATENT_TASKS:
        raise ValueError(f"{checkpoint} is a {loaded.task} checkpoint; `celeb traverse` needs a cvae or nvae checkpoint")
    out = Path(out_dir) if out_dir is not None else (
        checkpoint / "traverse" if checkpoint.is_dir() else checkpoint.with_name(f"{checkpoint.stem}_traverse"))
    eval_set = eval_images(loaded.config, data_dir, num_eval_images)
    review = review_model(loaded, eval_set, faces=faces, steps=steps, span=span, include_inactive=not active_only)
    if groups and loaded.task != "nvae":
        raise ValueError(f"{checkpoint} is a {loaded.task} checkpoint; --group traverses a hierarchical VAE's (nvae) groups")
    images = dict(review.images)
    for group in groups:
        x, cond = reference_faces(loaded, eval_set, faces)
        images[f"group_{group}"] = group_panel(loaded.model, x, cond, group, steps=steps, span=span)
    files = [save_png(image, out / f"{name}.png") for name, image in images.items()]
    csv_path = out / "dimensions.csv"
    write_text_atomic(csv_path, review.dimensions.to_csv(index=False))
    return TraversalResult(out_dir=out, files=files + [csv_path], review=review, loaded=loaded)


def reference_faces(loaded: LoadedModel, eval_set: EvalSet, faces: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `faces` eval images and their condition vectors, as the review's panels use them."""
    device = next(loaded.model.parameters()).device
    cond_index = [eval_set.attribute_names.index(name) for name in loaded.config.cvae.conditions]
    return (images_as_tensor(eval_set.images[:faces], device),
            conditions_of(eval_set.labels[:faces], cond_index, device))


def save_png(image: torch.Tensor | np.ndarray, path: Path) -> Path:
    """A panel (float (3,H,W) tensor or (H,W,3) uint8 array) as a PNG, written atomically."""
    from PIL import Image

    from celeb.training.tracking import as_image_array

    with atomic_path(path) as tmp:
        Image.fromarray(as_image_array(image)).save(tmp, format="PNG")
    return path


@dataclass
class Card:
    """One top trial on the page: its leaderboard row and, for a CVAE, its latent review."""

    row: dict[str, Any]
    review: LatentReview | None = None
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def review_card(row: dict[str, Any], data_dir: str | Path | None, num_eval_images: int,
                cache: dict[tuple, EvalSet], all_metrics: bool = True) -> Card:
    """A card for one leaderboard row; `cache` keeps loaded eval images per data source."""
    card = Card(row=row)
    try:
        card.config = read_meta(row["checkpoint"])["config"]
        if row["task"] not in LATENT_TASKS:
            return card
        loaded = load_model(row["checkpoint"])
        eval_set = cached_eval_images(loaded.config, data_dir, num_eval_images, cache)
        card.review = review_model(loaded, eval_set, faces=PAGE_FACES, include_inactive=False,
                                   max_dims=PAGE_MAX_DIMS, all_metrics=all_metrics)
    except (ValueError, FileNotFoundError) as error:
        hint = "" if data_dir is not None else " (pass --data-dir if the data lives elsewhere on this machine)"
        card.note = f"no panels: {error}{hint if isinstance(error, FileNotFoundError) else ''}"
    return card


def cached_eval_images(config: TrainConfig, data_dir: str | Path | None, num_images: int,
                       cache: dict[tuple, EvalSet]) -> EvalSet:
    """`eval_images`, loaded once per data source (folder, split, size, crop) across the cards."""
    d = config.data
    key = (str(data_dir or d.data_dir), d.split, d.image_size, d.crop)
    if key not in cache:
        cache[key] = eval_images(config, data_dir, num_images)
    return cache[key]
