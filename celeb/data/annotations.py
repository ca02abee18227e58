"""CelebA's official annotation files -> one validated, typed table (and its Parquet file).

Owns everything between a downloaded CelebA folder and `celeba.parquet`:

- finding the files in the layouts people have (flat/torchvision, Google Drive's Anno/ + Eval/,
  Kaggle's CSVs);
- parsing the published formats (count line, header, `000001.jpg -1  1 ...` rows; Kaggle's CSVs);
- strict validation: every problem is an `AnnotationError` naming the file, the 1-based line and
  what was expected versus found;
- joining the files into one table sorted by image id, writing and reading it as Parquet.

Parsing is vectorised: pandas' C reader does the work and the result is checked as arrays. Only
when that reader chokes is the text scanned again line by line, to name the first bad line exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from celeb import __version__
from celeb.atomic import atomic_path
from celeb.data.schema import (
    ATTR_FILE, ATTRIBUTE_NAMES, BBOX_COLUMNS, BBOX_FILE, IDENTITY, IDENTITY_FILE, IMAGE_DIR, IMAGE_ID,
    LANDMARK_COLUMNS, LANDMARKS_FILE, PARTITION, PARTITION_FILE, PARTITION_NAMES,
)

Kind = Literal["attr", "partition", "identity", "bbox", "landmarks"]

OFFICIAL_FILES: dict[str, str] = {
    "attr": ATTR_FILE, "partition": PARTITION_FILE, "identity": IDENTITY_FILE,
    "bbox": BBOX_FILE, "landmarks": LANDMARKS_FILE,
}
REQUIRED_KINDS: tuple[str, ...] = ("attr", "partition")
OPTIONAL_KINDS: tuple[str, ...] = ("identity", "bbox", "landmarks")
SEARCH_DEPTH = 2  # root, root/*, root/*/*: covers Anno/, Eval/, torchvision's celeba/, Kaggle folders
IMAGE_ID_PATTERN = r"[0-9]{6}\.jpg"
METADATA_KEY = b"celeb"

_INT32 = np.iinfo(np.int32)


class AnnotationError(ValueError):
    """A CelebA annotation file (or the set of them) is not what the published format says."""


class MissingColumnsError(ValueError):
    """A feature needs table columns that were not built because their annotation file was absent."""


# --------------------------------------------------------------------------------------------
# Finding the files


@dataclass(frozen=True)
class AnnotationFiles:
    """Where each annotation file is (None when absent) and the folder that was searched."""

    attr: Path | None = None
    partition: Path | None = None
    identity: Path | None = None
    bbox: Path | None = None
    landmarks: Path | None = None
    celeba_dir: Path | None = None


def candidate_names(kind: str) -> tuple[str, ...]:
    """File names accepted for one kind, preferred first: the official .txt, then Kaggle's .csv."""
    official = OFFICIAL_FILES[kind]
    if kind == "identity":  # Kaggle ships no identity file, so there is no CSV form to accept
        return (official,)
    return official, str(Path(official).with_suffix(".csv"))


def find_annotation_files(celeba_dir: Path) -> AnnotationFiles:
    """Locate CelebA's annotation files in `celeba_dir` or up to two folder levels below it.

    The official .txt beats Kaggle's .csv wherever each lies; among copies of the same name the
    shallowest wins, and two copies at that depth are an error (which one is meant is unclear).
    """
    root = Path(celeba_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"CelebA folder {root} does not exist or is not a folder")
    levels = _search_levels(root)
    found = {kind: _find_one(levels, candidate_names(kind)) for kind in OFFICIAL_FILES}
    return AnnotationFiles(**found, celeba_dir=root)


def _search_levels(root: Path) -> list[list[Path]]:
    """Folders to search, grouped by depth; image folders and hidden folders are not entered."""
    levels = [[root]]
    for _ in range(SEARCH_DEPTH):
        below = []
        for folder in levels[-1]:
            try:
                with os.scandir(folder) as entries:  # scandir: no stat per entry in a folder of JPEGs
                    below += sorted(Path(e.path) for e in entries
                                    if e.is_dir() and not e.name.startswith(".") and e.name != IMAGE_DIR)
            except PermissionError:
                continue
        levels.append(below)
    return levels


