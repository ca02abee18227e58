"""Fused trials: P CVAEs of one architecture trained as one vmapped model give each trial the losses
it gets trained alone by `fit`, epoch by epoch (fp32, within 1e-5)."""

from __future__ import annotations

import math

import pytest
import torch

from celeb.config import config_from_dict, config_to_dict
from celeb.data.dataset import load_data
from celeb.training.fused import FusedGroup, check_fusable, fused_fit
from celeb.training.loop import NonFiniteLossError, fit

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
        assert len(history) == 2
        assert_same_losses(history, fit(config, data).history, config.seed)
    assert len({round(h[-1]["val/loss"], 3) for h in fused}) == 3  # three different trials, not one


def assert_same_losses(history: list[dict], alone: list[dict], who: object) -> None:
    assert len(history) == len(alone)
    for mine, theirs in zip(history, alone):
        for key in ("train/loss", "train/recon", "train/kl", "val/loss", "val/recon", "val/kl", "val/mse"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-5), (who, mine["epoch"], key)


def test_runs_join_and_leave_a_group_between_epochs_and_resume_alone(synthetic_data, tmp_path):
    """A joins, B leaves after one epoch (as a stopped trial does), C joins while A is at its second
    epoch: A and C train as they do alone; B's checkpoint, resumed by fit alone, ends as B alone does."""
    torch.set_num_threads(1)
    data = load_data(synthetic_data)
    a, b, c = (config_from_dict({**BASE, "data.data_dir": str(synthetic_data), **t}) for t in TRIALS)
    group = FusedGroup(data)
    runs = {key: group.join(key, config, tmp_path / key) for key, config in (("a", a), ("b", b))}
    first = group.run_epoch()
    assert set(first) == {"a", "b"} and not first["a"].done and first["a"].error is None
    group.leave("b")
    runs["c"] = group.join("c", c, tmp_path / "c")
    second = group.run_epoch()
    assert second["a"].done and not second["c"].done and set(group.runs) == {"c"}  # a is done and left
    group.run_epoch()
    assert not group.runs

    assert [row["epoch"] for row in runs["c"].loop.history] == [1, 2]
    assert_same_losses(runs["a"].loop.history, fit(a, data).history, "a")
    assert_same_losses(runs["c"].loop.history, fit(c, data).history, "c")
    resumed = fit(b, data, state=first["b"].checkpoint).history
    assert_same_losses(resumed, fit(b, data).history, "b resumed")


def test_a_run_whose_loss_diverges_leaves_the_group_alone(synthetic_data, tmp_path):
    torch.set_num_threads(1)
    data = load_data(synthetic_data)
    good, bad = (config_from_dict({**BASE, "data.data_dir": str(synthetic_data), **t}) for t in TRIALS[:2])
    bad = config_from_dict({**config_to_dict(bad), "lr": 1e30})
    group = FusedGroup(data)
    group.join("good", good, tmp_path / "good")
    group.join("bad", bad, tmp_path / "bad")
    outcome = group.run_epoch()
    assert isinstance(outcome["bad"].error, NonFiniteLossError) and set(group.runs) == {"good"}
    assert outcome["good"].error is None and math.isfinite(outcome["good"].metrics["val/loss"])


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
    rows = re.findall(r"^\| 8 \| 8 \| (eager, 1 trial|packed, 2 processes|fused, 2 trials) \| ([\d,]+) \|",
                      done.stdout, re.M)
    assert [what for what, _ in rows] == ["eager, 1 trial", "packed, 2 processes", "fused, 2 trials"]
    assert all(int(speed.replace(",", "")) > 0 for _, speed in rows)
    assert float(re.search(r"^inception_v3, 299 px, batch 2: ([\d,.]+) images/s", done.stdout, re.M)[1]) > 0
