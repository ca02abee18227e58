"""How much GPU memory one training run of a config needs, estimated before it starts.

Ray's fractional GPUs only admit trials: four trials at `gpu: 0.25` share one GPU's memory with no
limit each, so a sweep whose packed trials do not fit runs out of memory mid-way. The estimate
builds the config's model on the meta device (no memory, no compute) and runs one training step's
forward pass there, counting every tensor autograd saves for the backward pass:

    weights + gradients + AdamW's two moments (4 bytes each per parameter)
    + the activations saved for backward at the config's batch size and precision
    + the CUDA context and allocator slack (CONTEXT_BYTES, SLACK)

It leaves out the data when it is placed on the device (the loader says its size) and the
evaluation pass (no saved activations, so smaller than training's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from celeb.config import LATENT_TASKS, TrainConfig
from celeb.models.build import build_model
from celeb.models.cvae import VAEOutput, vae_loss
from celeb.models.hvae import hvae_loss

CONTEXT_BYTES = 600 * 2**20  # a CUDA context and cuDNN/cuBLAS workspaces, per process
SLACK = 1.2  # the caching allocator's fragmentation and rounding


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of one training process's GPU memory, in bytes."""

    parameters: int
    activations: int

    @property
    def training_state(self) -> int:
        return 4 * 4 * self.parameters  # weights, gradients, exp_avg and exp_avg_sq in fp32

    @property
    def total(self) -> int:
        return int(CONTEXT_BYTES + SLACK * (self.training_state + self.activations))

    def describe(self) -> str:
        gb = 1e9
        return (f"{self.total / gb:.2f} GB: {self.parameters / 1e6:.1f}M parameters ({self.training_state / gb:.2f} GB "
                f"with gradients and AdamW), {self.activations / gb:.2f} GB of activations, "
                f"{CONTEXT_BYTES / gb:.1f} GB CUDA context, x{SLACK} allocator slack")


def estimate_training_memory(config: TrainConfig) -> MemoryEstimate:
    """The GPU memory one training process of `config` needs (see the module docstring)."""
    with torch.device("meta"):
        model = build_model(config, pretrained=False)
        x = torch.empty(config.batch_size, 3, config.data.image_size, config.data.image_size)
        cond = torch.empty(config.batch_size, len(config.cvae.conditions)) if config.task in LATENT_TASKS else None
    parameters = sum(p.numel() for p in model.parameters())
    saved = 0

    def count(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    if config.amp in ("auto", "bf16", "fp16"):  # auto is bf16 on a GPU, which is what is estimated
        # Autocast does not act on meta tensors; a half-precision model saves what autocast's matmuls
        # and convolutions save (it keeps a few ops, the norms, in fp32: SLACK covers them).
        half = torch.float16 if config.amp == "fp16" else torch.bfloat16
        model, x = model.to(half), x.to(half)
        cond = cond.to(half) if cond is not None else None
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        cond = cond if cond is not None and cond.shape[1] else None
        if config.task == "cvae":
            out = model(x, cond, eps=torch.empty(config.batch_size, config.cvae.latent_dim, device="meta", dtype=x.dtype))
            vae_loss(VAEOutput(*out), x, 1.0, recon=config.cvae.recon)
        elif config.task == "nvae":
            eps = [torch.empty(shape, device="meta", dtype=x.dtype) for shape in model.noise_shapes(config.batch_size)]
            hvae_loss(model(x, cond, eps=eps), x, 1.0, 0.0, config.cvae.recon, model.group_sizes(), balance=False)
        else:
            model(x)
    return MemoryEstimate(parameters=parameters, activations=saved)