def _find_one(levels: list[list[Path]], names: tuple[str, ...]) -> Path | None:
    for name in names:
        for level in levels:
            hits = [folder / name for folder in level if (folder / name).is_file()]
            if len(hits) > 1:
                listed = ", ".join(str(h) for h in hits)
                raise AnnotationError(f"found {name} in {len(hits)} places at the same depth ({listed}); "
                                      "remove the extra copies or point at the folder you mean")
            if hits:
                return hits[0]
    return None


# --------------------------------------------------------------------------------------------
# The published formats


@dataclass(frozen=True)
class _Format:
    """One file's layout and the values it may hold."""

    columns: tuple[str, ...]          # value columns after the image id
    header: tuple[str, ...] | None    # the header line's fields, or None when there is none
    count_line: bool                  # line 1 holds the number of rows
    comma: bool                       # Kaggle's CSV instead of whitespace-separated
    noun: str                         # errors call a column f"{noun} {name!r}" (or just name)
    expected: str                     # what a value should be, in words
    allowed: tuple[int, ...] | None = None
    low: int = int(_INT32.min)
    high: int = int(_INT32.max)

    def label(self, column: str) -> str:
        return f"{self.noun} {column!r}" if self.noun else column

    def bad_values(self, values: np.ndarray) -> np.ndarray:
        if self.allowed is not None:  # a loop over the few allowed values beats np.isin here
            bad = np.ones(values.shape, dtype=bool)
            for value in self.allowed:
                bad &= values != value
            return bad
        return (values < self.low) | (values > self.high)


def _format(kind: str, comma: bool) -> _Format:
    image_id = (IMAGE_ID,) if comma else ()
    if kind == "attr":
        return _Format(ATTRIBUTE_NAMES, image_id + ATTRIBUTE_NAMES, count_line=not comma, comma=comma,
                       noun="attribute", expected="-1 or 1", allowed=(-1, 1))
    if kind == "partition":
        *first, last = [f"{code} ({name})" for code, name in PARTITION_NAMES.items()]
        return _Format((PARTITION,), (IMAGE_ID, PARTITION) if comma else None, count_line=False,
                       comma=comma, noun="", expected=f"{', '.join(first)} or {last}",
                       allowed=tuple(PARTITION_NAMES))
    if kind == "identity":
        return _Format((IDENTITY,), (IMAGE_ID, IDENTITY) if comma else None, count_line=False,
                       comma=comma, noun="", expected="a positive integer", low=1)
    if kind == "bbox":
        return _Format(BBOX_COLUMNS, (IMAGE_ID,) + BBOX_COLUMNS, count_line=not comma, comma=comma,
                       noun="column", expected="an integer (32-bit)")
    if kind == "landmarks":
        return _Format(LANDMARK_COLUMNS, image_id + LANDMARK_COLUMNS, count_line=not comma, comma=comma,
                       noun="column", expected="an integer (32-bit)")
    raise ValueError(f"unknown annotation kind {kind!r}; expected one of {', '.join(OFFICIAL_FILES)}")


@dataclass
class _Rows:
    """One parsed file: image ids and int64 values in file order; row i is on line first_line + i."""

    path: Path
    kind: str
    ids: np.ndarray      # (n,) fixed-width unicode
    values: np.ndarray   # (n, len(columns)) int64
    first_line: int

    def error(self, row: int, message: str) -> AnnotationError:
        return _line_error(self.path, self.first_line + row, message)


def _line_error(path: Path, line: int, message: str) -> AnnotationError:
    return AnnotationError(f"{path} line {line}: {message}")


