"""celeb.data.annotations: finding, parsing and validating CelebA's annotation files; the Parquet table."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celeb.data.annotations import (
    AnnotationError, AnnotationFiles, MissingColumnsError,
    build_table, describe_missing, find_annotation_files, load_annotations, read_annotation_file,
    read_table, require_columns, table_missing, write_table,
)
from celeb.data.schema import (
    ATTR_FILE, ATTRIBUTE_NAMES, BBOX_COLUMNS, BBOX_FILE, IDENTITY_FILE, LANDMARK_COLUMNS, LANDMARKS_FILE,
    PARTITION_FILE,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "celeba-annotations"
N = 8


# --------------------------------------------------------------------------------------------
# A small data set and writers for every published format (independent of celeb.synth)


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "ids": np.array([f"{i:06d}.jpg" for i in range(1, N + 1)]),
        "attrs": rng.random((N, 40)) < 0.3,
        "partition": np.array([0, 0, 0, 0, 0, 1, 1, 2]),
        "identity": rng.integers(1, 4, N),
        "bbox": rng.integers(0, 400, (N, 4)),
        "landmarks": rng.integers(0, 200, (N, 10)),
    }


def signs(row: np.ndarray) -> list[int]:
    return [1 if v else -1 for v in row]


def txt_lines(kind: str, d: dict) -> list[str]:
    """The official .txt layout: right-aligned values, two spaces before positives, trailing space."""
    ids = d["ids"]
    if kind == "attr":
        return [str(N), " ".join(ATTRIBUTE_NAMES) + " "] + [
            f"{i} " + " ".join(f"{v:2d}" for v in signs(row)) + " " for i, row in zip(ids, d["attrs"])]
    if kind in ("partition", "identity"):
        return [f"{i} {v}" for i, v in zip(ids, d[kind])]
    if kind == "bbox":
        return [str(N), "image_id x_1 y_1 width height "] + [
            f"{i}" + "".join(f"{v:>6d}" for v in row) for i, row in zip(ids, d["bbox"])]
    return [str(N), " ".join(LANDMARK_COLUMNS)] + [
        f"{i} " + "\t".join(f"{v:>4d}" for v in row) + "  " for i, row in zip(ids, d["landmarks"])]


def csv_lines(kind: str, d: dict) -> list[str]:
    """Kaggle's .csv layout: a header with image_id, no count line."""
    ids = d["ids"]
    if kind == "attr":
        return [",".join(("image_id",) + ATTRIBUTE_NAMES)] + [
            ",".join([i] + [str(v) for v in signs(row)]) for i, row in zip(ids, d["attrs"])]
    if kind == "partition":
        return ["image_id,partition"] + [f"{i},{v}" for i, v in zip(ids, d["partition"])]
    columns = BBOX_COLUMNS if kind == "bbox" else LANDMARK_COLUMNS
    return [",".join(("image_id",) + columns)] + [
        ",".join([i] + [str(v) for v in row]) for i, row in zip(ids, d[kind])]


