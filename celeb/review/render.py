"""The review page: plain view objects built from the ranked table and the cards, rendered by Jinja2.

The markup lives in templates/ (review.html.j2 with the card, dims table and leaderboard macros), the
styles and the script in static/; both are inlined so review.html stays one self-contained file (no
network). Autoescaping is on: every value reaches the page escaped exactly once. Values are formatted
here (`fmt`, the sort keys), so the templates only place text.

Panels of decoded faces are inlined as JPEG (quality 90, no chroma subsampling) unless `lossless`:
as PNG, one card's 16-dim traversal of 64 px faces is ~2.8 MB of base64 (JPEG ~0.5 MB), so five
cards would make a 15 MB page. Charts are always PNG.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd
import torch
import yaml
from markupsafe import Markup

from celeb.evaluation.dimensions import LABEL_MIN_MI
from celeb.review.latents import PAGE_MAX_DIMS, Card, labelled_dimensions
from celeb.review.rank import config_columns, metric_columns

if TYPE_CHECKING:
    from celeb.evaluation.latents import LatentReview

PANEL_CAPTIONS = {  # the card's panels, in page order
    "traversal": f"latent traversal: active dims by KL (up to {PAGE_MAX_DIMS}), each swept ±span·σ",
    "conditions": "condition attributes swept off → on",
    "reconstructions": "val originals (top) and reconstructions",
    "kl_per_dim": "KL per latent dim (nats)",
}
PHOTO_PANELS = ("traversal", "conditions", "reconstructions")  # decoded faces; kl_per_dim is a chart
JPEG_QUALITY = 90


@dataclass
class Panel:
    """One inlined picture of a card."""

    name: str
    caption: str
    url: str  # data: URL
    width: int  # pixels of the image (shown at twice that)


@dataclass
class DimRow:
    """One labelled latent dim, its numbers already formatted."""

    dim: int
    attribute: str
    mi: str
    corr: str
    kl: str
    matches: bool | None = None  # label agrees with the true factor (synthetic faces only)
    true_factor: str = ""


@dataclass
class LatentsView:
    """What a CVAE card shows about its latents."""

    panels: list[Panel]
    dims: list[DimRow]
    truth: bool  # whether the dims have a true-factor column
    scores: dict[str, str]
    notes: list[str]


@dataclass
class CardView:
    """One card as the template places it."""

    position: int
    trial: str
    epoch: str
    task: str
    seed: str
    value: str
    note: str
    latents: LatentsView | None
    metrics: dict[str, str]
    config_text: str
    checkpoint: str


@dataclass
class Column:
    """One leaderboard column."""

    name: str
    numeric: bool
    ranking: bool  # the column the page is ranked by


@dataclass
class BoardRow:
    """One leaderboard row: its cells as (sort key, shown text) pairs; blank for a missing value."""

    trial: str
    best: int  # 1 for the best checkpoint of its trial
    cells: list[tuple[str, str]]


@dataclass
class Leaderboard:
    """The page's table of every checkpoint."""

    columns: list[Column]
    rows: list[BoardRow]


def render_page(ranked: pd.DataFrame, cards: Sequence[Card], roots: Sequence[str], notes: Sequence[str],
                export: str | Path | None, lossless: bool = False) -> str:
    """The review as one self-contained HTML page (inline CSS, JS and base64 images; no network)."""
    metric, mode = ranked.attrs["metric"], ranked.attrs["mode"]
    best = ranked.iloc[0]
    return environment().get_template("review.html.j2").render(
        metric=metric, mode=mode, better="lower" if mode == "min" else "higher",
        checkpoints=len(ranked), trials=ranked["trial"].nunique(), roots=list(roots),
        best={"trial": str(best["trial"]), "epoch": str(best["epoch"]), "value": fmt(best[metric])},
        export=None if export is None else str(export), notes=list(notes),
        cards=[card_view(i + 1, card, metric, lossless) for i, card in enumerate(cards)],
        board=leaderboard_view(ranked, metric), label_min_mi=LABEL_MIN_MI)


