"""Fused trials: P conditional VAEs of one architecture trained as one batched model.

After HFTA (Wang et al., MLSys 2021): small models of the same shape leave a GPU mostly idle one at
a time, so P of them are stacked (`torch.func.stack_module_state`) and run as one vmapped forward
and backward pass per step. Each trial keeps everything that makes it its own trial: its seed (its
initial weights, batch order, augmentation and reparameterisation noise), its β and KL schedules,
its learning rate, weight decay and lr schedule, its AdamW state and its history. Trained fused,
each trial's losses match the same trial trained alone by `celeb.training.loop.fit` (fp32, within
1e-5; tested): only the order of floating-point sums inside the batched convolutions differs.

What may differ between fused trials: everything in TrainConfig except the keys in
`ARCHITECTURE_KEYS`, which fix the shapes of the stacked weights and batches.

This module is the fused step and loop; running a fused group as Tune trials (a per-GPU actor
that trials attach to and leave) is not built yet.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from celeb.config import TrainConfig, config_to_dict, flatten
from celeb.data.dataset import CelebData
from celeb.data.loader import BatchLoader
from celeb.models import VAEOutput, vae_loss
from celeb.seeds import noise_seed, seed_everything
from celeb.training.adapter import At
from celeb.training.cvae_task import CVAETask
from celeb.training.loop import make_loaders
from celeb.training.runtime import Runtime, lr_lambda

# Keys fused trials must share: they fix the stacked weights' and batches' shapes, and the loop.
ARCHITECTURE_KEYS = ("task", "cvae.width", "cvae.latent_dim", "cvae.conditions", "data.data_dir", "data.split",
                     "data.image_size", "data.crop", "batch_size", "eval_batch_size", "epochs",
                     "max_train_batches", "eval_every", "device", "amp", "compile", "optimizer")
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults, which fit uses


@dataclass
class Member:
    """One trial of a fused group: its config, task adapter, loaders, noise and history."""

    config: TrainConfig
    task: CVAETask
    model: nn.Module  # its own module, loaded with its slice of the stacked weights to evaluate
    train_loader: BatchLoader
    val_loader: BatchLoader
    noise: torch.Generator
    history: list[dict[str, Any]] = field(default_factory=list)


def check_fusable(configs: list[TrainConfig]) -> None:
    """Raise ValueError naming the first key that differs where fused trials must agree."""
    if not configs:
        raise ValueError("a fused group needs at least one trial")
    flat = [flatten(config_to_dict(c)) for c in configs]
    for key in ARCHITECTURE_KEYS:
        values = [f[key] for f in flat]
        if any(v != values[0] for v in values):
            raise ValueError(f"fused trials must share '{key}' (it fixes the stacked shapes); got {values}")
    if configs[0].task != "cvae":
        raise ValueError(f"fused training supports the cvae task, not {configs[0].task!r}")
    if configs[0].compile or configs[0].amp not in ("auto", "none"):
        raise ValueError("fused training runs in full precision without torch.compile (amp: none, compile: false)")


def fused_fit(configs: list[TrainConfig], data: CelebData) -> list[list[dict[str, Any]]]:
    """Train every config as one fused group; return each trial's per-epoch metrics (as `fit`'s history)."""
    check_fusable(configs)
    runtime = Runtime.of(configs[0])
    members = [make_member(config, data, runtime) for config in configs]
    params, buffers = stack_module_state([m.model for m in members])
    template = copy.deepcopy(members[0].model).to("meta")
    state = AdamWState.like(params)
    steps_per_epoch = min(len(members[0].train_loader), configs[0].max_train_batches or len(members[0].train_loader))
    schedules = [lr_lambda(m.config, steps_per_epoch) for m in members]
    step = 0
    for epoch in range(configs[0].epochs):
        sums = [dict(loss=0.0, recon=0.0, kl=0.0) for _ in members]
        for m in members:
            m.train_loader.set_epoch(epoch)
            m.noise.manual_seed(noise_seed(m.config.seed, epoch))
        for i, batches in enumerate(zip(*(m.train_loader for m in members))):
            if i == steps_per_epoch:
                break
            at = At(epoch, i, steps_per_epoch, step)
            losses = fused_losses(template, params, buffers, members, batches, at)
            for p in params.values():
                p.grad = None
            torch.stack([loss.total for loss in losses]).sum().backward()
            clip_per_trial(params, [m.config.grad_clip for m in members])
            lrs = torch.tensor([m.config.lr * schedule(step) for m, schedule in zip(members, schedules)])
            state.step(params, lrs, torch.tensor([m.config.weight_decay for m in members]))
            step += 1
            for s, loss in zip(sums, losses):
                for name, value in (("loss", loss.total), ("recon", loss.recon), ("kl", loss.kl)):
                    s[name] += float(value.detach())
        for index, (m, s) in enumerate(zip(members, sums)):
            metrics = {"epoch": epoch + 1, "step": step, **{f"train/{k}": v / steps_per_epoch for k, v in s.items()}}
            if (epoch + 1) % m.config.eval_every == 0 or epoch + 1 == m.config.epochs:
                metrics.update(evaluate_member(m, params, buffers, index, At(epoch, 0, steps_per_epoch, step),
                                               final=epoch + 1 == m.config.epochs))
            m.history.append(metrics)
    return [m.history for m in members]


def make_member(config: TrainConfig, data: CelebData, runtime: Runtime) -> Member:
    """A trial set up exactly as `fit` sets it up (same RNG draws in the same order)."""
    seed_everything(config.seed)
    task = CVAETask(config, data, runtime.device)
    train, val = make_loaders(config, data, task, runtime.device)
    model = task.build_model().to(runtime.device)
    return Member(config, task, model, train, val, torch.Generator(device=runtime.device))


def fused_losses(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], members: list[Member],
                 batches: tuple[tuple[Tensor, Tensor], ...], at: At) -> list[Any]:
    """Every trial's VAE loss on its own batch, from one vmapped forward pass."""
    x = torch.stack([b[0] for b in batches])
    conds = [m.task.cond(b[1]) for m, b in zip(members, batches)]
    cond = torch.stack(conds) if conds[0] is not None else x.new_zeros((len(members), x.shape[1], 0))
    latent = members[0].config.cvae.latent_dim
    # drawn as ConditionalVAE.forward draws it from each trial's generator, so the numbers are the same
    eps = torch.stack([torch.randn((x.shape[1], latent), generator=m.noise, device=m.noise.device).to(x)
                       for m in members])

    def one(p: dict[str, Tensor], b: dict[str, Tensor], xi: Tensor, ci: Tensor, ei: Tensor) -> VAEOutput:
        return functional_call(template, (p, b), (xi, ci if ci.shape[-1] else None), {"eps": ei})

    out = torch.vmap(one)(params, buffers, x, cond, eps)
    return [vae_loss(VAEOutput(*(t[k] for t in out)), x[k], m.task.kl_weight(at), m.task.capacity(at),
                     recon=m.config.cvae.recon) for k, m in enumerate(members)]