def write(path: Path, lines: list[str], newline: str = "\r\n", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((("\ufeff" if bom else "") + newline.join(lines) + newline).encode())
    return path


def write_official(folder: Path, d: dict, kinds=("attr", "partition", "identity", "bbox", "landmarks"),
                   where: dict[str, str] | None = None) -> Path:
    names = {"attr": ATTR_FILE, "partition": PARTITION_FILE, "identity": IDENTITY_FILE, "bbox": BBOX_FILE,
             "landmarks": LANDMARKS_FILE}
    for kind in kinds:
        write(folder / (where or {}).get(kind, "") / names[kind], txt_lines(kind, d))
    return folder


def write_kaggle(folder: Path, d: dict) -> Path:
    for kind in ("attr", "partition", "bbox", "landmarks"):
        name = {"attr": ATTR_FILE, "partition": PARTITION_FILE, "bbox": BBOX_FILE, "landmarks": LANDMARKS_FILE}[kind]
        write(folder / name.replace(".txt", ".csv"), csv_lines(kind, d), newline="\n")
    return folder


def assert_table_matches(table: pd.DataFrame, d: dict, identity: bool = True) -> None:
    expected_columns = (["image_id", "partition"] + (["identity"] if identity else []) + list(ATTRIBUTE_NAMES)
                        + list(BBOX_COLUMNS) + list(LANDMARK_COLUMNS))
    assert list(table.columns) == expected_columns
    assert table["image_id"].tolist() == d["ids"].tolist()
    assert pd.api.types.is_string_dtype(table["image_id"])
    assert table["partition"].dtype == np.int8
    assert table["partition"].tolist() == d["partition"].tolist()
    if identity:
        assert table["identity"].dtype == np.int32
        assert table["identity"].tolist() == d["identity"].tolist()
    assert (table[list(ATTRIBUTE_NAMES)].dtypes == bool).all()
    np.testing.assert_array_equal(table[list(ATTRIBUTE_NAMES)].to_numpy(), d["attrs"])
    for columns, key in ((BBOX_COLUMNS, "bbox"), (LANDMARK_COLUMNS, "landmarks")):
        assert (table[list(columns)].dtypes == np.int32).all()
        np.testing.assert_array_equal(table[list(columns)].to_numpy(), d[key])


# --------------------------------------------------------------------------------------------
# Layouts and the typed table


def test_flat_official_layout_gives_the_typed_table(tmp_path, data):
    write_official(tmp_path, data)
    # Shuffle one file's rows, add a BOM and LF endings: the table is still aligned and sorted.
    lines = txt_lines("identity", data)
    write(tmp_path / IDENTITY_FILE, lines[::-1], newline="\n", bom=True)

    annotations = load_annotations(tmp_path)

    assert annotations.missing == []
    assert_table_matches(annotations.table, data)


def test_google_drive_layout_is_found(tmp_path, data):
    where = {"attr": "Anno", "identity": "Anno", "bbox": "Anno", "landmarks": "Anno", "partition": "Eval"}
    write_official(tmp_path, data, where=where)
    (tmp_path / "Img" / "img_align_celeba").mkdir(parents=True)

    files = find_annotation_files(tmp_path)

    assert files.attr == tmp_path / "Anno" / ATTR_FILE
    assert files.partition == tmp_path / "Eval" / PARTITION_FILE
    assert files.landmarks == tmp_path / "Anno" / LANDMARKS_FILE
    assert_table_matches(build_table(files).table, data)


def test_torchvision_layout_two_levels_down_is_found_but_not_three(tmp_path, data):
    write_official(tmp_path / "outer" / "root" / "celeba", data)
    assert find_annotation_files(tmp_path / "outer").attr == tmp_path / "outer" / "root" / "celeba" / ATTR_FILE
    files = find_annotation_files(tmp_path)  # now three levels down: out of reach
    assert files.attr is None and files.partition is None


def test_kaggle_csv_layout_has_no_identity(tmp_path, data):
    write_kaggle(tmp_path, data)

    annotations = load_annotations(tmp_path)

    assert annotations.missing == ["identity"]
    assert_table_matches(annotations.table, data, identity=False)


def test_kaggle_csv_tolerates_spaces_crlf_bom_and_trailing_commas(tmp_path, data):
    lines = csv_lines("attr", data)
    messy = [lines[0] + " "] + [line.replace(",", " , ") + ", " for line in lines[1:]]
    path = write(tmp_path / "list_attr_celeba.csv", messy, newline="\r\n", bom=True)
    frame = read_annotation_file(path, "attr")
    assert frame["image_id"].tolist() == data["ids"].tolist()
    np.testing.assert_array_equal(frame[list(ATTRIBUTE_NAMES)].to_numpy(), data["attrs"])


def test_txt_is_preferred_over_csv_and_optional_files_are_reported(tmp_path, data):
    write_kaggle(tmp_path, data)
    write_official(tmp_path, data, kinds=("attr",))

    files = find_annotation_files(tmp_path)
    annotations = build_table(files)

    assert files.attr.name == ATTR_FILE
    assert files.partition.name == "list_eval_partition.csv"
    assert annotations.missing == ["identity"]


def test_only_required_files_leave_optional_columns_out(tmp_path, data):
    write_official(tmp_path, data, kinds=("attr", "partition"))
    annotations = load_annotations(tmp_path)
    assert annotations.missing == ["identity", "bbox", "landmarks"]
    assert list(annotations.table.columns) == ["image_id", "partition", *ATTRIBUTE_NAMES]


def test_each_file_parses_to_its_typed_columns_in_file_order(tmp_path, data):
    write_official(tmp_path, data)
    lines = txt_lines("partition", data)
    frame = read_annotation_file(write(tmp_path / PARTITION_FILE, lines[::-1]), "partition")
    assert frame["image_id"].tolist() == data["ids"][::-1].tolist()
    assert frame["partition"].dtype == np.int8
    bbox = read_annotation_file(tmp_path / BBOX_FILE, "bbox")
    assert list(bbox.columns) == ["image_id", *BBOX_COLUMNS]
    np.testing.assert_array_equal(bbox[list(BBOX_COLUMNS)].to_numpy(), data["bbox"])


# --------------------------------------------------------------------------------------------
# Errors: every one names the file and the line


def replace_field(line: str, index: int, value: str) -> str:
    fields = line.split()
    fields[index] = value
    return " ".join(fields)


ATTR_ERRORS = {
    # name: (mutate the attr file's lines, the line the error names, phrases it contains)
    "short row": (lambda L: L.__setitem__(4, L[4].rsplit(" ", 2)[0]), 5, ["expected 41 fields", "found 40"]),
    "long first row": (lambda L: L.__setitem__(2, L[2] + " 1"), 3, ["expected 41 fields", "found 42"]),
    "very long row": (lambda L: L.__setitem__(6, L[6] + " 1 -1 1"), 7, ["found 44"]),
    "zero value": (lambda L: L.__setitem__(6, replace_field(L[6], 5, "0")), 7,
                   ["attribute 'Bald' is 0, expected -1 or 1"]),
    "word value": (lambda L: L.__setitem__(3, replace_field(L[3], 1, "yes")), 4,
                   ["attribute '5_o_Clock_Shadow' is 'yes'"]),
    "float value": (lambda L: L.__setitem__(5, replace_field(L[5], 40, "1.0")), 6, ["'Young' is '1.0'"]),
    "huge value": (lambda L: L.__setitem__(8, replace_field(L[8], 2, "99999999999999999999")), 9,
                   ["attribute 'Arched_Eyebrows' is '99999999999999999999'"]),
    "blank line": (lambda L: L.__setitem__(5, ""), 6, ["blank line"]),
    "count too high": (lambda L: L.__setitem__(0, str(N + 1)), 1, [f"says {N + 1} images", f"has {N} rows"]),
    "no count line": (lambda L: L.pop(0), 1, ["expected the number of images"]),
    "wrong name": (lambda L: L.__setitem__(1, L[1].replace("Bald", "Bold")), 2,
                   ["missing ['Bald']", "unexpected ['Bold']"]),
    "swapped names": (lambda L: L.__setitem__(1, L[1].replace("Bald Bangs", "Bangs Bald")), 2,
                      ["out of order", "field 5 is 'Bangs', expected 'Bald'"]),
    "repeated id": (lambda L: L.__setitem__(7, L[7].replace("000006", "000003")), 8,
                    ["'000003.jpg' appears again", "first on line 5"]),
    "malformed id": (lambda L: L.__setitem__(9, L[9].replace(".jpg", ".png")), 10,
                     ["malformed image id '000008.png'"]),
    "NA id": (lambda L: L.__setitem__(2, "NA" + L[2][10:]), 3, ["malformed image id 'NA'"]),
    "no rows": (lambda L: L.__delitem__(slice(2, None)), 3, ["expected the first image row"]),
}


@pytest.mark.parametrize("case", ATTR_ERRORS, ids=list(ATTR_ERRORS))
def test_attr_file_errors_name_the_file_and_line(tmp_path, data, case):
    mutate, line, phrases = ATTR_ERRORS[case]
    lines = txt_lines("attr", data)
    mutate(lines)
    path = write(tmp_path / ATTR_FILE, lines)

    with pytest.raises(AnnotationError) as error:
        read_annotation_file(path, "attr")

    message = str(error.value)
    assert f"{ATTR_FILE} line {line}:" in message
    for phrase in phrases:
        assert phrase in message


OTHER_ERRORS = {
    "partition 3": ("partition", lambda L: L.__setitem__(1, "000002.jpg 3"), 2,
                    ["partition is 3", "0 (train), 1 (val) or 2 (test)"]),
    "identity word": ("identity", lambda L: L.__setitem__(3, "000004.jpg abc"), 4,
                      ["identity is 'abc', expected a positive integer"]),
    "identity zero": ("identity", lambda L: L.__setitem__(7, "000008.jpg 0"), 8, ["identity is 0"]),
    "identity too big": ("identity", lambda L: L.__setitem__(0, "000001.jpg 4294967296"), 1,
                         ["identity is 4294967296"]),
    "identity header": ("identity", lambda L: L.insert(0, "image_id identity"), 1,
                        ["malformed image id 'image_id'"]),
    "bbox header": ("bbox", lambda L: L.__setitem__(1, "x_1 y_1 width height"), 2,
                    ["image_id x_1 y_1 width height", "missing ['image_id']"]),
    "landmarks count": ("landmarks", lambda L: L.__setitem__(0, "3"), 1, ["says 3 images"]),
    "landmarks short": ("landmarks", lambda L: L.__setitem__(4, L[4].split("\t")[0]), 5,
                        ["expected 11 fields (image id + 10 values), found 2"]),
}


@pytest.mark.parametrize("case", OTHER_ERRORS, ids=list(OTHER_ERRORS))
def test_other_file_errors_name_the_file_and_line(tmp_path, data, case):
    kind, mutate, line, phrases = OTHER_ERRORS[case]
    name = {"partition": PARTITION_FILE, "identity": IDENTITY_FILE, "bbox": BBOX_FILE,
            "landmarks": LANDMARKS_FILE}[kind]
    lines = txt_lines(kind, data)
    mutate(lines)
    path = write(tmp_path / name, lines)

    with pytest.raises(AnnotationError) as error:
        read_annotation_file(path, kind)

    message = str(error.value)
    assert f"{name} line {line}:" in message
    for phrase in phrases:
        assert phrase in message


def test_csv_empty_field_and_wrong_header_are_named(tmp_path, data):
    lines = csv_lines("partition", data)
    lines[3] = "000003.jpg,"
    with pytest.raises(AnnotationError, match=r"list_eval_partition\.csv line 4: expected 2 fields .* found 1"):
        read_annotation_file(write(tmp_path / "list_eval_partition.csv", lines), "partition")
    lines = csv_lines("attr", data)
    lines[2] = lines[2].replace(",-1,", ",,", 1)
    with pytest.raises(AnnotationError, match=r"list_attr_celeba\.csv line 3: attribute '.*' is empty"):
        read_annotation_file(write(tmp_path / "list_attr_celeba.csv", lines), "attr")
    lines = csv_lines("attr", data)
    lines[0] = lines[0].replace("image_id,", "")
    with pytest.raises(AnnotationError, match=r"list_attr_celeba\.csv line 1: .*missing \['image_id'\]"):
        read_annotation_file(write(tmp_path / "list_attr_celeba.csv", lines), "attr")


def test_non_utf8_bytes_are_named_with_their_line(tmp_path, data):
    path = write(tmp_path / PARTITION_FILE, txt_lines("partition", data))
    path.write_bytes(path.read_bytes().replace(b"000005.jpg", b"00000\xff.jpg"))
    with pytest.raises(AnnotationError, match=r"list_eval_partition\.txt line 5: byte 0xff is not UTF-8"):
        read_annotation_file(path, "partition")


def test_files_listing_different_images_name_an_example_and_the_file_lacking_it(tmp_path, data):
    write_official(tmp_path, data)
    lines = txt_lines("identity", data)
    write(tmp_path / IDENTITY_FILE, lines[:3] + lines[4:])  # 000004.jpg is missing

    with pytest.raises(AnnotationError) as error:
        load_annotations(tmp_path)

    message = str(error.value)
    assert f"{ATTR_FILE} line 6: image '000004.jpg' is not in" in message
    assert str(tmp_path / IDENTITY_FILE) in message

    extra = txt_lines("partition", data) + ["000009.jpg 2"]
    write(tmp_path / IDENTITY_FILE, lines)
    write(tmp_path / PARTITION_FILE, extra)
    with pytest.raises(AnnotationError, match=rf"{PARTITION_FILE} line 9: image '000009.jpg' is not in .*{ATTR_FILE}"):
        load_annotations(tmp_path)


def test_missing_required_file_names_the_files_searched_and_the_folder(tmp_path, data):
    write_official(tmp_path, data, kinds=("attr", "identity"))
    with pytest.raises(AnnotationError) as error:
        load_annotations(tmp_path)
    message = str(error.value)
    assert PARTITION_FILE in message and "list_eval_partition.csv" in message and str(tmp_path) in message
    with pytest.raises(AnnotationError, match="list_attr_celeba.txt or list_attr_celeba.csv was given"):
        build_table(AnnotationFiles(partition=tmp_path / PARTITION_FILE))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_annotation_files(tmp_path / "nowhere")


def test_two_copies_at_the_same_depth_are_ambiguous(tmp_path, data):
    write_official(tmp_path / "a", data, kinds=("attr",))
    write_official(tmp_path / "b", data, kinds=("attr",))
    with pytest.raises(AnnotationError, match=r"found list_attr_celeba\.txt in 2 places"):
        find_annotation_files(tmp_path)
    write_official(tmp_path, data, kinds=("attr",))  # a shallower copy settles it
    assert find_annotation_files(tmp_path).attr == tmp_path / ATTR_FILE


# --------------------------------------------------------------------------------------------
# Parquet, missing columns


def test_table_round_trips_through_parquet_with_its_metadata(tmp_path, data):
    write_kaggle(tmp_path / "celeba", data)
    annotations = load_annotations(tmp_path / "celeba")
    path = tmp_path / "data" / "celeba.parquet"

    write_table(annotations.table, path, annotations.missing)

    pd.testing.assert_frame_equal(read_table(path), annotations.table)
    assert table_missing(path) == ["identity"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["celeba.parquet"]  # no temp file left


def test_reading_a_table_that_is_not_there_says_to_run_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `celeb prepare"):
        read_table(tmp_path / "celeba.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a table written by `celeb prepare`"):
        read_table(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not written by `celeb prepare`"):
        table_missing(tmp_path / "other.parquet")


def test_require_columns_says_which_file_to_add(tmp_path, data):
    write_official(tmp_path, data, kinds=("attr", "partition"))
    table = load_annotations(tmp_path).table
    require_columns(table, ["partition", "Bald"], "the official split")  # present: no error

    with pytest.raises(MissingColumnsError) as error:
        require_columns(table, ["identity"], "the balanced split")
    assert str(error.value) == ("the balanced split needs identities, but the table was built without "
                                "identity_CelebA.txt; put it in CELEBA_DIR and rerun `celeb prepare`")
    with pytest.raises(MissingColumnsError, match="bounding boxes and landmarks.*list_bbox_celeba.txt and "
                                                  "list_landmarks_align_celeba.txt; put them"):
        require_columns(table, ["x_1", "lefteye_x"], "face crops")


def test_describe_missing_names_files_and_what_they_turn_off():
    assert describe_missing([]) == ""
    line = describe_missing(["identity", "bbox"])
    assert "\n" not in line
    assert IDENTITY_FILE in line and "balanced identity-disjoint splits are off" in line
    assert BBOX_FILE in line and LANDMARKS_FILE not in line
    everything = describe_missing(["identity", "bbox", "landmarks"])
    assert LANDMARKS_FILE in everything and everything.count("nothing in the pipeline needs them") == 1


# --------------------------------------------------------------------------------------------
# Real CelebA files and full size


def require_shared(*names: str) -> list[Path]:
    paths = [SHARED / name for name in names]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real CelebA annotations not found under {SHARED}")
    return paths


def test_real_first_20000_rows():
    require_shared("first20000/list_attr_celeba.txt", "first20000/identity_CelebA.txt",
                   "first20000/list_eval_partition.txt")
    annotations = load_annotations(SHARED / "first20000")
    table = annotations.table
    assert len(table) == 20000
    assert table["image_id"].iloc[[0, -1]].tolist() == ["000001.jpg", "020000.jpg"]
    assert table["identity"].nunique() == 6912
    assert table["Bald"].mean() == pytest.approx(0.023, abs=0.0005)
    assert annotations.missing == ["bbox", "landmarks"]


def test_real_full_identity_and_partition_files():
    identity_path, partition_path = require_shared(IDENTITY_FILE, PARTITION_FILE)
    partition = read_annotation_file(partition_path, "partition")
    identity = read_annotation_file(identity_path, "identity")
    assert len(partition) == len(identity) == 202_599
    assert np.bincount(partition["partition"]).tolist() == [162_770, 19_867, 19_962]
    assert identity["identity"].nunique() == 10_177
    assert (identity["image_id"] == partition["image_id"]).all()


def test_full_size_attr_file_parses(tmp_path):
    n = 202_599
    positive = np.random.default_rng(1).random((n, 40)) < 0.25
    # Fixed-width official rows ("000001.jpg -1  1 ...\r\n", 132 bytes) written as one byte matrix.
    digits = (np.arange(1, n + 1)[:, None] // 10 ** np.arange(5, -1, -1)) % 10 + ord("0")
    cells = np.where(positive[:, :, None], np.frombuffer(b"  1", np.uint8), np.frombuffer(b" -1", np.uint8))
    rows = np.hstack([digits, np.broadcast_to(np.frombuffer(b".jpg", np.uint8), (n, 4)),
                      cells.reshape(n, 120), np.broadcast_to(np.frombuffer(b"\r\n", np.uint8), (n, 2))])
    header = f"{n}\r\n{' '.join(ATTRIBUTE_NAMES)} \r\n".encode()
    path = tmp_path / ATTR_FILE
    path.write_bytes(header + rows.astype(np.uint8).tobytes())

    start = time.perf_counter()
    frame = read_annotation_file(path, "attr")
    print(f"\nparsed {n:,}-row {ATTR_FILE} ({path.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.2f} s")

    assert len(frame) == n
    assert frame["image_id"].iloc[-1] == "202599.jpg"
    np.testing.assert_array_equal(frame[list(ATTRIBUTE_NAMES)].to_numpy(), positive)

    # A bad token on the very last line is still named exactly.
    path.write_bytes(path.read_bytes()[:-4] + b" +\r\n")
    start = time.perf_counter()
    with pytest.raises(AnnotationError, match=f"{ATTR_FILE} line {n + 2}: attribute 'Young' is '[+]'"):
        read_annotation_file(path, "attr")
    print(f"found the bad last line in {time.perf_counter() - start:.2f} s")