def read_annotation_file(path: Path, kind: Kind) -> pd.DataFrame:
    """Parse and validate one annotation file: image_id plus its typed columns, in file order.

    `kind` is one of attr, partition, identity, bbox, landmarks; .csv means Kaggle's layout.
    """
    rows = _read_rows(Path(path), kind)
    return pd.DataFrame({IMAGE_ID: pd.array(rows.ids, dtype="str"), **_typed_columns(rows)})


def _read_rows(path: Path, kind: str) -> _Rows:
    fmt = _format(kind, comma=path.suffix.lower() == ".csv")
    text = _read_text(path)
    n_preamble = int(fmt.count_line) + int(fmt.header is not None)
    parts = text.split("\n", n_preamble)
    parts += [""] * (n_preamble + 1 - len(parts))  # a file that ends early fails the checks below
    count = _check_count_line(path, parts[0]) if fmt.count_line else None
    if fmt.header is not None:
        _check_header(path, n_preamble, parts[n_preamble - 1], fmt)

    first_line = n_preamble + 1
    body = parts[n_preamble].rstrip()  # a trailing blank line (or trailing spaces) is fine
    if not body:
        raise _line_error(path, first_line, "expected the first image row, found the end of the file")
    ids, values = _parse_body(path, body, first_line, fmt)
    rows = _Rows(path, kind, ids, values, first_line)

    if count is not None and count != len(ids):
        raise _line_error(path, 1, f"the count line says {count} images but the file has {len(ids)} rows "
                                   f"(lines {first_line}-{first_line + len(ids) - 1}); "
                                   "the file is truncated or the count is wrong")
    _check_image_ids(rows)
    _check_values(rows, fmt)
    return rows


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file {path} does not exist") from None
    try:
        return data.decode("utf-8-sig")  # -sig: drop a byte-order mark left by Windows editors
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise _line_error(path, line, f"byte {data[error.start]:#04x} is not UTF-8 text; this is not a "
                                      "CelebA annotation file, or it is damaged (download it again)") from None


def _check_count_line(path: Path, line: str) -> int:
    text = line.strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise _line_error(path, 1, f"expected the number of images (e.g. 202599), found {_shorten(text)!r}")
    return int(text)


def _check_header(path: Path, line_number: int, line: str, fmt: _Format) -> None:
    found = _split_fields(line, fmt.comma)
    expected = list(fmt.header)
    if found == expected:
        return
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    repeated = sorted({name for name in found if found.count(name) > 1})
    problems = [f"{what} {_list_some(names)}" for what, names in
                (("missing", missing), ("unexpected", unexpected), ("repeated", repeated)) if names]
    if not problems:
        at = next(i for i, (a, b) in enumerate(zip(found, expected)) if a != b)
        problems.append(f"out of order: field {at + 1} is {found[at]!r}, expected {expected[at]!r}")
    if fmt.columns == ATTRIBUTE_NAMES:
        what = f"the {len(ATTRIBUTE_NAMES)} official attribute names"
    else:
        what = "the header " + (", " if fmt.comma else " ").join(expected)
    raise _line_error(path, line_number, f"expected {what} in order; {'; '.join(problems)}")


def _split_fields(line: str, comma: bool) -> list[str]:
    if not comma:
        return line.split()
    line = line.strip()
    if line.endswith(","):  # a trailing comma (some CSV writers add one) ends the row, not a field
        line = line[:-1]
    return [field.strip() for field in line.split(",")] if line else []


