"""The benchmarks' data: synthetic faces made as a user makes a data dir (`celeb synth`, `celeb
prepare`, `celeb split --strategy balanced`), under a root folder, reused when already there."""

from __future__ import annotations

from pathlib import Path

from celeb.cli import main as celeb
from celeb.data.dataset import cache_dir


def make_data(root: Path, n: int, seed: int = 0) -> Path:
    """A prepared data dir of `n` synthetic faces (n/4 identities) with its 64-px cache and balanced split."""
    faces, data = root / f"celeba_n{n}", root / f"data_n{n}"
    if (cache_dir(data, 64, 148) / "images.npy").exists() and (data / "splits" / "balanced").is_dir():
        return data
    for argv in (["synth", str(faces), "--n", str(n), "--seed", str(seed), "--identities", str(max(1, n // 4))],
                 ["prepare", str(faces), "--out", str(data), "--size", "64"],
                 ["split", str(data), "--strategy", "balanced", "--seed", str(seed)]):
        if celeb(argv) != 0:
            raise RuntimeError(f"`celeb {' '.join(argv)}` failed")
    return data
