"""Central review of trained checkpoints: find them, rank them, look at the best ones, export one.

A checkpoint is any folder holding both state.pt and meta.json (celeb/training/checkpoint.py), so a local
run (runs/<run>/checkpoints/epoch_NNN/) and a Ray Tune sweep (<storage>/<sweep>/<trial>/
checkpoint_00000K/) are read the same way; only meta.json is read to build the table. A sweep is
read where Tune stored it, a local folder or a URI (s3://, gs://), through celeb.storage.

- discover.py, `find_checkpoints`: one row per checkpoint: trial, checkpoint, epoch, task, seed,
  the interesting and the varying config values (dotted keys) and every scalar metric.
- rank.py, `rank_checkpoints`: sort on one metric, on the objective the trial actually optimised or
  on a held-out metric, never on a loss with a different KL weight (the β = 1 `neg_elbo` is refused
  for trials trained with β ≠ 1); an allowed ranking that is easy to misread (val/loss across
  different β) comes with a note, a `RankingWarning`.
- export.py, `export_checkpoint` / `load_model`: one self-describing file with the weights, the
  config, the metrics and where it came from; `load_model` reads that or a checkpoint folder
  (torch.load(weights_only=True)) and rebuilds the model in eval mode.
- latents.py: the latents of one CVAE on val images: `write_traversal` writes its panels and
  dimension table as files (`celeb traverse`, every panel as PNG); `review_card` makes a page's card.
- page.py, `write_review`: leaderboard.csv, review.html and, when asked, the exported best;
  render.py turns the ranked table and the cards into the page through templates/ and static/
  (Jinja2, autoescaped, inlined into one self-contained file).
"""

from celeb.review.discover import checkpoint_dirs, find_checkpoints, read_meta, trial_dir, trial_names
from celeb.review.export import EXPORT_FORMAT, EXPORT_VERSION, LoadedModel, export_checkpoint, load_model
from celeb.review.latents import (PAGE_FACES, PAGE_MAX_DIMS, Card, EvalSet, TraversalResult, eval_images,
                                  labelled_dimensions, review_card, review_model, write_traversal)
from celeb.review.page import ReviewResult, write_review
from celeb.review.rank import (RankingWarning, best_per_trial, config_columns, infer_mode, metric_columns,
                               rank_checkpoints)
from celeb.review.render import render_page

__all__ = [
    "EXPORT_FORMAT", "EXPORT_VERSION", "PAGE_FACES", "PAGE_MAX_DIMS",
    "Card", "EvalSet", "LoadedModel", "RankingWarning", "ReviewResult", "TraversalResult",
    "best_per_trial", "checkpoint_dirs", "config_columns", "eval_images", "export_checkpoint",
    "find_checkpoints", "infer_mode", "labelled_dimensions", "load_model", "metric_columns",
    "rank_checkpoints", "read_meta", "render_page", "review_card", "review_model", "trial_dir",
    "trial_names", "write_review", "write_traversal",
]
