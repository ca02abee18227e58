"""BatchLoader serves every row once per epoch in a (seed, epoch)-determined order; augmentations are
per-sample, reproducible from their generator, and keep batches in shape and in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from celeb.data.augment import BatchAugment, HeavyAugment, make_augment
from celeb.data.loader import BatchLoader, RowReader, choose_placement

N, SIZE = 50, 8


def numbered_images(n: int = N, size: int = SIZE) -> np.ndarray:
    """Image i has colour (i, 255 - i, i // 2 + column), so its rows can be identified."""
    images = np.zeros((n, size, size, 3), np.uint8)
    row = np.arange(n)[:, None, None]
    images[..., 0] = row
    images[..., 1] = 255 - row
    images[..., 2] = row // 2 + np.arange(size)[None, None, :]
    return images


def labels_for(n: int = N) -> np.ndarray:
    """Row i's label vector is the binary code of i: labels identify rows too."""
    return (np.arange(n)[:, None] >> np.arange(6)[None, :]) & 1 == 1


def row_ids(x: torch.Tensor) -> list[int]:
    """Which row each uint8 (B, H, W, 3) image came from (its red channel)."""
    return x[:, 0, 0, 0].tolist()


def served(loader: BatchLoader) -> list[int]:
    return [r for x, _ in loader for r in row_ids(x)]


def test_every_selected_row_is_served_once_per_epoch():
    subset = np.array([3, 4, 8, 15, 16, 23, 42, 7, 0, 49, 31])
    loader = BatchLoader(numbered_images(), None, subset, batch_size=4, output="uint8")
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert sorted(served(loader)) == sorted(subset)
    assert len(loader) == 3


def test_order_is_a_function_of_seed_and_epoch():
    images = numbered_images()
    first, again = (BatchLoader(images, None, batch_size=7, seed=1, output="uint8") for _ in range(2))
    orders = {}
    for epoch in (0, 1, 5):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        orders[epoch] = served(first)
        assert served(again) == orders[epoch]
        assert served(first) == orders[epoch]  # iterating an epoch twice repeats it
    assert orders[0] != orders[1] != orders[5]
    other_seed = BatchLoader(images, None, batch_size=7, seed=2, output="uint8")
    assert served(other_seed) != orders[0]
    in_order = BatchLoader(images, None, batch_size=7, shuffle=False, output="uint8")
    assert served(in_order) == list(range(N))


def test_drop_last_drops_only_the_short_batch():
    images = numbered_images()
    keep = BatchLoader(images, None, batch_size=16, output="uint8")
    drop = BatchLoader(images, None, batch_size=16, drop_last=True, output="uint8")
    assert [len(x) for x, _ in keep] == [16, 16, 16, 2] and len(keep) == 4
    assert [len(x) for x, _ in drop] == [16, 16, 16] and len(drop) == 3
    assert served(drop) == served(keep)[:48]  # same order, last two rows left out


def test_labels_stay_with_their_images_and_outputs_agree():
    images, labels = numbered_images(), labels_for()
    subset = np.arange(5, 45)
    raw = BatchLoader(images, labels, subset, batch_size=6, seed=3, output="uint8")
    flt = BatchLoader(images, labels, subset, batch_size=6, seed=3)
    for (xu, yu), (xf, yf) in zip(raw, flt, strict=True):
        rows = row_ids(xu)
        assert xu.dtype == torch.uint8 and xu.shape[1:] == (SIZE, SIZE, 3)
        torch.testing.assert_close(xu, torch.from_numpy(images[rows]), rtol=0, atol=0)
        assert yu.dtype == torch.float32
        torch.testing.assert_close(yu, torch.from_numpy(labels[rows]).float())
        assert xf.dtype == torch.float32 and xf.shape[1:] == (3, SIZE, SIZE) and xf.is_contiguous()
        torch.testing.assert_close(xf, xu.permute(0, 3, 1, 2).float() / 255)
        torch.testing.assert_close(yf, yu)


def test_a_memory_mapped_cache_and_tensors_work_alike(tmp_path):
    images, labels = numbered_images(), labels_for()
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    subset = np.arange(0, N, 3)
    a = BatchLoader(mapped, labels, subset, batch_size=5, seed=9, output="uint8")
    b = BatchLoader(torch.from_numpy(images), torch.from_numpy(labels), subset, batch_size=5, seed=9, output="uint8")
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_every_placement_serves_the_same_batches(tmp_path):
    images, labels = numbered_images(200), labels_for(200)
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    rows = np.random.default_rng(0).permutation(200)[:150]  # unsorted, with gaps: runs of every length
    kwargs = dict(batch_size=16, seed=3, augment=BatchAugment(hue=0.1, crop_jitter=2))
    ram = BatchLoader(mapped, labels, rows, placement="ram", **kwargs)
    stream = BatchLoader(mapped, labels, rows, placement="stream", **kwargs)
    assert (ram.placement.kind, stream.placement.kind) == ("ram", "stream")
    for epoch in (0, 1):
        ram.set_epoch(epoch), stream.set_epoch(epoch)
        for (xr, yr), (xs, ys) in zip(ram, stream, strict=True):
            assert torch.equal(xr, xs) and torch.equal(yr, ys)


def test_the_row_reader_reads_any_rows_in_any_order_and_names_a_short_file(tmp_path):
    images = numbered_images(40)
    np.save(tmp_path / "images.npy", images)
    reader = RowReader(np.load(tmp_path / "images.npy", mmap_mode="r"))
    rows = np.array([7, 3, 4, 5, 39, 0, 4, 6])  # a run (3-6), a repeat and the last row
    out = np.empty((len(rows), *images.shape[1:]), np.uint8)
    reader.read(rows, out)
    assert np.array_equal(out, images[rows])
    with open(tmp_path / "images.npy", "r+b") as f:  # cut the file short behind the reader's back
        f.truncate(f.seek(0, 2) - 100)
    with pytest.raises(OSError, match=r"images\.npy ended at byte .*rebuild it with `celeb prepare`"):
        reader.read(np.array([39]), out[:1])


def test_auto_placement_follows_the_budget_and_says_why(tmp_path):
    np.save(tmp_path / "images.npy", numbered_images(100))
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    split_bytes = 100 * SIZE * SIZE * 3
    roomy = BatchLoader(mapped, None, memory_budget=split_bytes)
    tight = BatchLoader(mapped, None, memory_budget=split_bytes - 1)
    in_memory = BatchLoader(np.array(mapped), None, memory_budget=split_bytes - 1)
    assert roomy.placement.kind == "ram" and "fits the RAM budget" in roomy.placement.reason
    assert tight.placement.kind == "stream" and "over the RAM budget" in tight.placement.reason
    assert in_memory.placement.kind == "ram" and "cannot be streamed" in in_memory.placement.reason
    assert BatchLoader(mapped[:50], None, memory_budget=1).placement.kind == "ram"  # a slice is not the file
    with pytest.raises(ValueError, match="needs a CUDA device"):
        choose_placement("device", 10, torch.device("cpu"), streamable=True)
    with pytest.raises(ValueError, match="in-memory array"):
        BatchLoader(np.array(mapped), None, placement="stream")


def test_without_labels_y_is_none():
    assert all(y is None for _, y in BatchLoader(numbered_images(), None, batch_size=20))


def test_bad_arguments_are_refused():
    images = numbered_images()
    with pytest.raises(ValueError, match="uint8"):
        BatchLoader(images.astype(np.float32), None)
    with pytest.raises(ValueError, match="rows"):
        BatchLoader(images, labels_for(N - 1))
    with pytest.raises(ValueError, match="indices"):
        BatchLoader(images, None, np.array([0, N]))
    with pytest.raises(ValueError, match="output"):
        BatchLoader(images, None, output="float16")


# --- augmentation


def same_image_batch(b: int = 32, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g).expand(b, 3, size, size).contiguous()


@pytest.mark.parametrize("augment", [BatchAugment(), BatchAugment(hue=0.1), make_augment("heavy")],
                         ids=["light", "light+hue", "heavy"])
def test_augmentation_is_per_sample_reproducible_and_keeps_range(augment):
    x = same_image_batch()
    out = augment(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > len(x) // 2  # identical inputs, different outputs
    torch.testing.assert_close(augment(x, torch.Generator().manual_seed(5)), out, rtol=0, atol=0)
    assert not torch.equal(augment(x, torch.Generator().manual_seed(6)), out)
    assert torch.equal(x, same_image_batch())  # the input is left alone


@pytest.mark.parametrize("augment", [BatchAugment(hue=0.2), BatchAugment(brightness=0, contrast=0, saturation=0)],
                         ids=["colour", "geometry only"])
def test_uint8_input_gives_the_float_input_result(augment):
    raw = torch.from_numpy(numbered_images(16, 12)).permute(0, 3, 1, 2)  # as BatchLoader hands it over
    from_bytes = augment(raw, torch.Generator().manual_seed(7))
    from_floats = augment(raw.float() / 255, torch.Generator().manual_seed(7))
    assert from_bytes.dtype == torch.float32 and from_bytes.shape == (16, 3, 12, 12)
    torch.testing.assert_close(from_bytes, from_floats, atol=1e-5, rtol=0)


def test_flip_only_mirrors_about_half_the_samples():
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    aug = BatchAugment(flip=True, crop_jitter=0, brightness=0, contrast=0, saturation=0)
    out = aug(x, torch.Generator().manual_seed(1))
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(k != m for k, m in zip(kept, mirrored))
    assert 16 < sum(mirrored) < 48


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_crop_jitter_shifts_each_sample_by_at_most_j_pixels(padding):
    j, size = 3, 12
    x = torch.rand(40, 3, size, size, generator=torch.Generator().manual_seed(0))
    aug = BatchAugment(flip=False, crop_jitter=j, brightness=0, contrast=0, saturation=0, padding=padding)
    out = aug(x, torch.Generator().manual_seed(2))
    padded = torch.nn.functional.pad(x, (j, j, j, j), mode=padding)
    shifts = []
    for o, p in zip(out, padded):
        # the output is the padded input's window at one offset (dy, dx) in [-j, j]^2, borders included
        match = [(dy, dx) for dy in range(-j, j + 1) for dx in range(-j, j + 1)
                 if torch.equal(o, p[:, j + dy:j + dy + size, j + dx:j + dx + size])]
        assert len(match) == 1
        shifts += match
    assert len(set(shifts)) > 15
    assert {dy for dy, _ in shifts} == {dx for _, dx in shifts} == set(range(-j, j + 1))


def test_brightness_scales_each_sample_by_one_factor_in_range():
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    out = BatchAugment(flip=False, crop_jitter=0, brightness=0.3, contrast=0, saturation=0)(
        x, torch.Generator().manual_seed(1))
    factors = out / x
    per_sample = factors.flatten(1)
    torch.testing.assert_close(per_sample.min(1).values, per_sample.max(1).values)
    assert per_sample.min() >= 0.7 - 1e-5 and per_sample.max() <= 1.3 + 1e-5
    assert per_sample[:, 0].std() > 0.05


def per_sample_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """The factor r with num = r * den for each sample, asserting there is one."""
    num, den = num.flatten(1), den.flatten(1)
    ratio = (num * den).sum(1) / (den * den).sum(1)
    torch.testing.assert_close(num, ratio[:, None] * den, atol=1e-5, rtol=0)
    return ratio


def test_contrast_and_saturation_blend_as_torchvision_defines_them():
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    grey = (x * luma).sum(1, keepdim=True)
    mean_grey = grey.mean((2, 3), keepdim=True)
    only = dict(flip=False, crop_jitter=0, brightness=0, contrast=0, saturation=0)
    # contrast: a blend with the image's mean grey level, c * x + (1 - c) * mean(grey(x))
    out = BatchAugment(**{**only, "contrast": 0.4})(x, torch.Generator().manual_seed(1))
    c = per_sample_ratio(out - mean_grey, x - mean_grey)
    assert 0.6 - 1e-4 <= c.min() and c.max() <= 1.4 + 1e-4 and c.std() > 0.1
    # saturation: a blend with the image's own grey version, s * x + (1 - s) * grey(x)
    out = BatchAugment(**{**only, "saturation": 0.4})(x, torch.Generator().manual_seed(1))
    s = per_sample_ratio(out - grey, x - grey)
    assert 0.6 - 1e-4 <= s.min() and s.max() <= 1.4 + 1e-4 and s.std() > 0.1


def test_contrast_saturation_and_hue_keep_grey_pixels_grey():
    g = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    grey = g.expand(32, 3, 8, 8).contiguous()
    out = BatchAugment(flip=False, crop_jitter=0, brightness=0, contrast=0.4, saturation=0.5, hue=0.3)(
        grey, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=1e-5, rtol=0)
    assert not torch.allclose(out, grey)  # contrast did change them


def test_hue_rotation_keeps_luma_and_changes_colour():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    hue_only = BatchAugment(flip=False, crop_jitter=0, brightness=0, contrast=0, saturation=0, hue=0.5)
    out = hue_only(x, torch.Generator().manual_seed(3))
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    unclamped = ((out > 0) & (out < 1)).all(1)
    assert unclamped.float().mean() > 0.9
    torch.testing.assert_close((out * luma).sum(1)[unclamped], (x * luma).sum(1)[unclamped], atol=1e-5, rtol=0)
    assert (out - x).abs().mean() > 0.02


def test_heavy_augmentation_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_augment("heavy")(same_image_batch(16), torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_make_augment_names():
    assert make_augment("none") is None
    assert make_augment("light") == BatchAugment()
    assert isinstance(make_augment("heavy"), HeavyAugment)
    with pytest.raises(ValueError, match="light"):
        make_augment("medium")


def test_flip_preset_only_mirrors_each_sample():
    x = torch.rand(64, 3, 8, 8)
    out = make_augment("flip")(x, torch.Generator().manual_seed(0))
    kept = torch.all((out - x).abs() < 1e-6, dim=(1, 2, 3))
    mirrored = torch.all((out - x.flip(-1)).abs() < 1e-6, dim=(1, 2, 3))
    assert bool(torch.all(kept | mirrored))
    assert 0 < int(mirrored.sum()) < 64  # drawn per sample, not once for the batch


def test_loader_augmentation_depends_on_seed_and_epoch_only():
    images = np.repeat(numbered_images(1, 16), 40, axis=0)  # 40 copies of one image
    make = lambda seed: BatchLoader(images, None, batch_size=16, seed=seed, augment=BatchAugment())  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    epoch0 = [x for x, _ in a]
    assert all(torch.equal(x, y) for (x, _), y in zip(b, epoch0, strict=True))
    assert not torch.equal(next(iter(c))[0], epoch0[0])
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], epoch0[0])
    assert len({tuple(x.flatten().tolist()) for x in epoch0[0]}) > 8  # copies of one image come out different
    assert all(x.min() >= 0 and x.max() <= 1 for x in epoch0)


def test_augmentation_with_uint8_output_is_refused():
    with pytest.raises(ValueError, match="float"):
        BatchLoader(numbered_images(), None, output="uint8", augment=BatchAugment())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("placement", ["device", "ram", "stream"])
def test_cuda_batches_match_the_cpu_ones(placement, tmp_path):
    np.save(tmp_path / "images.npy", numbered_images(64, 16))
    images, labels = np.load(tmp_path / "images.npy", mmap_mode="r"), labels_for(64)
    cpu = BatchLoader(images, labels, batch_size=16, seed=4, augment=BatchAugment(hue=0.1))
    gpu = BatchLoader(images, labels, batch_size=16, seed=4, augment=BatchAugment(hue=0.1), device="cuda",
                      placement=placement)
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-5, rtol=0)
        assert torch.equal(yg.cpu(), yc)


def test_load_data_names_the_missing_piece_and_the_command_that_makes_it(tmp_path, synthetic_data):
    from celeb.data.dataset import load_data

    with pytest.raises(FileNotFoundError, match=r"celeba\.parquet not found; run `celeb prepare"):
        load_data(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"split\.parquet not found; run `celeb split .* --name mine`"):
        load_data(synthetic_data, split="mine")
    with pytest.raises(FileNotFoundError, match=r"no image cache at .*c148_s16.*celeb prepare"):
        load_data(synthetic_data, image_size=16)
    data = load_data(synthetic_data)
    assert data.split.dtype == object and set(data.split) <= {"train", "val", "test", ""}
    assert data.pos_weight is not None and data.pos_weight.shape == (40,)
