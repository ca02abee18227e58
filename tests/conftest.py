"""Fixtures shared by the test modules: prepared synthetic data, and one torch thread for tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: a second torch thread only adds contention on shared 2-core machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A data dir of 400 synthetic faces of 200 people, made as a user makes one: `celeb synth`,
    `celeb prepare` (64 and 32 px caches, with the true factors) and `celeb split --strategy balanced`."""
    from celeb.cli import main

    root = tmp_path_factory.mktemp("synthetic")
    # Many identities: the split keeps identities apart, and val faces must not all be strangers.
    assert main(["synth", str(root / "celeba"), "--n", "400", "--seed", "0", "--identities", "200",
                 "--workers", "1"]) == 0
    assert main(["prepare", str(root / "celeba"), "--out", str(root / "data"), "--size", "64", "--size", "32",
                 "--workers", "1"]) == 0
    assert main(["split", str(root / "data"), "--strategy", "balanced", "--seed", "0"]) == 0
    return root / "data"
