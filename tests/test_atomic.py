"""Atomic writes: the target is either the old file or the whole new one, never a half-written mix."""

import os
import stat

import pytest

from celeb.atomic import atomic_path, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("validation failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.txt"]


def test_crlf_text_and_the_usual_file_mode(tmp_path):
    target = tmp_path / "sub" / "list.txt"
    old_mask = os.umask(0o022)
    try:
        write_text_atomic(target, "a\nb\n", newline="\r\n")
    finally:
        os.umask(old_mask)
    assert target.read_bytes() == b"a\r\nb\r\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