def _parse_body(path: Path, body: str, first_line: int, fmt: _Format) -> tuple[np.ndarray, np.ndarray]:
    """Image ids (n,) and int64 values (n, k) of the rows; raises at the first line that is wrong.

    pandas' C reader does the parsing. An extra "sentinel" column catches rows with too many
    fields; too few fields or a non-integer leave a value column that is not int64; a blank line
    makes the row count differ from the line count. Only then is the body read again, to name
    the first bad line.
    """
    k = len(fmt.columns)
    sentinel = k + 1
    try:
        frame = _read_fields(body, fmt, names=list(range(k + 2)), dtype={0: object, sentinel: object})
    except pd.errors.ParserError:
        frame = None
    suspects = [] if frame is None else [c for c in range(1, k + 1) if frame[c].dtype != np.int64]
    if (frame is None or len(frame) != body.count("\n") + 1 or not (frame[sentinel] == "").all()
            or suspects):
        _raise_first_ragged_line(path, body, first_line, fmt)
        _raise_first_non_integer(path, body, first_line, fmt, suspects)
        raise AnnotationError(f"{path}: could not be read as CelebA's {'CSV' if fmt.comma else 'text'} layout "
                              f"(image id then {_describe_columns(fmt)} per line)")
    ids = frame[0].str.strip() if fmt.comma else frame[0]
    return ids.to_numpy(dtype=str), frame[list(range(1, k + 1))].to_numpy(dtype=np.int64)


