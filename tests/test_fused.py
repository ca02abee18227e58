"""Fused trials: P CVAEs of one architecture trained as one vmapped model give each trial the losses
it gets trained alone by `fit`, epoch by epoch (fp32, within 1e-5)."""

from __future__ import annotations

import pytest
import torch

from celeb.config import config_from_dict
from celeb.data.dataset import load_data
from celeb.training.fused import check_fusable, fused_fit
from celeb.training.loop import fit

BASE = {"task": "cvae", "device": "cpu", "epochs": 2, "batch_size": 16, "eval_batch_size": 64,
        "max_train_batches": 3, "num_recon": 0, "cvae.width": 4, "cvae.latent_dim": 4,
        "cvae.conditions": ["Male"], "cvae.panel_every": 0, "cvae.warmup_epochs": 1.0, "data.augment": "light"}
# Each trial its own seed, β, learning rate, weight decay, clipping and lr warm-up.
TRIALS = [{"seed": 1, "cvae.beta": 1.0, "lr": 1e-3},
          {"seed": 2, "cvae.beta": 4.0, "lr": 3e-3, "weight_decay": 1e-2, "grad_clip": 0.5},
          {"seed": 3, "cvae.beta": 0.5, "lr": 2e-3, "lr_warmup_epochs": 0.5, "cvae.capacity": 5.0,
           "cvae.capacity_epochs": 2}]


def test_a_fused_group_trains_each_trial_as_it_trains_alone(synthetic_data):
    torch.set_num_threads(1)
    data = load_data(synthetic_data)
    configs = [config_from_dict({**BASE, "data.data_dir": str(synthetic_data), **t}) for t in TRIALS]
    fused = fused_fit(configs, data)
    for config, history in zip(configs, fused):
        alone = fit(config, data).history
        assert len(history) == len(alone) == 2
        for mine, theirs in zip(history, alone):
            for key in ("train/loss", "train/recon", "train/kl", "val/loss", "val/recon", "val/kl", "val/mse"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-5), (config.seed, key)
    assert len({round(h[-1]["val/loss"], 3) for h in fused}) == 3  # three different trials, not one


def test_trials_of_different_shapes_cannot_be_fused(synthetic_data):
    a = config_from_dict({**BASE, "data.data_dir": str(synthetic_data)})
    b = config_from_dict({**BASE, "data.data_dir": str(synthetic_data), "cvae.width": 8})
    with pytest.raises(ValueError, match=r"must share 'cvae\.width'.*\[4, 8\]"):
        check_fusable([a, b])


def test_the_gpu_benchmark_runs_tiny_on_the_cpu():
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--quick"], cwd=repo, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^\| 8 \| 8 \| (eager, 1 trial|fused, 2 trials) \| ([\d,]+) \|", done.stdout, re.M)
    assert [what for what, _ in rows] == ["eager, 1 trial", "fused, 2 trials"]
    assert all(int(speed.replace(",", "")) > 0 for _, speed in rows)
