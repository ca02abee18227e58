"""`write_review`: rank every checkpoint, review the best trials, write leaderboard.csv and review.html.

review.html is one self-contained page (render.py and its templates): a sortable, filterable table
of every checkpoint and a card per top trial with its latent traversal, condition sweeps,
reconstructions, KL chart, labelled dims, metrics and config. The roots, the output folder and the
export may each be local or a URI (celeb.storage).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from celeb import storage
from celeb.review.discover import find_checkpoints
from celeb.review.export import export_checkpoint
from celeb.review.latents import Card, EvalSet, review_card
from celeb.review.rank import RankingWarning, best_per_trial, rank_checkpoints
from celeb.review.render import render_page


@dataclass
class ReviewResult:
    """What `write_review` produced."""

    leaderboard: pd.DataFrame
    csv: str | Path
    html: str | Path
    export: str | Path | None
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
    ranked = quietly_ranked(find_checkpoints(roots), metric, mode)
    csv_path = storage.location(storage.join(out_dir, "leaderboard.csv"))
    storage.write_text(csv_path, ranked.to_csv(index=False))

    cards = review_cards(best_per_trial(ranked, top), data_dir, num_eval_images, all_metrics, progress)
    notes = list(ranked.attrs["notes"]) + [f"{card.row['trial']}: {card.note}" for card in cards if card.note]
    export_path = export_checkpoint(ranked.iloc[0]["checkpoint"], export) if export is not None else None
    html_path = storage.location(storage.join(out_dir, "review.html"))
    page = render_page(ranked, cards, roots=[str(r) for r in roots], notes=notes, export=export_path,
                       lossless=lossless)
    storage.write_text(html_path, page)
    return ReviewResult(leaderboard=ranked, csv=csv_path, html=html_path, export=export_path, cards=cards, notes=notes)


def quietly_ranked(table: pd.DataFrame, metric: str, mode: str | None) -> pd.DataFrame:
    """`rank_checkpoints` without its warnings: the review puts the notes on the page and into the result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        return rank_checkpoints(table, metric, mode)


def review_cards(top_rows: pd.DataFrame, data_dir: str | Path | None, num_eval_images: int, all_metrics: bool,
                 progress: bool) -> list[Card]:
    """A card per row, best first, sharing the loaded eval images between trials of the same data."""
    cache: dict[tuple, EvalSet] = {}
    rows = tqdm(list(top_rows.iterrows()), desc="reviewing top checkpoints", disable=not progress,
                file=sys.stderr, dynamic_ncols=True)
    return [review_card(row.to_dict(), data_dir, num_eval_images, cache, all_metrics) for _, row in rows]
