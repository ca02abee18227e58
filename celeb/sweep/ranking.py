"""The ranking of a sweep's trials (best first) and of its configs (mean over seeds), and their text."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

RANK_COLUMNS = ["rank", "trial_id", "status", "config_id", "repeat", "seed", "best", "best_epoch",
                "epochs_run", "checkpoint", "error"]


def rank_trials(rows: Sequence[Mapping[str, Any]], metric: str, mode: str) -> pd.DataFrame:
    """One row per trial, best first: searched params, best `metric`, epochs run, best checkpoint.

    Each row gives trial_id, status, params (dict of searched values), seed, repeat, best (the best
    value of the metric over its epochs, None if it never reported), best_epoch, epochs_run,
    checkpoint and error. Trials without a value sort last. `config_id` numbers the distinct configs,
    so the repeats of one config share it.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    param_names = sorted({k for row in rows for k in row.get("params", {})})
    records = []
    config_ids: dict[tuple, int] = {}
    for row in rows:
        params = row.get("params", {})
        key = tuple(repr(params.get(k)) for k in param_names)
        config_ids.setdefault(key, len(config_ids))
        best = row.get("best")
        records.append({
            "trial_id": row["trial_id"], "status": row.get("status", ""), "config_id": config_ids[key],
            "repeat": row.get("repeat", 0), "seed": row.get("seed"),
            "best": float(best) if best is not None and math.isfinite(float(best)) else math.nan,
            "best_epoch": row.get("best_epoch"), "epochs_run": row.get("epochs_run", 0),
            "checkpoint": row.get("checkpoint") or "", "error": row.get("error") or "",
            **{name: params.get(name) for name in param_names}})
    columns = RANK_COLUMNS[1:4] + param_names + RANK_COLUMNS[4:]
    table = pd.DataFrame.from_records(records, columns=columns)
    table = table.sort_values("best", ascending=mode == "min", na_position="last", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table.attrs["metric"] = metric
    return table.reset_index(drop=True)


def summarize_configs(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Configs ranked by the mean of their repeats' best values (mean, std, n), from `rank_trials`."""
    param_names = [c for c in table.columns if c not in RANK_COLUMNS]
    grouped = table.groupby("config_id", sort=False)
    summary = grouped[param_names].first()
    summary["mean"] = grouped["best"].mean()
    summary["std"] = grouped["best"].std(ddof=1)
    summary["n"] = grouped["best"].count()
    summary = summary.sort_values("mean", ascending=mode == "min", na_position="last", kind="stable")
    return summary.reset_index()


def format_table(table: pd.DataFrame, max_rows: int = 20) -> str:
    """The ranking as aligned text for the terminal (long columns shortened)."""
    shown = table.drop(columns=[c for c in ("error", "checkpoint") if c in table.columns]).head(max_rows)
    return shown.to_string(index=False, float_format=lambda v: f"{v:.5g}")
