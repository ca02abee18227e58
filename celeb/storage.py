"""Where a sweep keeps its files: a local folder or a URI (s3://, gs://, ...), through pyarrow's file systems.

A sweep's experiment folder and its trial folders may live on the local disk, a shared mount or
an object store. Everything that reads them from outside the trial's own process (the W&B record
keeper, the resume of a trial, the ranking, `celeb review`) goes through these few functions, so the
same code serves every kind of storage. A scheme pyarrow does not know (e.g. memory://) is reached
through fsspec, which torch installs. Local writes are atomic (celeb.atomic); an object store's writes
are atomic by nature (an object appears whole or not at all).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

from celeb.atomic import write_bytes_atomic


def is_uri(path: str | os.PathLike[str]) -> bool:
    return "://" in str(path)


def location(path: str | os.PathLike[str]) -> str | Path:
    """A URI as the string it is, a local path as a Path (`Path("s3://b/x")` would lose a slash)."""
    return str(path) if is_uri(path) else Path(path)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """`base`/`parts`, for local paths and URIs alike."""
    return "/".join([str(base).rstrip("/"), *parts])


def parent(path: str | os.PathLike[str]) -> str:
    """The folder holding `path` (a URI's bucket is its own parent)."""
    if not is_uri(path):
        return str(Path(path).parent)
    scheme, inner = str(path).split("://", 1)
    above = PurePosixPath(inner.rstrip("/") or "/").parent
    return f"{scheme}://{above}" if str(above) != "." else str(path)


def name(path: str | os.PathLike[str]) -> str:
    """The last part of `path`: a file's or a folder's name."""
    if not is_uri(path):
        return Path(path).name
    return PurePosixPath(str(path).split("://", 1)[1]).name


def canonical(path: str | os.PathLike[str]) -> str:
    """One spelling per place, to tell whether two paths are the same folder: a local path
    absolute with its links resolved, a URI without a trailing slash."""
    return str(path).rstrip("/") if is_uri(path) else str(Path(path).resolve())


def resolve(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The file system holding `path` and the path within it."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    try:
        return pafs.FileSystem.from_uri(str(path))
    except pa.ArrowInvalid as refusal:  # e.g. a scheme pyarrow does not know
        return fsspec_filesystem(str(path), refusal)


def fsspec_filesystem(uri: str, refusal: Exception) -> tuple[pafs.FileSystem, str]:
    """The fsspec file system of `uri` (memory://, or one an installed fsspec plugin reads) as a pyarrow one."""
    import fsspec

    try:
        fs, inner = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as error:
        raise ValueError(f"{uri}: pyarrow cannot read it ({refusal}), nor can fsspec ({error})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def file_type(path: str | os.PathLike[str]) -> pafs.FileType:
    fs, inner = resolve(path)
    return fs.get_file_info(inner).type


def exists(path: str | os.PathLike[str]) -> bool:
    return file_type(path) != pafs.FileType.NotFound


def is_dir(path: str | os.PathLike[str]) -> bool:
    return file_type(path) == pafs.FileType.Directory


def read_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """The file's bytes, or None when there is no such file."""
    if not is_uri(path):
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
    fs, inner = resolve(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as f:
        return f.read()


def read_text(path: str | os.PathLike[str]) -> str | None:
    data = read_bytes(path)
    return data.decode("utf-8") if data is not None else None


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file: atomically on a local disk (temporary name, then rename)."""
    if not is_uri(path):
        write_bytes_atomic(path, data)
        return
    fs, inner = resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def list_names(path: str | os.PathLike[str], dirs: bool | None = None) -> list[str]:
    """Names directly inside the folder `path` (sorted; [] when it does not exist).

    `dirs`: True for sub-folders only, False for files only, None for both.
    """
    fs, inner = resolve(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    except (NotADirectoryError, FileNotFoundError):
        return []
    wanted = {True: {pafs.FileType.Directory}, False: {pafs.FileType.File},
              None: {pafs.FileType.Directory, pafs.FileType.File}}[dirs]
    return sorted(info.base_name for info in infos if info.type in wanted)


def folders_with(path: str | os.PathLike[str], names: Collection[str]) -> list[str]:
    """The folders under (or equal to) `path` that hold a file of every one of `names`, in tree order
    ([] when `path` does not exist). One recursive listing: on an object store, one request per
    thousand files rather than one per folder."""
    fs, inner = resolve(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    except (NotADirectoryError, FileNotFoundError):
        return []
    held: dict[str, set[str]] = {}
    for info in infos:
        if info.type == pafs.FileType.File and info.base_name in names:
            folder = info.path[len(inner):].strip("/").rpartition("/")[0]
            held.setdefault(folder, set()).add(info.base_name)
    found = sorted((folder for folder, have in held.items() if have >= set(names)), key=lambda f: f.split("/"))
    return [join(path, folder) if folder else str(path) for folder in found]


def file_size(path: str | os.PathLike[str]) -> int | None:
    fs, inner = resolve(path)
    info = fs.get_file_info(inner)
    return info.size if info.type == pafs.FileType.File else None


def copy_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy the folder `source` to `target` (any two file systems)."""
    source_fs, source_inner = resolve(source)
    target_fs, target_inner = resolve(target)
    target_fs.create_dir(target_inner, recursive=True)
    pafs.copy_files(source_inner, target_inner, source_filesystem=source_fs, destination_filesystem=target_fs)


def delete_dir(path: str | os.PathLike[str]) -> None:
    """Delete the folder `path` and everything in it (nothing when it does not exist)."""
    fs, inner = resolve(path)
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        fs.delete_dir(inner)