def _read_fields(body: str, fmt: _Format, **options) -> pd.DataFrame:
    """pandas' C reader on the rows, every field literal (no quoting, no "NA" guessing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)  # first row too long: the caller sees it
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)   # a mixed column: the caller sees it
        return pd.read_csv(io.BytesIO(body.encode()), sep="," if fmt.comma else r"\s+", header=None,
                           index_col=False, quoting=csv.QUOTE_NONE, keep_default_na=False,
                           skipinitialspace=fmt.comma, engine="c", **options)


def _raise_first_ragged_line(path: Path, body: str, first_line: int, fmt: _Format) -> None:
    expected = len(fmt.columns) + 1
    for row, line in enumerate(body.split("\n")):
        found = len(_split_fields(line, fmt.comma))
        if found == 0:
            raise _line_error(path, first_line + row, "blank line between rows; delete it")
        if found != expected:
            raise _line_error(path, first_line + row, f"expected {expected} fields (image id + "
                                                      f"{_describe_columns(fmt)}), found {found}")


def _raise_first_non_integer(path: Path, body: str, first_line: int, fmt: _Format,
                             suspects: list[int]) -> None:
    """Name the first bad image id or non-integer, given that every line has the right field count.

    `suspects` are the value columns pandas could not read as int64; they are read again as text.
    """
    tokens = _read_fields(body, fmt, names=list(range(len(fmt.columns) + 1)), usecols=[0, *suspects],
                          dtype=object)
    problems = []  # (row, column number, message) of each column's first problem
    ids = tokens[0].str.strip()
    bad = ~ids.str.fullmatch(IMAGE_ID_PATTERN).to_numpy(dtype=bool)
    if bad.any():
        row = int(np.argmax(bad))
        problems.append((row, 0, _malformed_id(ids.iloc[row])))
    for c in suspects:
        values = tokens[c].str.strip()
        # Every column holds at most 32-bit values, so 19 or more digits can only be an error.
        bad = ~values.str.fullmatch(r"[+-]?0*[0-9]{1,18}").to_numpy(dtype=bool)
        if bad.any():
            row = int(np.argmax(bad))
            shown = repr(values.iloc[row]) if values.iloc[row] else "empty"
            problems.append((row, c, f"{fmt.label(fmt.columns[c - 1])} is {shown}, expected {fmt.expected}"))
    if problems:
        row, _, message = min(problems)
        raise _line_error(path, first_line + row, message)


def _describe_columns(fmt: _Format) -> str:
    if len(fmt.columns) == 1:
        return fmt.columns[0]
    return f"{len(fmt.columns)} {'attributes' if fmt.noun == 'attribute' else 'values'}"


def _check_image_ids(rows: _Rows) -> None:
    malformed = ~pd.Series(rows.ids).str.fullmatch(IMAGE_ID_PATTERN).to_numpy(dtype=bool)
    if malformed.any():
        row = int(np.argmax(malformed))
        raise rows.error(row, _malformed_id(str(rows.ids[row])))
    repeated = pd.Index(rows.ids).duplicated()
    if repeated.any():
        row = int(np.argmax(repeated))
        first = int(np.argmax(rows.ids == rows.ids[row]))
        raise rows.error(row, f"image id {str(rows.ids[row])!r} appears again (first on line "
                              f"{rows.first_line + first}); each image must be listed once")


def _malformed_id(image_id: str) -> str:
    return f"malformed image id {_shorten(image_id)!r}; expected six digits and .jpg, like 000001.jpg"


def _check_values(rows: _Rows, fmt: _Format) -> None:
    bad = fmt.bad_values(rows.values)
    if bad.any():
        row, col = divmod(int(np.argmax(bad)), bad.shape[1])
        raise rows.error(row, f"{fmt.label(fmt.columns[col])} is {rows.values[row, col]}, "
                              f"expected {fmt.expected}")


def _typed_columns(rows: _Rows) -> dict[str, np.ndarray]:
    columns = _format(rows.kind, comma=False).columns
    if rows.kind == "attr":
        return {name: rows.values[:, i] == 1 for i, name in enumerate(columns)}
    dtype = np.int8 if rows.kind == "partition" else np.int32
    return {name: rows.values[:, i].astype(dtype) for i, name in enumerate(columns)}


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _list_some(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... {len(names) - limit} more' if len(names) > limit else ''}]"


# --------------------------------------------------------------------------------------------
# One table


@dataclass
class Annotations:
    """The joined table (one row per image, sorted by image id) and the optional files that were absent."""

    table: pd.DataFrame
    missing: list[str]


def build_table(files: AnnotationFiles) -> Annotations:
    """Parse every present file, check they list the same images, and join them into one typed table.

    Columns: image_id, partition, identity (if present), the 40 attributes as bool, then the bbox
    and landmark columns (if present).
    """
    for kind in REQUIRED_KINDS:
        if getattr(files, kind) is None:
            raise AnnotationError(_missing_required_message(kind, files.celeba_dir))
    parsed = {kind: _read_rows(getattr(files, kind), kind)
              for kind in ("partition", "identity", "attr", "bbox", "landmarks")
              if getattr(files, kind) is not None}
    order = {kind: np.argsort(rows.ids, kind="stable") for kind, rows in parsed.items()}
    ids = parsed["attr"].ids[order["attr"]]
    for kind, rows in parsed.items():
        if not np.array_equal(rows.ids[order[kind]], ids):
            _raise_different_images(parsed["attr"], rows)

    columns = {IMAGE_ID: pd.array(ids, dtype="str")}
    for kind, rows in parsed.items():
        sorted_rows = _Rows(rows.path, kind, rows.ids[order[kind]], rows.values[order[kind]], rows.first_line)
        columns.update(_typed_columns(sorted_rows))
    missing = [kind for kind in OPTIONAL_KINDS if kind not in parsed]
    return Annotations(table=pd.DataFrame(columns), missing=missing)


def load_annotations(celeba_dir: Path) -> Annotations:
    """Find the annotation files under `celeba_dir` and build the table from them."""
    return build_table(find_annotation_files(celeba_dir))


def _missing_required_message(kind: str, celeba_dir: Path | None) -> str:
    names = " or ".join(candidate_names(kind))
    if celeba_dir is None:
        return f"no {names} was given; it is required to build the table"
    return (f"no {names} in {celeba_dir} or its subfolders (searched {SEARCH_DEPTH} levels deep, e.g. "
            f"Anno/ and Eval/); it is required: put CelebA's annotation files in that folder")


def _raise_different_images(reference: _Rows, other: _Rows) -> None:
    only_reference = np.setdiff1d(reference.ids, other.ids)
    only_other = np.setdiff1d(other.ids, reference.ids)
    has, lacks, extra = ((reference, other, only_reference) if len(only_reference)
                         else (other, reference, only_other))
    example = str(extra[0])
    line = has.first_line + int(np.argmax(has.ids == example))
    total = len(only_reference) + len(only_other)
    raise AnnotationError(
        f"{has.path} line {line}: image {example!r} is not in {lacks.path} "
        f"({total} image(s) are in only one of the two files); every annotation file must list the "
        "same images, so use files from one CelebA download")


# --------------------------------------------------------------------------------------------
# Parquet


def write_table(table: pd.DataFrame, path: Path, missing: list[str]) -> None:
    """Write the table as Parquet (atomically), recording `missing` and the celeb version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    unknown = [kind for kind in missing if kind not in OPTIONAL_KINDS]
    if unknown:
        raise ValueError(f"missing must name optional files among {OPTIONAL_KINDS}, got {unknown}")
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    ours = json.dumps({"version": __version__, "missing": list(missing)}).encode()
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: ours})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written by `write_table` (by `celeb prepare`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `celeb prepare CELEBA_DIR --out {path.parent}` first")
    try:
        table = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path} is not a readable Parquet table ({error}); rerun `celeb prepare`") from None
    absent = [c for c in (IMAGE_ID, PARTITION, *ATTRIBUTE_NAMES) if c not in table.columns]
    if absent:
        raise ValueError(f"{path} is not a table written by `celeb prepare` (no column(s) {_list_some(absent)}); "
                         "rerun `celeb prepare`")
    return table