@functools.cache
def environment() -> jinja2.Environment:
    """The page's templates, from the installed package (not the working directory), autoescaped."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("celeb.review", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.globals["static"] = static_text
    return env


@functools.cache
def static_text(name: str) -> Markup:
    """A file of static/ to inline verbatim (CSS and JS are not HTML text: escaping would break them)."""
    return Markup(resources.files("celeb.review").joinpath("static", name).read_text(encoding="utf-8"))


def card_view(position: int, card: Card, metric: str, lossless: bool = False) -> CardView:
    """A card's values as text for the template."""
    row = card.row
    return CardView(position=position, trial=str(row["trial"]), epoch=str(row["epoch"]), task=str(row["task"]),
                    seed=str(row["seed"]), value=fmt(row[metric]), note=card.note,
                    latents=None if card.review is None else latents_view(card.review, lossless),
                    metrics=formatted(epoch_metrics(row)),
                    config_text=yaml.safe_dump(card.config, sort_keys=False) if card.config else "",
                    checkpoint=str(row["checkpoint"]))


def latents_view(review: LatentReview, lossless: bool) -> LatentsView:
    """The panels, labelled dims, scores and notes of a card's latent review."""
    panels = [panel(name, review.images[name], lossless) for name in PANEL_CAPTIONS if name in review.images]
    dims = labelled_dimensions(review.dimensions)
    truth = "true_factor" in dims
    return LatentsView(panels=panels, dims=[dim_row(r, truth) for r in dims.itertuples()], truth=truth,
                       scores=formatted({f"review/{k}": v for k, v in review.metrics.items()}),
                       notes=list(review.notes))


def panel(name: str, image: torch.Tensor | np.ndarray, lossless: bool) -> Panel:
    """A panel inlined as PNG when lossless or a chart, else as JPEG (decoded faces)."""
    kind = "png" if lossless or name not in PHOTO_PANELS else "jpeg"
    url, width = data_url(image, kind)
    return Panel(name=name, caption=PANEL_CAPTIONS[name], url=url, width=width)


def dim_row(r: Any, truth: bool) -> DimRow:
    """One row of `labelled_dimensions` (an itertuples row) as text."""
    row = DimRow(dim=int(r.dim), attribute=str(r.best_attribute), mi=f"{r.best_mi:.2f}", corr=f"{r.best_corr:+.2f}",
                 kl=f"{r.kl:.2f}")
    if truth:
        row.matches, row.true_factor = bool(r.label_matches), str(r.true_factor)
    return row


def epoch_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The card's "metrics at this epoch": β and the headline val/ metrics that have a value."""
    return {k: v for k, v in row.items() if (k == "beta" or (k.startswith("val/") and k.count("/") == 1))
            and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}


def formatted(values: dict[str, Any]) -> dict[str, str]:
    """`values` with each value as `fmt` shows it."""
    return {k: fmt(v) for k, v in values.items()}


def leaderboard_columns(ranked: pd.DataFrame, metric: str) -> list[str]:
    """The page's columns: ids, the ranking metric, config values, then the headline metrics
    (one "/" in the name, so per-attribute ones stay in the CSV), then the checkpoint path."""
    first = ["rank", "trial", "epoch", metric]
    config = [c for c in config_columns(ranked) if c not in first]
    metrics = [c for c in metric_columns(ranked) if c not in first and c != "step"
               and c.count("/") <= 1 and not c.startswith("time/")]
    return first + ["task", "seed"] + config + metrics + ["checkpoint"]


def leaderboard_view(ranked: pd.DataFrame, metric: str) -> Leaderboard:
    """Every checkpoint's row with sort keys the page's script reads (data-v)."""
    columns = [c for c in dict.fromkeys(leaderboard_columns(ranked, metric)) if c in ranked]
    numeric = {c: bool(pd.api.types.is_numeric_dtype(ranked[c])) for c in columns}
    first_of_trial = ~ranked["trial"].duplicated()
    rows = [BoardRow(trial=str(row["trial"]), best=int(first_of_trial[index]),
                     cells=[board_cell(row[c], numeric[c]) for c in columns])
            for index, row in ranked[columns].iterrows()]
    return Leaderboard(columns=[Column(c, numeric[c], c == metric) for c in columns], rows=rows)


def board_cell(value: Any, numeric: bool) -> tuple[str, str]:
    """(sort key, shown text) of one cell: numbers sort by their full value, text as shown."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    return (repr(float(value)) if numeric else str(value)), fmt(value)


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
