"""The decode-once cache: its rows match a plain PIL decode, bad files are all reported, builds resume."""

from __future__ import annotations

import json
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from celeb.data import cache
from celeb.data.cache import BadImagesError, build_cache, open_cache
from celeb.data.schema import IMAGE_HEIGHT, IMAGE_WIDTH


def face_like(rng: np.random.Generator) -> np.ndarray:
    """A 218x178 RGB image with smooth gradients, a few blobs and some noise (JPEG-friendly, not flat)."""
    yy, xx = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH].astype(np.float32)
    img = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * xx / 20 + b * yy / 25 + phase * 3)
    for _ in range(4):
        cx, cy, r = rng.uniform(20, 158), rng.uniform(20, 198), rng.uniform(8, 30)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def write_jpegs(image_dir: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for image_id in ids:
        Image.fromarray(face_like(rng)).save(image_dir / image_id, quality=90)
    return ids


def reference(path: Path, size: int, crop: int | None) -> np.ndarray:
    """The slow, obvious way: full decode, centre crop, one antialiased resize."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    side = crop or min(w, h)
    left, top = round((w - side) / 2), round((h - side) / 2)
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> tuple[Path, list[str]]:
    image_dir = tmp_path_factory.mktemp("celeba") / "img_align_celeba"
    return image_dir, write_jpegs(image_dir, 24)


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def count_decodes(monkeypatch) -> list[str]:
    """Record every image decode_image is asked for (workers=1 decodes in this process)."""
    seen: list[str] = []
    real = cache.decode_image

    def spy(path, size, crop):
        seen.append(Path(path).name)
        return real(path, size, crop)

    monkeypatch.setattr(cache, "decode_image", spy)
    return seen


@pytest.mark.parametrize("size,crop", [(64, 148), (128, 148), (64, None)])
def test_rows_match_a_direct_pil_decode(jpegs, tmp_path, size, crop):
    image_dir, ids = jpegs
    out = build_cache(ids, image_dir, tmp_path / "c", size=size, crop=crop, workers=1, progress=False)
    images, meta = open_cache(out)
    assert images.shape == (len(ids), size, size, 3) and images.dtype == np.uint8
    for row, image_id in enumerate(ids):
        diff = np.abs(images[row].astype(int) - reference(image_dir / image_id, size, crop))
        # reduced-size JPEG decoding differs from a full decode by rounding, not content
        assert diff.mean() < 3 and np.percentile(diff, 99) < 30, (image_id, diff.mean())
    assert meta["n"] == len(ids) and meta["size"] == size and meta["crop"] == (crop or 0)
    assert meta["skipped_rows"] == [] and meta["images_per_second"] > 0


def test_rows_follow_the_given_id_order(jpegs, tmp_path):
    image_dir, ids = jpegs
    forward, _ = open_cache(build_cache(ids, image_dir, tmp_path / "f", workers=1, progress=False))
    backward, meta = open_cache(build_cache(ids[::-1], image_dir, tmp_path / "b", workers=1, progress=False))
    np.testing.assert_array_equal(backward, forward[::-1])
    assert meta["ids_sha256"] == cache.ids_hash(ids[::-1]) != cache.ids_hash(ids)


def test_size_299_upscales_the_crop(jpegs, tmp_path):
    image_dir, ids = jpegs
    images, _ = open_cache(build_cache(ids[:2], image_dir, tmp_path / "c", size=299, workers=1, progress=False))
    assert images.shape == (2, 299, 299, 3)
    for row in range(2):
        diff = np.abs(images[row].astype(int) - reference(image_dir / ids[row], 299, 148))
        # no reduced decoding when upscaling: the same pixels as the direct way, except at the very edge,
        # where resizing from the crop box also sees the pixels just outside it (a crop first does not)
        assert diff[3:-3, 3:-3].max() <= 1 and diff.mean() < 0.1


def test_process_workers_write_the_same_bytes(jpegs, tmp_path):
    image_dir, ids = jpegs
    one, _ = open_cache(build_cache(ids, image_dir, tmp_path / "one", workers=1, progress=False))
    two, _ = open_cache(build_cache(ids, image_dir, tmp_path / "two", workers=2, progress=False))
    np.testing.assert_array_equal(one, two)


@pytest.fixture()
def broken(jpegs, tmp_path) -> tuple[Path, list[str], dict[str, str]]:
    """A copy of the JPEGs with one random-bytes file, one truncated file and one missing file."""
    image_dir = copy_dir(jpegs[0], tmp_path / "img")
    ids = jpegs[1]
    (image_dir / ids[3]).write_bytes(np.random.default_rng(1).bytes(5000))
    data = (image_dir / ids[7]).read_bytes()
    (image_dir / ids[7]).write_bytes(data[: len(data) // 2])
    (image_dir / ids[12]).unlink()
    return image_dir, ids, {ids[3]: "cannot identify image file", ids[7]: "truncated", ids[12]: "missing"}


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_files_are_all_listed_and_nothing_is_put_in_place(broken, tmp_path, workers):
    image_dir, ids, expected = broken
    out = tmp_path / "c"
    with pytest.raises(BadImagesError) as error:
        build_cache(ids, image_dir, out, workers=workers, progress=False)
    assert {image_id: reason for _, image_id, reason in error.value.bad} == expected
    message = str(error.value)
    assert "3 image(s)" in message and "--skip-bad" in message and str(image_dir) in message
    for image_id, reason in expected.items():
        assert f"{image_id}: {reason}" in message
    assert not (out / "images.npy").exists() and not (out / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="unfinished build"):
        open_cache(out)


def test_truncated_files_stay_bad_when_pil_is_told_to_load_them(broken, tmp_path, monkeypatch):
    image_dir, ids, expected = broken
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImagesError) as error:
        build_cache(ids, image_dir, tmp_path / "c", workers=1, progress=False)
    assert (7, ids[7], "truncated") in error.value.bad
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_skip_bad_zeroes_and_records_them_reusing_the_failed_run(broken, jpegs, tmp_path, monkeypatch):
    image_dir, ids, expected = broken
    out = tmp_path / "c"
    with pytest.raises(BadImagesError):
        build_cache(ids, image_dir, out, workers=1, progress=False)
    decoded = count_decodes(monkeypatch)
    build_cache(ids, image_dir, out, workers=1, skip_bad=True, progress=False)
    assert decoded == []  # every row was settled by the failed run
    images, meta = open_cache(out)
    assert meta["skipped_rows"] == [3, 7, 12]
    assert {s["image_id"]: s["reason"] for s in meta["skipped"]} == expected
    assert not images[[3, 7, 12]].any()
    good, _ = open_cache(build_cache(ids, jpegs[0], tmp_path / "good", workers=1, progress=False))
    keep = [r for r in range(len(ids)) if r not in (3, 7, 12)]
    np.testing.assert_array_equal(images[keep], good[keep])


def test_an_interrupted_build_leaves_no_cache_and_a_rerun_finishes_it(jpegs, tmp_path, monkeypatch):
    image_dir, ids = jpegs
    out = tmp_path / "c"
    monkeypatch.setattr(cache, "MAX_CHUNK", 4)
    monkeypatch.setattr(cache, "SAVE_EVERY_S", 0.0)
    real_chunk, calls = cache._decode_chunk, []

    def dies_on_third_chunk(job):
        calls.append(job[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-build
        return real_chunk(job)

    monkeypatch.setattr(cache, "_decode_chunk", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_cache(ids, image_dir, out, workers=1, progress=False)
    assert not (out / "images.npy").exists() and not (out / "meta.json").exists()
    record = json.loads((out / "images.npy.progress.json").read_text())
    [[start, finished]] = record["done"]  # the two chunks done before the interrupt
    assert start == 0 and 0 < finished < len(ids)

    monkeypatch.setattr(cache, "_decode_chunk", real_chunk)
    decoded = count_decodes(monkeypatch)
    build_cache(ids, image_dir, out, workers=1, progress=False)
    assert sorted(decoded) == ids[finished:]  # only the rows the first run had not finished
    assert not (out / "images.npy.partial").exists() and not (out / "images.npy.progress.json").exists()
    resumed, _ = open_cache(out)
    clean, _ = open_cache(build_cache(ids, image_dir, tmp_path / "clean", workers=1, progress=False))
    np.testing.assert_array_equal(resumed, clean)


_decode_chunk = cache._decode_chunk


def _raises_after_first_chunk(job):  # module level: process pools pickle functions by name
    if job[0] > 0:
        raise RuntimeError("disk full")
    return _decode_chunk(job)


def _dies_after_first_chunk(job):
    if job[0] > 0:
        os._exit(1)  # as an out-of-memory kill would
    return _decode_chunk(job)


@pytest.mark.parametrize("failing_chunk", [_raises_after_first_chunk, _dies_after_first_chunk])
def test_a_failing_worker_process_leaves_no_cache(jpegs, tmp_path, monkeypatch, failing_chunk):
    image_dir, ids = jpegs
    monkeypatch.setattr(cache, "_decode_chunk", failing_chunk)
    with pytest.raises((RuntimeError, BrokenProcessPool)):
        build_cache(ids, image_dir, tmp_path / "c", workers=2, progress=False)
    assert not (tmp_path / "c" / "images.npy").exists()
    monkeypatch.setattr(cache, "_decode_chunk", _decode_chunk)
    rebuilt, _ = open_cache(build_cache(ids, image_dir, tmp_path / "c", workers=2, progress=False))
    clean, _ = open_cache(build_cache(ids, image_dir, tmp_path / "clean", workers=1, progress=False))
    np.testing.assert_array_equal(rebuilt, clean)


def test_a_finished_cache_is_returned_without_decoding(jpegs, tmp_path, monkeypatch):
    image_dir, ids = jpegs
    out = build_cache(ids, image_dir, tmp_path / "c", workers=1, progress=False)
    meta_before = (out / "meta.json").read_text()
    decoded = count_decodes(monkeypatch)
    assert build_cache(ids, image_dir, out, workers=1, progress=False) == out
    assert decoded == [] and (out / "meta.json").read_text() == meta_before
    build_cache(ids[:5], image_dir, out, workers=1, progress=False)  # other ids: a rebuild, not a reuse
    assert sorted(decoded) == ids[:5]
    assert open_cache(out)[0].shape[0] == 5


def test_open_cache_names_the_missing_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="celeb prepare"):
        open_cache(tmp_path / "nothing")


def test_bad_arguments_are_refused(jpegs, tmp_path):
    image_dir, ids = jpegs
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        build_cache(ids, tmp_path / "nope", tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="size"):
        build_cache(ids, image_dir, tmp_path / "c", size=0, progress=False)
    with pytest.raises(BadImagesError, match="smaller than the 300 px crop"):
        build_cache(ids[:1], image_dir, tmp_path / "c", crop=300, workers=1, progress=False)
