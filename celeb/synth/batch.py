"""Rendering many faces in worker processes: a factor table into one array, or into JPEG files.

The rows are cut into CHUNK-row jobs for celeb.parallel.map_unordered; each job carries where its
rows go (a start row, file names), so the output is the same, byte for byte, for any `workers`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from celeb.atomic import write_bytes_atomic
from celeb.data.schema import IMAGE_HEIGHT, IMAGE_WIDTH
from celeb.parallel import map_unordered
from celeb.synth.factors import FACTOR_NAMES
from celeb.synth.render import encode_jpeg, render_face

CHUNK = 128  # images per job handed to a worker process


def render_factors(factors: pd.DataFrame, workers: int | None = 1, progress: bool = False) -> np.ndarray:
    """Render every row of a factor table: (n, 218, 178, 3) uint8, the same for any `workers`."""
    missing = [name for name in FACTOR_NAMES if name not in factors.columns]
    if missing:
        raise ValueError(f"factor table lacks column(s) {missing}; sample one with sample_factors() "
                         "or read factors.parquet from a `celeb synth` folder")
    records = _records(factors)
    out = np.empty((len(records), IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    jobs = [(start, records[start:stop]) for start, stop in _chunks(len(records))]
    with _progress(len(records), progress, "rendering") as bar:
        for start, pixels in _map(_render_chunk, jobs, workers):
            out[start:start + len(pixels)] = pixels
            bar.update(len(pixels))
    return out


def write_images(image_dir: Path, image_ids: Sequence[str], factors: pd.DataFrame, workers: int | None = None,
                 progress: bool = False) -> None:
    """Render row i of the factor table as the JPEG image_dir/image_ids[i]."""
    records = _records(factors)
    jobs = [(image_dir, image_ids[a:b], records[a:b]) for a, b in _chunks(len(records))]
    with _progress(len(records), progress, "synth images") as bar:
        for done in _map(_write_chunk, jobs, workers):
            bar.update(done)


def default_workers(chunks: int) -> int:
    """All cores, but a process only per 4 chunks: starting one costs about as much as 100 faces."""
    return max(1, min(os.cpu_count() or 1, chunks // 4))


def _records(factors: pd.DataFrame) -> list[dict[str, Any]]:
    return factors[list(FACTOR_NAMES)].to_dict("records")


def _render_chunk(job: tuple[int, list[dict[str, Any]]]) -> tuple[int, np.ndarray]:
    start, records = job
    return start, np.stack([np.asarray(render_face(record)) for record in records])


def _write_chunk(job: tuple[Path, list[str], list[dict[str, Any]]]) -> int:
    image_dir, image_ids, records = job
    for image_id, record in zip(image_ids, records):
        write_bytes_atomic(image_dir / image_id, encode_jpeg(render_face(record)))
    return len(records)


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]


def _map(function: Callable[[Any], Any], jobs: list[Any], workers: int | None) -> Iterator[Any]:
    return map_unordered(function, jobs, default_workers(len(jobs)) if workers is None else workers)


def _progress(total: int, enabled: bool, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit="img", disable=not enabled, leave=False)