def table_missing(path: Path) -> list[str]:
    """The optional annotation files that were absent when the table at `path` was built."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `celeb prepare CELEBA_DIR --out {path.parent}` first")
    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} was not written by `celeb prepare` (no celeb metadata); rerun `celeb prepare`")
    return list(json.loads(metadata[METADATA_KEY])["missing"])


# --------------------------------------------------------------------------------------------
# Absent optional files: what they turn off

_COLUMN_SOURCES: dict[str, tuple[str, str]] = {  # column -> (what it is, in words; the file it comes from)
    IDENTITY: ("identities", "identity"),
    PARTITION: ("the official partition", "partition"),
    **{c: ("bounding boxes", "bbox") for c in BBOX_COLUMNS},
    **{c: ("landmarks", "landmarks") for c in LANDMARK_COLUMNS},
    **{c: ("attribute labels", "attr") for c in ATTRIBUTE_NAMES},
}


def require_columns(table: pd.DataFrame, columns: Iterable[str], feature: str) -> None:
    """Raise a `MissingColumnsError` saying which file to add when `feature` needs absent columns.

    `feature` names the thing that needs them, e.g. "the balanced split".
    """
    absent = [c for c in columns if c not in table.columns]
    if not absent:
        return
    unknown = [c for c in absent if c not in _COLUMN_SOURCES]
    if unknown:
        raise MissingColumnsError(f"{feature} needs column(s) {_list_some(unknown)}, which the table does not "
                                  "have; rerun `celeb prepare` with a current celeb")
    needs = list(dict.fromkeys(_COLUMN_SOURCES[c][0] for c in absent))
    files = list(dict.fromkeys(OFFICIAL_FILES[_COLUMN_SOURCES[c][1]] for c in absent))
    them = "it" if len(files) == 1 else "them"
    raise MissingColumnsError(f"{feature} needs {' and '.join(needs)}, but the table was built without "
                              f"{' and '.join(files)}; put {them} in CELEBA_DIR and rerun `celeb prepare`")


_TURNS_OFF: dict[str, str] = {
    "identity": "balanced identity-disjoint splits are off; `celeb split --strategy official` still works",
    "bbox": "no bounding-box/landmark columns; nothing in the pipeline needs them yet",
    "landmarks": "no bounding-box/landmark columns; nothing in the pipeline needs them yet",
}


def describe_missing(missing: Sequence[str]) -> str:
    """One line saying which optional files were absent and what that turns off ("" if none)."""
    by_effect: dict[str, list[str]] = {}
    for kind in missing:
        by_effect.setdefault(_TURNS_OFF[kind], []).append(OFFICIAL_FILES[kind])
    if not by_effect:
        return ""
    parts = [f"{' and '.join(files)} ({effect})" for effect, files in by_effect.items()]
    return "Built without " + "; without ".join(parts) + "."
