"""The GPU memory estimate of a training run, and the sweep check that packed trials fit a GPU."""

from __future__ import annotations

import pytest
import torch

from celeb.config import config_from_dict
from celeb.models import build_model, vae_loss
from celeb.models.memory import estimate_training_memory
from celeb.sweep.spec import SweepSpecError, describe, load_spec


def saved_bytes_of_a_real_step(config) -> int:
    """Bytes autograd saves for backward in one real fp32 CPU training step of `config`: the oracle."""
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.rand(config.batch_size, 3, config.data.image_size, config.data.image_size)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        vae_loss(model(x, None), x, 1.0)
    return sum(saved)


def test_the_estimate_counts_what_a_real_step_saves_and_every_parameter():
    config = config_from_dict({"cvae.width": 8, "cvae.latent_dim": 16, "batch_size": 4, "amp": "none"})
    estimate = estimate_training_memory(config)
    assert estimate.activations == saved_bytes_of_a_real_step(config)
    assert estimate.parameters == sum(p.numel() for p in build_model(config).parameters())


def test_the_estimate_grows_with_batch_width_and_image_size():
    def total(**keys):
        return estimate_training_memory(config_from_dict({"cvae.width": 8, "batch_size": 8, **keys})).total

    assert total(batch_size=32) > total() and total(**{"cvae.width": 32}) > total()
    assert total(**{"data.image_size": 128}) > total()
    half = estimate_training_memory(config_from_dict({"batch_size": 64, "amp": "bf16"})).activations
    full = estimate_training_memory(config_from_dict({"batch_size": 64, "amp": "none"})).activations
    assert half < full  # bf16 autocast saves 2-byte activations where it can


SPEC = """\
name: packed
task: cvae
data_dir: data
metric: val/mse
mode: min
num_trials: 4
resources: {{cpu: 1, gpu: 0.25, gpu_memory_gb: {memory}}}
fixed: {{epochs: 2}}
search:
  batch_size: {{type: choice, values: [64, 1024]}}
  cvae.width: {{type: int, low: 16, high: 64}}
"""


def test_packed_trials_that_would_not_fit_their_gpu_are_refused_with_the_estimate(tmp_path):
    path = tmp_path / "packed.yaml"
    path.write_text(SPEC.format(memory=4))
    with pytest.raises(SweepSpecError, match=r"line 7: resources\.gpu 0\.25 packs 4 trials per GPU, which would "
                                             r"need [\d.]+ GB of its 4 GB: the largest trial .* activations"):
        load_spec(path)
    path.write_text(SPEC.format(memory=400))
    assert "packing: 4 trials per GPU as processes, the largest ~" in describe(load_spec(path))


FUSED = """\
name: fused
task: cvae
data_dir: data
metric: val/mse
mode: min
num_trials: 4
resources: {{cpu: 2, gpu: {gpu}, fuse: 8, gpu_memory_gb: {memory}}}
fixed: {{epochs: 2, batch_size: 256}}
search:
  {searched}: {{type: {kind}, low: {low}, high: {high}}}
"""


def fused_spec(tmp_path, gpu=1, memory=400, searched="cvae.beta", kind="loguniform", low=0.1, high=10):
    path = tmp_path / "fused.yaml"
    path.write_text(FUSED.format(gpu=gpu, memory=memory, searched=searched, kind=kind, low=low, high=high))
    return path


def test_fused_trials_share_one_cuda_context_and_must_fit_together(tmp_path):
    with pytest.raises(SweepSpecError, match=r"resources\.fuse 8 fuses 8 trials per GPU, which would need "):
        load_spec(fused_spec(tmp_path, memory=2))
    spec = load_spec(fused_spec(tmp_path))
    assert "packing: 8 trials per GPU fused as one model" in describe(spec)


def test_fusion_refuses_a_searched_architecture_and_fractional_gpus(tmp_path):
    with pytest.raises(SweepSpecError, match=r"'cvae\.width' cannot be searched with resources\.fuse > 1"):
        load_spec(fused_spec(tmp_path, searched="cvae.width", kind="int", low=8, high=32))
    with pytest.raises(SweepSpecError, match=r"a fused group takes whole GPUs"):
        load_spec(fused_spec(tmp_path, gpu=0.5))
