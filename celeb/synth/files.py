"""Synthetic CelebA on disk: the five annotation files in the official formats, factors.parquet, the JPEGs.

`synthesize` writes a whole folder (see celeb.synth); `attr_text`, `pairs_text`, `bbox_text` and
`landmarks_text` are the exact row layouts of CelebA's text files; `copy_true_factors` carries a
synthetic folder's true factors into a data dir (`celeb prepare`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from celeb.atomic import atomic_path, write_text_atomic
from celeb.data.schema import (
    ATTR_FILE, ATTRIBUTE_NAMES, BBOX_COLUMNS, BBOX_FILE, IDENTITY, IDENTITY_FILE, IMAGE_DIR, IMAGE_ID,
    LANDMARK_COLUMNS, LANDMARKS_FILE, PARTITION, PARTITION_FILE,
)
from celeb.synth.batch import write_images
from celeb.synth.geometry import face_bbox, face_landmarks
from celeb.synth.sampling import sample_faces

FACTORS_FILE = "factors.parquet"


# Row layouts as printf formats, padded like the real files; one % per row keeps 202,599 rows quick.
# Like the real file, the first value follows the id after one space, unpadded ("000007.jpg 1 -1");
# the other values are right-aligned in 2-wide fields after a space ("  1", " -1").
ATTR_ROW = "%s %d" + "%3d" * (len(ATTRIBUTE_NAMES) - 1)  # 000001.jpg -1  1  1 -1 ...
PAIR_ROW = "%s %d"  # 000001.jpg 2880
BBOX_ROW = "%s%6d%4d%4d%4d"  # 000001.jpg    95  71 226 313
LANDMARKS_ROW = "%s %d" + "%5d" * (len(LANDMARK_COLUMNS) - 1)  # 000001.jpg 69  109  106  113   77 ...


def _rows(template: str, image_ids: Sequence[str], values: np.ndarray) -> list[str]:
    columns = np.asarray(values).reshape(len(image_ids), -1).T.tolist()
    return [template % row for row in zip(image_ids, *columns)]


def attr_text(attributes: pd.DataFrame) -> str:
    """list_attr_celeba.txt: count, header with a trailing space, rows of +-1 values (ATTR_ROW)."""
    signs = np.where(attributes[list(ATTRIBUTE_NAMES)].to_numpy(bool), 1, -1)
    rows = _rows(ATTR_ROW, attributes[IMAGE_ID].tolist(), signs)
    return _lines([str(len(rows)), " ".join(ATTRIBUTE_NAMES) + " ", *rows])


def pairs_text(image_ids: Sequence[str], values: Sequence[int]) -> str:
    """list_eval_partition.txt / identity_CelebA.txt: `000001.jpg 0` rows, no header."""
    return _lines(_rows(PAIR_ROW, image_ids, np.asarray(values)))


def bbox_text(image_ids: Sequence[str], boxes: np.ndarray) -> str:
    """list_bbox_celeba.txt: count, header with a trailing space, padded rows."""
    rows = _rows(BBOX_ROW, image_ids, boxes)
    return _lines([str(len(rows)), " ".join(("image_id", *BBOX_COLUMNS)) + " ", *rows])


def landmarks_text(image_ids: Sequence[str], landmarks: np.ndarray) -> str:
    """list_landmarks_align_celeba.txt: count, header of LANDMARK_COLUMNS, padded rows."""
    rows = _rows(LANDMARKS_ROW, image_ids, landmarks)
    return _lines([str(len(rows)), " ".join(LANDMARK_COLUMNS), *rows])


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"  # written with newline="\r\n"


@dataclass(frozen=True)
class SynthResult:
    """What `synthesize` wrote, with the tables in memory and the rendering time."""

    out_dir: Path
    n_images: int
    n_identities: int
    factors: pd.DataFrame  # as written to factors.parquet
    attributes: pd.DataFrame  # image_id + the 40 attributes, as written to list_attr_celeba.txt
    render_seconds: float  # 0 when images=False

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.render_seconds if self.render_seconds else float("nan")


_IMAGE_NAME = re.compile(r"[0-9]{6}\.jpg")


def synthesize(out_dir: Path, n: int, seed: int, identities: int | None = None, images: bool = True,
               workers: int | None = None, progress: bool = True) -> SynthResult:
    """Write n synthetic faces and their annotations into out_dir in CelebA's flat layout.

    The same (n, seed, identities) gives byte-identical files for any number of workers. Rerunning
    into a folder this function wrote before replaces it, including removing JPEGs it no longer
    describes; a folder holding CelebA files from elsewhere is refused rather than overwritten.

    Workers are spawned processes (safe beside threads), so a script that calls this with more
    than one worker needs the usual `if __name__ == "__main__":` guard.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    sample = sample_faces(n, seed, identities)
    factors, attributes = sample.factors, sample.attributes
    image_ids = factors[IMAGE_ID].tolist()
    image_dir = out_dir / IMAGE_DIR

    seconds = 0.0
    _remove_stale_images(image_dir, keep=n if images else 0)
    if images:
        image_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_images(image_dir, image_ids, factors, workers, progress)
        seconds = time.perf_counter() - started
    _write_tables(out_dir, factors, attributes)
    return SynthResult(out_dir=out_dir, n_images=n, n_identities=int(factors[IDENTITY].nunique()),
                       factors=factors, attributes=attributes, render_seconds=seconds)