def clip_per_trial(params: dict[str, Tensor], max_norms: list[float | None]) -> None:
    """clip_grad_norm_ for each trial's slice of the stacked gradients, with its own max norm."""
    if all(n is None for n in max_norms):
        return
    grads = [p.grad for p in params.values() if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (P,)
    limits = torch.tensor([math.inf if n is None else n for n in max_norms])
    scale = torch.clamp(limits / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))


@dataclass
class AdamWState:
    """AdamW over stacked weights, with a learning rate and weight decay per trial (the P axis):
    the same update as torch.optim.AdamW's, written once for all trials."""

    exp_avg: dict[str, Tensor]
    exp_avg_sq: dict[str, Tensor]
    steps: int = 0

    @classmethod
    def like(cls, params: dict[str, Tensor]) -> AdamWState:
        return cls({k: torch.zeros_like(p) for k, p in params.items()},
                   {k: torch.zeros_like(p) for k, p in params.items()})

    @torch.no_grad()
    def step(self, params: dict[str, Tensor], lrs: Tensor, weight_decays: Tensor) -> None:
        self.steps += 1
        beta1, beta2 = BETAS
        correction1, correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        for name, p in params.items():
            if p.grad is None:
                continue
            shape = (-1, *([1] * (p.ndim - 1)))
            lr, wd = lrs.to(p).view(shape), weight_decays.to(p).view(shape)
            p.mul_(1 - lr * wd)
            self.exp_avg[name].lerp_(p.grad, 1 - beta1)
            self.exp_avg_sq[name].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (self.exp_avg_sq[name].sqrt() / math.sqrt(correction2)).add_(EPS)
            p.sub_(lr / correction1 * self.exp_avg[name] / denom)


@torch.no_grad()
def evaluate_member(member: Member, params: dict[str, Tensor], buffers: dict[str, Tensor], index: int, at: At,
                    final: bool) -> dict[str, Any]:
    """The trial's val metrics from its own module loaded with its slice of the stacked weights."""
    for name, stacked in {**params, **buffers}.items():
        target = member.model.get_parameter(name) if name in params else member.model.get_buffer(name)
        target.copy_(stacked[index])
    member.model.eval()
    return member.task.evaluate(member.model, member.val_loader, at, final).metrics
