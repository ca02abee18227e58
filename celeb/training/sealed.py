"""Folders that are complete or rejected: a manifest written last, its check, the newest complete one.

A checkpoint is a folder of several files, and it can be cut short while it is written: a process
killed mid-write, a full disk, a copy to storage that stopped (Tune copies a trial's checkpoint
into the experiment folder file by file). Each file is written atomically by `save_checkpoint`, but
a folder cannot be renamed into place on every storage. So the writer *seals* the folder last: a
`manifest.json` with the size and SHA-256 of every file and a small `meta` (the epoch). A folder
is complete when its manifest reads and every file matches it; `newest_complete` takes the newest
complete folder among candidates (by the epoch in its manifest) and names every newer one it had
to pass over, and why.

Folders may be local or on any storage celeb.storage reaches; hashes are checked on local folders
(a remote folder's sizes are checked, and its hashes once it is downloaded).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeb import storage
from celeb.atomic import write_text_atomic

MANIFEST_FILE = "manifest.json"


class IncompleteFolderError(ValueError):
    """A folder whose manifest is missing, unreadable, or does not match its files."""


def seal(directory: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
    """Write directory/manifest.json (atomically, last) listing every other file's size and hash."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        if path.name.endswith(".tmp"):  # an atomic write's leftover, not part of the folder
            continue
        files[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = {"files": files, "meta": meta or {}}
    write_text_atomic(directory / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")


def check(directory: str | os.PathLike[str], hashes: bool = True) -> dict[str, Any]:
    """The manifest's `meta` when `directory` is complete; else IncompleteFolderError saying what is wrong.

    `hashes=False` checks only that every file is there with its size (cheap on remote storage).
    """
    text = storage.read_text(storage.join(directory, MANIFEST_FILE))
    if text is None:
        raise IncompleteFolderError(f"it has no {MANIFEST_FILE} (the write stopped before the folder was sealed)")
    try:
        manifest = json.loads(text)
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise IncompleteFolderError(f"its {MANIFEST_FILE} is unreadable (cut short)") from None
    local = not storage.is_uri(directory)
    for name, expected in files.items():
        path = storage.join(directory, name)
        size = storage.file_size(path)
        if size is None:
            raise IncompleteFolderError(f"{name} is missing")
        if size != expected["bytes"]:
            raise IncompleteFolderError(f"{name} has {size:,} bytes, its manifest says {expected['bytes']:,} (cut short)")
        if hashes and local and sha256_of(Path(path)) != expected["sha256"]:
            raise IncompleteFolderError(f"{name} does not match its SHA-256 in the manifest (damaged)")
    return dict(manifest.get("meta") or {})


@dataclass
class Choice:
    """The newest complete folder among candidates (None: none is complete), and the newer ones passed over.

    `path` is where to read it: the candidate itself, or its local copy when it was fetched.
    """

    path: str | None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (folder, why), newest first

    def describe(self, what: str = "checkpoint") -> str | None:
        """A sentence naming each incomplete folder and the one used instead (None when none was passed over)."""
        if not self.rejected:
            return None
        bad = "; ".join(f"{what} {path} is incomplete: {why}" for path, why in self.rejected)
        if self.path is None:
            return f"{bad}; no complete {what} is left, so the run starts from the beginning"
        epoch = f" (epoch {self.meta['epoch']})" if "epoch" in self.meta else ""
        return f"{bad}; falling back to the previous complete {what} {self.source}{epoch}"


def newest_complete(candidates: Iterable[str | os.PathLike[str]],
                    fetch: Callable[[str], str] | None = None) -> Choice:
    """The complete folder with the highest `meta["epoch"]` among `candidates`, and every newer
    candidate that was incomplete (one whose manifest cannot be read counts as the newest).

    `fetch(path) -> local copy` downloads a remote candidate; its hashes are then checked on the copy.
    """
    unique = list({str(c).rstrip("/"): None for c in candidates})
    choice = Choice(path=None)
    for path in sorted(unique, key=lambda p: (_epoch_hint(p), p.rsplit("/", 1)[-1]), reverse=True):
        try:
            if fetch is None:
                local, meta = path, check(path)
            else:
                check(path, hashes=False)  # sizes first: no download of a folder that is cut short
                local = fetch(path)
                meta = check(local)
        except IncompleteFolderError as error:
            choice.rejected.append((path, str(error)))
            continue
        choice.path, choice.source, choice.meta = local, path, meta
        return choice
    return choice


def _epoch_hint(path: str) -> float:
    """The epoch a folder's manifest claims, for ordering (infinite when it cannot be read)."""
    try:
        return float(json.loads(storage.read_text(storage.join(path, MANIFEST_FILE)) or "")["meta"]["epoch"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return math.inf


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