def _write_tables(out_dir: Path, factors: pd.DataFrame, attributes: pd.DataFrame) -> None:
    """The five annotation files (CRLF line ends, like the real ones), then factors.parquet."""
    image_ids = factors[IMAGE_ID].tolist()
    write_text_atomic(out_dir / PARTITION_FILE, pairs_text(image_ids, factors[PARTITION].tolist()), newline="\r\n")
    write_text_atomic(out_dir / IDENTITY_FILE, pairs_text(image_ids, factors[IDENTITY].tolist()), newline="\r\n")
    write_text_atomic(out_dir / BBOX_FILE, bbox_text(image_ids, face_bbox(factors)), newline="\r\n")
    write_text_atomic(out_dir / LANDMARKS_FILE, landmarks_text(image_ids, face_landmarks(factors)), newline="\r\n")
    write_text_atomic(out_dir / ATTR_FILE, attr_text(attributes), newline="\r\n")
    with atomic_path(out_dir / FACTORS_FILE) as tmp:
        factors.to_parquet(tmp, index=False)


def _check_target(out_dir: Path) -> None:
    if (out_dir / ATTR_FILE).exists() and not (out_dir / FACTORS_FILE).exists():
        raise ValueError(f"{out_dir} already holds {ATTR_FILE} that `celeb synth` did not write "
                         f"(no {FACTORS_FILE} beside it); choose an empty or new output folder")


def _remove_stale_images(image_dir: Path, keep: int) -> None:
    """Delete our NNNNNN.jpg files numbered above `keep` (left by an earlier, larger run)."""
    if not image_dir.is_dir() or not (image_dir.parent / FACTORS_FILE).exists():
        return
    for path in image_dir.iterdir():
        if _IMAGE_NAME.fullmatch(path.name) and int(path.name[:6]) > keep:
            path.unlink()


def copy_true_factors(celeba_dir: Path, data_dir: Path, image_ids: Sequence[str]) -> Path | None:
    """Copy a synthetic folder's factors.parquet into a data dir beside the table (`celeb prepare`), checked
    to be row-aligned with it, so reviews can check latent labels against the truth. None for real CelebA."""
    source = celeba_dir / FACTORS_FILE
    if not source.exists():
        return None
    factors = pd.read_parquet(source)
    if IMAGE_ID not in factors or not factors[IMAGE_ID].reset_index(drop=True).equals(
            pd.Series(list(image_ids), name=IMAGE_ID)):
        raise ValueError(f"{source} does not list the same images, in the same order, as the annotation files; "
                         "regenerate the folder with `celeb synth` or delete the stale factors.parquet")
    target = data_dir / FACTORS_FILE
    with atomic_path(target) as tmp:
        factors.to_parquet(tmp, index=False)
    return target
