"""The decode-once image cache: every JPEG decoded, centre-cropped and resized once into one .npy.

`build_cache` writes out_dir/images.npy, an (N, size, size, 3) uint8 array whose rows follow the
image ids it was given (the table's row order), and out_dir/meta.json describing it. Trainers then
memory-map the array (`open_cache`) instead of decoding JPEGs every epoch.

Speed: PIL's `draft` makes libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling), the largest
reduction that still leaves the crop at least `size` pixels wide; the crop and the antialiased
resize then happen in one `resize(box=...)` call. Each worker decodes a run of consecutive rows and
writes it into the output file with one positioned write; nothing maps the output, so a cache
larger than RAM (all of CelebA at 299 px is 54 GB) is built with a few chunks in memory.

Safety: the array is built as images.npy.partial beside a progress record (images.npy.progress.json,
the finished row ranges and the bad files found so far, rewritten atomically). Only when every row
is done is it renamed to images.npy, so an interrupted build leaves no images.npy, and a rerun with
the same ids and parameters resumes from the finished rows. Corrupt or missing JPEGs are all
collected; the build fails listing them unless `skip_bad`, which leaves their rows zero and records
them in meta.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from celeb.atomic import write_text_atomic
from celeb.parallel import map_unordered

IMAGES_FILE = "images.npy"
META_FILE = "meta.json"
PARTIAL_FILE = IMAGES_FILE + ".partial"
PROGRESS_FILE = IMAGES_FILE + ".progress.json"
FORMAT = 1
MAX_CHUNK = 512  # rows per worker job: small enough for a smooth progress bar and cheap resumes
SAVE_EVERY_S = 2.0  # how often the progress record is rewritten during a build
SHOW_BAD = 20  # bad files listed in the error message

Bad = tuple[int, str, str]  # (row, image id, reason)


class BadImagesError(ValueError):
    """Some JPEGs could not be decoded; `bad` holds (row, image id, reason) for every one of them."""

    def __init__(self, bad: Sequence[Bad], image_dir: Path):
        self.bad = list(bad)
        lines = [f"  {image_id}: {reason}" for _, image_id, reason in self.bad[:SHOW_BAD]]
        if len(self.bad) > SHOW_BAD:
            lines.append(f"  ... and {len(self.bad) - SHOW_BAD} more")
        super().__init__(
            f"{len(self.bad)} image(s) in {image_dir} could not be decoded:\n" + "\n".join(lines) + "\n"
            "Replace them, or rerun with --skip-bad (build_cache(..., skip_bad=True)) to leave their rows "
            "zero and record them in meta.json; the rows already decoded are kept for the rerun."
        )


def ids_hash(image_ids: Sequence[str]) -> str:
    """SHA-256 of the image id list, which ties a cache to the exact rows of one table."""
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


def build_cache(image_ids: Sequence[str], image_dir: Path, out_dir: Path, size: int = 64,
                crop: int | None = 148, workers: int | None = None, skip_bad: bool = False,
                progress: bool = True) -> Path:
    """Decode every image once into out_dir/images.npy ((N, size, size, 3) uint8) and write meta.json.

    crop: side of the centre square cut from each image before resizing (CelebA's usual 148);
    None or 0 takes the largest centre square. Returns out_dir. A complete cache with the same ids
    and parameters is returned as it is; a partial one is resumed. Workers are spawned processes
    (celeb.parallel), so a script that calls this with more than one needs the `__main__` guard.
    """
    image_ids = list(image_ids)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if crop is not None and crop < 0:
        raise ValueError(f"crop must be a positive number of pixels, 0 or None (whole image), got {crop}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} not found; point it at the folder of aligned JPEGs "
                                "(img_align_celeba/)")
    crop = crop or 0
    params = {"format": FORMAT, "size": size, "crop": crop, "n": len(image_ids), "ids_sha256": ids_hash(image_ids)}
    if _complete(out_dir, params):
        return out_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / META_FILE, out_dir / IMAGES_FILE):  # a cache of other ids must not survive a failed rebuild
        stale.unlink(missing_ok=True)
    done, bad = _resume_or_start(out_dir, params)

    started = time.perf_counter()
    todo = len(image_ids) - _count(done)
    workers = max(1, min(workers or os.cpu_count() or 1, todo))
    jobs = list(_jobs(_missing_ranges(done, len(image_ids)), image_ids, todo, workers))
    last_save = time.monotonic()
    try:
        with tqdm(total=len(image_ids), initial=len(image_ids) - todo, desc=f"cache {size}px", unit="img",
                  disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.05) as bar:
            for start, stop, chunk_bad in _run(jobs, out_dir / PARTIAL_FILE, image_dir, size, crop, workers):
                done.append([start, stop])
                bad.extend(chunk_bad)
                bar.update(stop - start)
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    _save_progress(out_dir, params, done, bad)
                    last_save = time.monotonic()
    finally:
        _save_progress(out_dir, params, done, bad)

    bad.sort()
    if bad and not skip_bad:
        raise BadImagesError(bad, image_dir)
    seconds = time.perf_counter() - started
    _finish(out_dir, params, bad, seconds, todo)
    return out_dir


def open_cache(out_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Memory-map a finished cache: the (N, size, size, 3) uint8 array and its meta.json."""
    out_dir = Path(out_dir)
    images_path, meta_path = out_dir / IMAGES_FILE, out_dir / META_FILE
    if not images_path.exists() or not meta_path.exists():
        hint = (" (an unfinished build is there: rerun it to resume)" if (out_dir / PARTIAL_FILE).exists() else "")
        raise FileNotFoundError(f"no image cache at {out_dir}{hint}; build it with "
                                "`celeb prepare CELEBA_DIR --out DATA_DIR --size N`")
    return np.load(images_path, mmap_mode="r"), json.loads(meta_path.read_text())


# --- decoding one image


def decode_image(path: Path, size: int, crop: int) -> np.ndarray:
    """One JPEG -> (size, size, 3) uint8: centre `crop` square (0: the largest), antialiased resize."""
    with Image.open(path) as image:
        width, height = image.size
        side = crop or min(width, height)
        if side > min(width, height):
            raise ValueError(f"image is {width}x{height}, smaller than the {side} px crop")
        left, top = int(round((width - side) / 2)), int(round((height - side) / 2))  # as torchvision's CenterCrop
        reduction = max(r for r in (8, 4, 2, 1) if side / r >= size or r == 1)
        scale = 1.0
        drafted = image.draft("RGB", (width // reduction, height // reduction))
        if drafted is not None:  # a JPEG: it will decode at 1/reduction, box = the full image in those pixels
            scale = width / drafted[1][2]
        if image.mode != "RGB":
            image = image.convert("RGB")
        box = (left / scale, top / scale, (left + side) / scale, (top + side) / scale)
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))


def _reason(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, UnidentifiedImageError):
        return "cannot identify image file"
    if "truncated" in str(error):
        return "truncated"
    return f"{type(error).__name__}: {error}"


# --- the work: chunks of rows, decoded in worker processes and written into the .partial file

_worker: dict[str, Any] = {}


def _init_worker(partial: Path, image_dir: Path, size: int, crop: int) -> None:
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is a bad image, never a half-grey one
    header = np.load(partial, mmap_mode="r").offset
    _worker.update(fd=os.open(partial, os.O_WRONLY), header=header, image_dir=image_dir, size=size, crop=crop)


def _decode_chunk(job: tuple[int, list[str]]) -> tuple[int, int, list[Bad]]:
    """Decode a run of consecutive rows and write them with one positioned write: no mapping of
    the (possibly larger than RAM) cache, so a worker holds one chunk, however big the cache."""
    start, ids = job
    image_dir, size, crop = (_worker[k] for k in ("image_dir", "size", "crop"))
    chunk = np.zeros((len(ids), size, size, 3), np.uint8)
    bad: list[Bad] = []
    for i, image_id in enumerate(ids):
        try:
            chunk[i] = decode_image(image_dir / image_id, size, crop)
        except Exception as error:  # every failure is recorded and reported together at the end
            bad.append((start + i, image_id, _reason(error)))
    _write_at(_worker["fd"], memoryview(chunk).cast("B"), _worker["header"] + start * chunk[0].nbytes)
    return start, start + len(ids), bad


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwritev(fd, [data], offset)
        data, offset = data[written:], offset + written


def _run(jobs: list[tuple[int, list[str]]], partial: Path, image_dir: Path, size: int, crop: int,
         workers: int) -> Iterator[tuple[int, int, list[Bad]]]:
    """Decode the jobs, yielding (start, stop, bad) as each finishes (in any order)."""
    with _process_state_kept():
        yield from map_unordered(_decode_chunk, jobs, workers, _init_worker, (partial, image_dir, size, crop))


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Restore the caller's PIL setting and _worker: with one worker, _init_worker runs in this process."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES, dict(_worker)
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved[0]
        if _worker.get("fd") not in (None, saved[1].get("fd")):
            os.close(_worker["fd"])
        _worker.clear()
        _worker.update(saved[1])


def _jobs(ranges: list[tuple[int, int]], image_ids: list[str], todo: int,
          workers: int) -> Iterator[tuple[int, list[str]]]:
    chunk = max(1, min(MAX_CHUNK, -(-todo // (workers * 8))))
    for start, stop in ranges:
        for a in range(start, stop, chunk):
            yield a, image_ids[a:min(a + chunk, stop)]


# --- progress record, resume and the final rename


def _complete(out_dir: Path, params: dict[str, Any]) -> bool:
    """Whether out_dir already holds a finished cache of exactly these ids and parameters."""
    images_path, meta_path = out_dir / IMAGES_FILE, out_dir / META_FILE
    if not images_path.exists() or not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text())
        shape = np.load(images_path, mmap_mode="r").shape
    except (ValueError, OSError):
        return False
    same = all(meta.get(k) == v for k, v in params.items())
    return same and shape == (params["n"], params["size"], params["size"], 3)


def _resume_or_start(out_dir: Path, params: dict[str, Any]) -> tuple[list[list[int]], list[Bad]]:
    """Reopen a matching .partial and its finished rows, or create an empty one."""
    partial, progress_path = out_dir / PARTIAL_FILE, out_dir / PROGRESS_FILE
    shape = (params["n"], params["size"], params["size"], 3)
    try:
        record = json.loads(progress_path.read_text())
        if record["params"] == params and np.load(partial, mmap_mode="r").shape == shape:
            return [list(r) for r in record["done"]], [tuple(b) for b in record["bad"]]
    except (FileNotFoundError, ValueError, KeyError, OSError):
        pass
    progress_path.unlink(missing_ok=True)
    images = open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)  # sparse: zeros cost no disk
    del images
    _save_progress(out_dir, params, [], [])
    return [], []


def _save_progress(out_dir: Path, params: dict[str, Any], done: list[list[int]], bad: list[Bad]) -> None:
    done[:] = _merge(done)
    record = {"params": params, "done": done, "bad": [list(b) for b in bad]}
    write_text_atomic(out_dir / PROGRESS_FILE, json.dumps(record))


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return merged


def _count(ranges: list[list[int]]) -> int:
    return sum(stop - start for start, stop in _merge(ranges))


def _missing_ranges(done: list[list[int]], n: int) -> list[tuple[int, int]]:
    missing, cursor = [], 0
    for start, stop in _merge(done):
        if start > cursor:
            missing.append((cursor, start))
        cursor = max(cursor, stop)
    if cursor < n:
        missing.append((cursor, n))
    return missing


def _finish(out_dir: Path, params: dict[str, Any], bad: list[Bad], seconds: float, decoded: int) -> None:
    """Zero the bad rows, write meta.json, then rename the .partial into place."""
    partial = out_dir / PARTIAL_FILE
    if bad:
        images = np.load(partial, mmap_mode="r+")
        images[[row for row, _, _ in bad]] = 0
        del images  # unmapped; the kernel writes the pages back (no msync: that costs 0.1 s per 40 MB)
    meta = {
        **params,
        "shape": [params["n"], params["size"], params["size"], 3],
        "dtype": "uint8",
        "skipped_rows": [row for row, _, _ in bad],
        "skipped": [{"row": row, "image_id": image_id, "reason": reason} for row, image_id, reason in bad],
        "build_seconds": round(seconds, 3),
        "images_per_second": round(decoded / seconds, 1) if seconds > 0 else None,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(out_dir / META_FILE, json.dumps(meta, indent=1))  # before the rename: images.npy never lacks it
    os.replace(partial, out_dir / IMAGES_FILE)
    (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
