"""Synthetic CelebA: exact file formats, determinism, CelebA's prevalences, and faces that show their factors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from celeb import synth
from celeb.data.schema import (
    ATTR_FILE, ATTRIBUTE_NAMES, BBOX_COLUMNS, BBOX_FILE, CELEBA_PREVALENCE, IDENTITY_FILE, IMAGE_DIR,
    LANDMARK_COLUMNS, LANDMARKS_FILE, PARTITION_FILE,
)
from celeb.synth import batch

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "celeba-annotations"
ANNOTATION_FILES = (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE, BBOX_FILE, LANDMARKS_FILE)

ATTR_ROW = re.compile(r"\d{6}\.jpg (?:-1|1)(?: -1|  1){39}")  # the first value is not padded
PAIR_ROW = re.compile(r"\d{6}\.jpg \d+")
BBOX_ROW = re.compile(r"\d{6}\.jpg[ \d]{5}\d[ \d]{3}\d[ \d]{3}\d[ \d]{3}\d")
LANDMARKS_ROW = re.compile(r"\d{6}\.jpg \d+(?:[ \d]{4}\d){9}")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthResult:
    """80 faces with images, written once for the format and consistency tests."""
    return synth.synthesize(tmp_path_factory.mktemp("synth") / "celeba", n=80, seed=3, workers=1, progress=False)


def lines_of(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\r\n"), f"{path.name} must end with CRLF"
    assert data.count(b"\n") == data.count(b"\r\n"), f"{path.name} has bare LF line endings"
    return data.decode("ascii").split("\r\n")[:-1]


# --------------------------------------------------------------------------------------------
# Layout and formats


def test_writes_celeba_flat_layout(small: synth.SynthResult) -> None:
    out = small.out_dir
    for name in (*ANNOTATION_FILES, synth.FACTORS_FILE):
        assert (out / name).is_file(), name
    jpegs = sorted(p.name for p in (out / IMAGE_DIR).iterdir())
    assert jpegs == [f"{i:06d}.jpg" for i in range(1, 81)]


def test_attr_file_has_the_official_format(small: synth.SynthResult) -> None:
    lines = lines_of(small.out_dir / ATTR_FILE)
    assert lines[0] == "80"
    assert lines[1] == " ".join(ATTRIBUTE_NAMES) + " "  # the real header's trailing space
    assert len(lines) == 82
    for line in lines[2:]:
        assert ATTR_ROW.fullmatch(line), line
    assert lines[2].startswith("000001.jpg ")


def test_other_annotation_files_have_the_official_formats(small: synth.SynthResult) -> None:
    out = small.out_dir
    for name in (PARTITION_FILE, IDENTITY_FILE):
        lines = lines_of(out / name)
        assert len(lines) == 80 and all(PAIR_ROW.fullmatch(line) for line in lines), name
    bbox = lines_of(out / BBOX_FILE)
    assert bbox[:2] == ["80", "image_id x_1 y_1 width height "]
    assert all(BBOX_ROW.fullmatch(line) for line in bbox[2:]), bbox[2]
    landmarks = lines_of(out / LANDMARKS_FILE)
    assert landmarks[:2] == ["80", " ".join(LANDMARK_COLUMNS)]
    assert all(LANDMARKS_ROW.fullmatch(line) for line in landmarks[2:]), landmarks[2]


def test_row_formats_match_the_real_files() -> None:
    """The regexes above (which our files pass) also accept the real CelebA files, line endings included."""
    attr = REAL / "first20000" / ATTR_FILE
    if not attr.exists():
        pytest.skip(f"real CelebA annotations not found at {REAL}")
    lines = lines_of(attr)
    assert lines[0] == "20000" and lines[1] == " ".join(ATTRIBUTE_NAMES) + " "
    assert all(ATTR_ROW.fullmatch(line) for line in lines[2:])
    assert all(PAIR_ROW.fullmatch(line) for line in lines_of(REAL / "first20000" / PARTITION_FILE))
    # As published in CelebA's README (these two files are not in the shared folder):
    assert BBOX_ROW.fullmatch("000001.jpg    95  71 226 313")
    assert LANDMARKS_ROW.fullmatch("000001.jpg 69  109  106  113   77  142   73  152  108  154")


def test_images_are_178x218_rgb_jpegs(small: synth.SynthResult) -> None:
    for path in sorted((small.out_dir / IMAGE_DIR).iterdir())[:10]:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (178, 218))


def test_bbox_and_landmark_files_hold_the_face_geometry(small: synth.SynthResult) -> None:
    out, factors = small.out_dir, small.factors
    bbox = pd.read_csv(out / BBOX_FILE, sep=r"\s+", skiprows=1)
    np.testing.assert_array_equal(bbox[list(BBOX_COLUMNS)].to_numpy(), synth.face_bbox(factors))
    marks = pd.read_csv(out / LANDMARKS_FILE, sep=r"\s+", skiprows=1, header=0, names=["image_id", *LANDMARK_COLUMNS])
    np.testing.assert_array_equal(marks[list(LANDMARK_COLUMNS)].to_numpy(), synth.face_landmarks(factors))
    # every landmark lies inside its face box, and the box inside the centre 148x148 crop
    x, y = marks[list(LANDMARK_COLUMNS[0::2])].to_numpy(), marks[list(LANDMARK_COLUMNS[1::2])].to_numpy()
    x1, y1, w, h = (bbox[c].to_numpy()[:, None] for c in BBOX_COLUMNS)
    assert ((x > x1) & (x < x1 + w) & (y > y1) & (y < y1 + h)).all()
    inside_w = np.minimum(x1 + w, 163) - np.maximum(x1, 15)
    inside_h = np.minimum(y1 + h, 183) - np.maximum(y1, 35)
    assert (inside_w * inside_h >= 0.95 * w * h).all()


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_bytes_for_any_workers_and_other_seed_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "CHUNK", 16)
    n = 2 * batch.CHUNK + 8  # three chunks, so two worker processes really share the work
    one = synth.synthesize(tmp_path / "one", n=n, seed=5, workers=1, progress=False).out_dir
    two = synth.synthesize(tmp_path / "two", n=n, seed=5, workers=2, progress=False).out_dir
    other = synth.synthesize(tmp_path / "other", n=n, seed=6, images=False, progress=False).out_dir
    names = [*ANNOTATION_FILES, synth.FACTORS_FILE] + [f"{IMAGE_DIR}/{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    for name in (ATTR_FILE, IDENTITY_FILE, LANDMARKS_FILE):
        assert (one / name).read_bytes() != (other / name).read_bytes(), name


def test_render_reproduces_the_written_jpeg_from_factors_parquet(small: synth.SynthResult) -> None:
    factors = pd.read_parquet(small.out_dir / synth.FACTORS_FILE)
    pd.testing.assert_frame_equal(factors, small.factors)
    for i in (0, 41, 79):
        record = factors.iloc[i].to_dict()
        expected = (small.out_dir / IMAGE_DIR / record["image_id"]).read_bytes()
        assert synth.encode_jpeg(synth.render_face(record)) == expected


# --------------------------------------------------------------------------------------------
# The generative model


def test_prevalences_match_celeba_at_20000(tmp_path: Path) -> None:
    result = synth.synthesize(tmp_path / "big", n=20_000, seed=0, images=False, progress=False)
    assert not (tmp_path / "big" / IMAGE_DIR).exists()
    signs = pd.read_csv(tmp_path / "big" / ATTR_FILE, sep=r"\s+", skiprows=2, header=None, index_col=0)
    assert signs.shape == (20_000, 40)
    rates = (signs.to_numpy() == 1).mean(axis=0)
    gaps = {name: rates[i] - CELEBA_PREVALENCE[name] for i, name in enumerate(ATTRIBUTE_NAMES)}
    off = {name: round(100 * gap, 2) for name, gap in gaps.items() if abs(gap) > 0.015}
    assert not off, f"prevalence off by more than 1.5 pp: {off}"
    assert result.n_identities == round(20_000 / synth.IMAGES_PER_IDENTITY)


def test_identity_sizes_vary_like_celeba_and_sum_to_n() -> None:
    sizes = synth.identity_sizes(20_000, 1005, np.random.default_rng(0))
    assert sizes.sum() == 20_000 and len(sizes) == 1005 and sizes.min() >= 1
    assert (sizes <= 3).sum() >= 20  # some people have very few images ...
    assert ((sizes >= 20) & (sizes <= 35)).mean() > 0.5  # ... most have 20-35, like CelebA
    with pytest.raises(ValueError, match="identities"):
        synth.identity_sizes(10, 11, np.random.default_rng(0))


def test_identities_share_base_factors_and_vary_per_image() -> None:
    factors = synth.sample_faces(3000, seed=1).factors
    groups = factors.groupby("identity")
    for name, factor in synth.FACTORS.items():
        distinct = groups[name].nunique()
        if factor.level == "identity":
            assert (distinct == 1).all(), name
        elif factor.kind == "float":
            assert (distinct[groups.size() > 1] > 1).all(), name


def test_partition_is_identity_disjoint_contiguous_and_80_10_10() -> None:
    factors = synth.sample_faces(20_000, seed=2).factors
    assert (np.diff(factors["partition"].to_numpy()) >= 0).all()  # blocks 0, 1, 2 in image-id order
    assert (factors.groupby("identity")["partition"].nunique() == 1).all()
    per_identity = factors.groupby("identity")["partition"].first().value_counts(normalize=True)
    np.testing.assert_allclose(per_identity.sort_index().to_numpy(), [0.8, 0.1, 0.1], atol=0.005)
    identities = factors["identity"].to_numpy()
    assert sorted(set(identities)) == list(range(1, identities.max() + 1))


def test_attribute_file_agrees_with_the_drawn_factors(small: synth.SynthResult) -> None:
    signs = pd.read_csv(small.out_dir / ATTR_FILE, sep=r"\s+", skiprows=2, header=None, index_col=0)
    written = pd.DataFrame(signs.to_numpy() == 1, columns=list(ATTRIBUTE_NAMES))
    drawn = synth.attributes_from_factors(pd.read_parquet(small.out_dir / synth.FACTORS_FILE))
    pd.testing.assert_frame_equal(written[list(synth.VISIBLE_ATTRIBUTES)], drawn)


def test_attributes_follow_the_rules_of_the_model() -> None:
    sample = synth.sample_faces(20_000, seed=4)
    a, f = sample.attributes, sample.factors
    female = ~a["Male"]
    for beard in ("5_o_Clock_Shadow", "Goatee", "Mustache", "Sideburns", "Bald"):
        assert not a.loc[female, beard].any(), beard
    assert a.loc[female, "No_Beard"].all()
    assert a["Smiling"].equals(f["smile"] >= 0.5) and a["Pale_Skin"].equals(f["skin_tone"] < synth.PALE_BELOW)
    assert not (a["Wearing_Hat"] & (a["Bald"] | a["Receding_Hairline"] | a["Bangs"])).any()
    assert not (a["Bald"] & (a["Straight_Hair"] | a["Wavy_Hair"])).any()
    hair = a[["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]].sum(axis=1)
    assert hair.max() == 1
    # correlations CelebA has: smiling opens the mouth, lipstick is worn by women
    assert a.loc[a["Smiling"], "Mouth_Slightly_Open"].mean() > 0.7 > 0.3 > a.loc[~a["Smiling"], "Mouth_Slightly_Open"].mean()
    assert a.loc[female, "Wearing_Lipstick"].mean() > 0.7 > 0.05 > a.loc[~female, "Wearing_Lipstick"].mean()


def test_sample_factors_cover_the_documented_ranges() -> None:
    factors = synth.sample_factors(5000, np.random.default_rng(0))
    assert tuple(factors.columns) == synth.FACTOR_NAMES
    for name, spec in synth.FACTORS.items():
        values = factors[name].astype(float)
        assert values.min() >= spec.low and values.max() <= spec.high, name
        assert values.nunique() > 1, f"{name} never varies"
    assert factors["beard_style"].nunique() > 10 and factors["hair_color"].nunique() == len(synth.HAIR_COLORS)


# --------------------------------------------------------------------------------------------
# Rendering


def base_face() -> dict:
    """A plain woman facing forward, every optional feature off."""
    face = synth.sample_factors(1, np.random.default_rng(0)).iloc[0].to_dict()
    face.update({name: False for name, spec in synth.FACTORS.items() if spec.kind == "bool"})
    face.update(hairline=0, hair_texture=0, hair_color=2, beard_style=0, smile=0.2, hair_length=0.7,
                rotation=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, skin_tone=0.4)
    return face


def test_every_factor_changes_the_picture() -> None:
    base = base_face()
    plain = np.asarray(synth.render_face(base), dtype=int)
    changes = {name: not base[name] for name, spec in synth.FACTORS.items() if spec.kind == "bool"}
    changes |= {"hair_color": 0, "hairline": 1, "hair_texture": 2, "beard_style": 7, "smile": 0.9,
                "skin_tone": 0.9, "hair_shade": -np.sign(base["hair_shade"]), "hair_length": 0.1, "hair_thickness": 1.0,
                "face_width": 1.0 - base["face_width"], "hat_hue": base["hat_hue"] + 0.5, "rotation": 10.0,
                "scale": 1.05, "shift_x": 3.0, "shift_y": -3.0, "background_hue": base["background_hue"] + 0.5,
                "background_value": 0.9, "shirt_hue": base["shirt_hue"] + 0.5}
    assert set(changes) == set(synth.FACTOR_NAMES)
    for name, value in changes.items():
        face = base | {name: value}
        if name == "hat_hue":
            base_hat = np.asarray(synth.render_face(base | {"hat": True}), dtype=int)
            assert np.abs(np.asarray(synth.render_face(face | {"hat": True}), dtype=int) - base_hat).sum() > 0
            continue
        difference = np.abs(np.asarray(synth.render_face(face), dtype=int) - plain).sum(axis=2)
        assert (difference > 30).sum() >= 8, f"setting {name}={value} barely changes the picture"


def test_landmarks_land_on_the_drawn_pupils_and_follow_rotation() -> None:
    faces = synth.sample_factors(40, np.random.default_rng(7))
    faces["blurry"] = False
    marks = synth.face_landmarks(faces)
    pixels = synth.render_factors(faces)
    for image, mark in zip(pixels, marks):
        for x, y in (mark[0:2], mark[2:4]):
            assert image[y, x].sum() < 3 * 90, "no dark pupil under the eye landmark"
    tilted = faces.assign(rotation=10.0, shift_x=0.0, shift_y=0.0)
    eyes = synth.face_landmarks(tilted)
    assert (eyes[:, 1] > eyes[:, 3]).all()  # counter-clockwise: the image-left eye drops


def test_render_factors_holds_a_factor_fixed_on_request() -> None:
    faces = synth.sample_factors(6, np.random.default_rng(3))
    with_glasses = synth.render_factors(faces.assign(eyeglasses=True))
    without = synth.render_factors(faces.assign(eyeglasses=False))
    assert with_glasses.shape == (6, 218, 178, 3) and with_glasses.dtype == np.uint8
    assert all((a != b).any() for a, b in zip(with_glasses, without))
    np.testing.assert_array_equal(synth.render_factors(faces), synth.render_factors(faces))
    with pytest.raises(ValueError, match="smile"):
        synth.render_factors(faces.drop(columns=["smile"]))


# --------------------------------------------------------------------------------------------
# Output folder handling


def test_rerun_replaces_an_earlier_larger_run(tmp_path: Path) -> None:
    synth.synthesize(tmp_path / "c", n=12, seed=0, progress=False)
    synth.synthesize(tmp_path / "c", n=5, seed=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "c" / IMAGE_DIR).iterdir()) == [f"{i:06d}.jpg" for i in range(1, 6)]
    assert lines_of(tmp_path / "c" / ATTR_FILE)[0] == "5"
    synth.synthesize(tmp_path / "c", n=5, seed=1, images=False, progress=False)
    assert not any((tmp_path / "c" / IMAGE_DIR).iterdir())  # no JPEGs that the annotations do not describe


def test_refuses_to_overwrite_a_foreign_celeba_folder(tmp_path: Path) -> None:
    (tmp_path / ATTR_FILE).write_bytes(b"2\r\n")
    with pytest.raises(ValueError, match="did not write"):
        synth.synthesize(tmp_path, n=3, seed=0, progress=False)
    assert (tmp_path / ATTR_FILE).read_bytes() == b"2\r\n"


def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        synth.synthesize(tmp_path / "c", n=0, seed=0, progress=False)
    with pytest.raises(ValueError, match="identities"):
        synth.synthesize(tmp_path / "c", n=5, seed=0, identities=6, progress=False)


# --------------------------------------------------------------------------------------------
# Round trip through the project's own parser


def test_annotations_parser_reads_back_what_was_written(small: synth.SynthResult) -> None:
    annotations = pytest.importorskip("celeb.data.annotations")
    table = annotations.load_annotations(small.out_dir).table
    assert table["image_id"].tolist() == small.factors["image_id"].tolist()
    pd.testing.assert_frame_equal(table[list(ATTRIBUTE_NAMES)].reset_index(drop=True),
                                  small.attributes[list(ATTRIBUTE_NAMES)], check_dtype=False)
    np.testing.assert_array_equal(table["partition"], small.factors["partition"])
    np.testing.assert_array_equal(table["identity"], small.factors["identity"])
    np.testing.assert_array_equal(table[list(BBOX_COLUMNS)], synth.face_bbox(small.factors))
    np.testing.assert_array_equal(table[list(LANDMARK_COLUMNS)], synth.face_landmarks(small.factors))
