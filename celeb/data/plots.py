"""Figures of a split's balance report, rendered to PNG bytes.

matplotlib is imported inside the functions and each figure is drawn on its own Agg canvas, so
importing this module, or calling it, changes no global matplotlib state (no pyplot, no backend).
Margins come from savefig's tight bounding box, so long attribute names are never cut off.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from celeb.data.schema import ATTRIBUTE_NAMES

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
DPI = 110


def prevalence_png(report: dict) -> bytes:
    """Grouped horizontal bars: each attribute's prevalence (%) in train, val and test, with its gap.

    Attributes are sorted by overall prevalence, most common at the top; an empty split draws no bar.
    """
    figure, axes = _figure(9.0, 13.0)
    attributes = sorted(report["attributes"], key=lambda a: report["attributes"][a]["overall"])
    rows = np.arange(len(attributes))
    height = 0.27
    right = 0.0
    for k, (name, colour) in enumerate(SPLIT_COLOURS.items()):
        values = np.array([np.nan if v is None else 100 * v
                           for v in (report["attributes"][a][name] for a in attributes)])
        size = report["splits"][name]["size"]
        # Train on top within each group, matching the legend's order.
        axes.barh(rows + (1 - k) * height, values, height=height, color=colour, label=f"{name} ({size:,} images)")
        right = max(right, float(np.nanmax(values, initial=0.0)))
    for row, a in zip(rows, attributes):
        axes.text(right + 1.5, row, f"gap {report['attributes'][a]['gap_pp']:.2f} pp",
                  va="center", ha="left", fontsize=8, color="#444444")
    axes.set_yticks(rows, [a.replace("_", " ") for a in attributes], fontsize=9)
    axes.set_ylim(-0.6, len(attributes) - 0.4)
    axes.set_xlim(0, right + 14)
    axes.set_xlabel("prevalence (% of the split's images)")
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)
    title = f"Attribute prevalence per split ({report.get('strategy') or 'split'})"
    axes.set_title(f"{title}\nworst gap {report['worst_gap_pp']:.2f} pp ({report['worst_attribute']}), "
                   f"mean gap {report['mean_gap_pp']:.2f} pp", fontsize=11, pad=26)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=9, frameon=False)
    return _png(figure)


def correlation_png(table: pd.DataFrame) -> bytes:
    """The 40 x 40 Pearson correlation of the attributes over the whole table, as a labelled heatmap.

    An attribute that never varies has no correlation; its row and column are left blank (grey).
    """
    labels = table[list(ATTRIBUTE_NAMES)].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(labels, rowvar=False)
    figure, axes = _figure(12.0, 11.0)
    axes.set_facecolor("#DDDDDD")
    image = axes.imshow(np.ma.masked_invalid(corr), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    names = [a.replace("_", " ") for a in ATTRIBUTE_NAMES]
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=90, fontsize=8)
    axes.set_yticks(ticks, names, fontsize=8)
    axes.set_title(f"Attribute correlation (Pearson, {len(table):,} images)", fontsize=12)
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02, label="correlation")
    return _png(figure)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()
