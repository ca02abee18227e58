"""One prepared data set in memory: the cached images, their labels and a split, ready for trainers.

`load_data` joins the three things `celeb prepare` and `celeb split` write into a data dir (the
table, a split and an image cache) and checks that they agree row for row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celeb.data.annotations import read_table
from celeb.data.cache import IMAGES_FILE, open_cache
from celeb.data.schema import ATTRIBUTE_NAMES, SPLITS, TABLE_FILE
from celeb.data.splits import read_positive_weights, read_split


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
    """Open the table, the split and the image cache of a data dir (the cache is memory-mapped),
    each through its own validating reader, and check that they agree row for row."""
    data_dir = Path(data_dir)
    table = read_table(data_dir / TABLE_FILE)
    names = read_split(split_dir(data_dir, split), table).to_numpy().copy()
    cdir = cache_dir(data_dir, image_size, crop)
    images, meta = open_cache(cdir)
    if len(images) != len(table):
        raise ValueError(f"{cdir / IMAGES_FILE} has {len(images)} rows but the table has {len(table)}; "
                         "rerun `celeb prepare`")
    names[np.asarray(meta.get("skipped_rows", []), dtype=np.int64)] = ""  # rows without an image
    labels = table[list(ATTRIBUTE_NAMES)].to_numpy(dtype=bool)
    return CelebData(images=images, labels=labels, split=names,
                     pos_weight=read_positive_weights(split_dir(data_dir, split)))
