"""The compiled step (`compile: true`; `auto` turns it on for CUDA only) trains the same run as the
eager one: the noise is drawn outside the model, every training batch has one static shape and the
short last val batch gets its own graph."""

from __future__ import annotations

import pytest
import torch

from celeb.config import config_from_dict
from celeb.data.dataset import load_data
from celeb.training.loop import fit
from celeb.training.runtime import Runtime, resolve_compile


def test_compile_auto_is_on_for_cuda_only_and_graphs_there():
    assert resolve_compile("auto", torch.device("cpu")) is None
    assert resolve_compile("auto", torch.device("cuda")) == "reduce-overhead"
    assert resolve_compile(True, torch.device("cpu")) == "default"
    assert resolve_compile(False, torch.device("cuda")) is None
    assert Runtime.of(config_from_dict({"device": "cpu"})).compile_mode is None


@pytest.mark.slow
def test_a_compiled_run_has_the_eager_runs_losses(synthetic_data):
    torch.set_num_threads(2)
    data = load_data(synthetic_data)
    assert len(data.indices("val")) % 48, "the val split must end in a short batch for this test"
    base = {"task": "cvae", "device": "cpu", "epochs": 2, "batch_size": 16, "eval_batch_size": 48,
            "max_train_batches": 3, "num_recon": 0, "cvae.width": 4, "cvae.latent_dim": 4,
            "cvae.conditions": ["Male"], "cvae.panel_every": 0, "data.data_dir": str(synthetic_data), "seed": 3}
    eager = fit(config_from_dict({**base, "compile": False}), data).history
    compiled = fit(config_from_dict({**base, "compile": True}), data).history
    for mine, theirs in zip(compiled, eager):
        for key in ("train/loss", "train/kl", "val/loss", "val/recon", "val/kl", "val/mse"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-4), (mine["epoch"], key)
