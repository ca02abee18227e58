"""One prepared data set in memory: the cached images, their labels and a split, ready for trainers.

`load_data` joins the three things `celeb prepare` and `celeb split` write into a data dir (the
table, a split and an image cache) and checks that they agree row for row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from celeb.data.schema import ATTRIBUTE_NAMES, IMAGE_ID, SPLITS, TABLE_FILE



@dataclass
class CelebData:
    """Images (N, H, W, 3) uint8, labels (N, 40) bool and a split name per row.

    Rows whose image was skipped when the cache was built (corrupt or missing JPEGs) have split "".
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES
    pos_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.labels) != n or len(self.split) != n:
            raise ValueError(
                f"images ({n}), labels ({len(self.labels)}) and split ({len(self.split)}) "
                "must have one row per image"
            )

    def indices(self, name: str) -> np.ndarray:
        """Row indices of one split ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.split == name)

    def attribute_index(self, names: list[str] | tuple[str, ...]) -> list[int]:
        """Column indices of `names` in `labels`, with a clear error for unknown names."""
        unknown = [n for n in names if n not in self.attribute_names]
        if unknown:
            raise ValueError(f"unknown attribute(s) {unknown}; known: {', '.join(self.attribute_names)}")
        return [self.attribute_names.index(n) for n in names]


def cache_dir(data_dir: Path, image_size: int, crop: int) -> Path:
    """Where `celeb prepare` puts the image cache for one crop and size."""
    return Path(data_dir) / "cache" / f"c{crop}_s{image_size}"


def split_dir(data_dir: Path, split: str) -> Path:
    """Where `celeb split` puts the split called `split` (e.g. "balanced" or "official")."""
    return Path(data_dir) / "splits" / split


def load_data(data_dir: Path, split: str = "balanced", image_size: int = 64, crop: int = 148) -> CelebData:
    """Open the table, the split and the image cache of a data dir (the cache is memory-mapped)."""
    data_dir = Path(data_dir)
    table_path = data_dir / TABLE_FILE
    if not table_path.exists():
        raise FileNotFoundError(f"{table_path} not found; run `celeb prepare CELEBA_DIR --out {data_dir}` first")
    table = pd.read_parquet(table_path)

    split_path = split_dir(data_dir, split) / "split.parquet"
    if not split_path.exists():
        raise FileNotFoundError(
            f"{split_path} not found; run `celeb split {data_dir} --strategy {split}` first"
        )
    split_table = pd.read_parquet(split_path)
    if not split_table[IMAGE_ID].equals(table[IMAGE_ID]):
        raise ValueError(f"{split_path} was made from a different table; rerun `celeb split {data_dir}`")

    cdir = cache_dir(data_dir, image_size, crop)
    images_path = cdir / "images.npy"
    if not images_path.exists():
        raise FileNotFoundError(
            f"{images_path} not found; run `celeb prepare CELEBA_DIR --out {data_dir} --size {image_size}` first"
        )
    images = np.load(images_path, mmap_mode="r")
    if len(images) != len(table):
        raise ValueError(f"{images_path} has {len(images)} rows but the table has {len(table)}; rerun `celeb prepare`")

    names = split_table["split"].astype(str).to_numpy().copy()
    meta = json.loads((cdir / "meta.json").read_text())
    skipped_rows = np.asarray(meta.get("skipped_rows", []), dtype=np.int64)
    names[skipped_rows] = ""

    pos_weight_path = split_dir(data_dir, split) / "pos_weight.json"
    pos_weight = None
    if pos_weight_path.exists():
        weights = json.loads(pos_weight_path.read_text())
        pos_weight = np.array([weights[n] for n in ATTRIBUTE_NAMES], dtype=np.float32)

    labels = table[list(ATTRIBUTE_NAMES)].to_numpy(dtype=bool)
    return CelebData(images=images, labels=labels, split=names, pos_weight=pos_weight)
