"""Sending finished segments to W&B's server with `wandb sync`, after a quick check that it is reachable."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from celeb import storage
from celeb.records.ledger import WANDB_DIR, Segment

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0


def endpoint(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("WANDB_BASE_URL", "").strip() or DEFAULT_BASE_URL


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to `url`'s host opens within `timeout`; else why not."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return None
    except OSError as error:
        return f"{url} is unreachable ({error.strerror or error})"


def wandb_command() -> list[str]:
    beside = Path(sys.executable).parent / "wandb"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "wandb"]


def upload_segment(folder: str, segment: Segment, timeout_s: float) -> str | None:
    """`wandb sync` one finished segment; None on success, else why it failed."""
    with contextlib.ExitStack() as stack:
        path = storage.join(folder, WANDB_DIR, segment.dir)
        if storage.is_uri(folder):
            local = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celeb-upload-"))) / segment.dir
            storage.copy_dir(path, local)
            path = str(local)
        try:
            done = subprocess.run([*wandb_command(), "sync", path], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"`wandb sync` took more than {timeout_s:.0f} s"
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return f"`wandb sync` failed: {lines[-1] if lines else done.returncode}"
        return None
