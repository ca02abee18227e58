"""Fused trials: P conditional VAEs of one architecture trained as one batched model.

After HFTA (Wang et al., MLSys 2021): small models of the same shape leave a GPU mostly idle one at
a time, so P of them are stacked (`torch.func.stack_module_state`) and run as one vmapped forward
and backward pass per step. Each trial stays a `celeb.training.loop.Run` of its own: its seed (its
initial weights, batch order, augmentation and reparameterisation noise), β and KL schedules,
learning rate, weight decay, clipping, lr schedule, AdamW state, history, tracker and checkpoints
(the same files `fit` writes, so a fused trial resumes alone and a lone one joins a group). Trained
fused, each trial's losses match the same trial trained alone by `fit` (fp32, within 1e-5;
tested): only the order of floating-point sums inside the batched convolutions differs.

`FusedGroup` is a set of runs that trains one epoch at a time; runs join and leave between epochs
and may be at different epochs (each its own data order, schedules and step count). Between
epochs each run's weights and AdamW moments live in its own model and optimizer; an epoch stacks
them, trains, and writes them back, then each run is evaluated, logged and checkpointed by the
loop's own `end_epoch`. The runs share one device copy of the data (`BatchLoader.sharing`).
Running a group under Ray Tune (a per-GPU actor that trials attach to) is jobs.fused.

What may differ between fused trials: everything in TrainConfig except `ARCHITECTURE_KEYS`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from celeb.config import TrainConfig, config_to_dict, flatten
from celeb.data.dataset import CelebData
from celeb.data.loader import BatchLoader
from celeb.models import VAEOutput, vae_loss
from celeb.seeds import noise_seed
from celeb.training.adapter import At, Task
from celeb.training.loop import (EpochCallback, NonFiniteLossError, Run, check_finite, end_epoch, epoch_metrics,
                                 make_loaders, start_run)
from celeb.training.tracking import NullTracker, Tracker

# Keys fused trials must share: they fix the stacked weights' and batches' shapes, the steps per
# epoch, the shared data and the process's device and precision.
ARCHITECTURE_KEYS = ("task", "cvae.width", "cvae.latent_dim", "cvae.conditions", "cvae.recon", "data.data_dir",
                     "data.split", "data.image_size", "data.crop", "batch_size", "eval_batch_size",
                     "max_train_batches", "device", "amp", "optimizer")
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults, which fit uses


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
    if any(c.compile is True for c in configs) or configs[0].amp == "fp16":
        raise ValueError("fused trials run without torch.compile and without fp16 (compile: auto or false; "
                         "amp: auto, bf16 or none)")


@dataclass
class EpochOutcome:
    """What one epoch of a fused group did for one run: its metrics and checkpoint, whether the run
    is done (its last epoch, or stopped early), or the error that ended it (it left the group)."""

    metrics: dict[str, Any] | None = None
    checkpoint: Path | None = None
    done: bool = False
    error: BaseException | None = None


class FusedGroup:
    """Runs of one architecture trained together, one epoch at a time (see the module docstring)."""

    def __init__(self, data: CelebData) -> None:
        self.data = data
        self.runs: dict[str, Run] = {}
        self._architecture: TrainConfig | None = None
        self._loaders: tuple[BatchLoader, BatchLoader] | None = None
        self._template: nn.Module | None = None

    def join(self, key: str, config: TrainConfig, checkpoint_root: Path, tracker: Tracker | None = None,
             state: Path | None = None) -> Run:
        """Add a run (resumed from the checkpoint dir `state` when given); a run of the same key is replaced."""
        check_fusable([config] if self._architecture is None else [self._architecture, config])
        run = start_run(config, self.data, tracker or NullTracker(), checkpoint_root, state, loaders=self._share)
        if len(run.opt.optimizer.param_groups) != 1:
            raise ValueError("fused training takes one optimizer parameter group per trial")
        self._architecture = self._architecture or config
        self._template = self._template or copy.deepcopy(run.opt.raw_model).to("meta")
        self.runs[key] = run
        return run

    def leave(self, key: str) -> Run | None:
        return self.runs.pop(key, None)

    def _share(self, config: TrainConfig, task: Task, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        """The run's loaders: views of the group's one copy of the data, with the run's seed and augmentation."""
        if self._loaders is None:
            self._loaders = make_loaders(config, self.data, task, device)
        train, val = self._loaders
        return train.sharing(seed=config.seed, augment_name=task.augment), val.sharing(seed=config.seed)

    def run_epoch(self, on_epoch_end: dict[str, EpochCallback] | None = None) -> dict[str, EpochOutcome]:
        """Train every run one epoch (each at its own epoch), then evaluate, log and checkpoint each;
        runs that are done or failed leave the group. `on_epoch_end[key]` is called as fit calls it."""
        keys, runs = list(self.runs), list(self.runs.values())
        outcomes = {key: EpochOutcome() for key in keys}
        trained, failures, seconds = self._train(keys, runs)
        for key, run, means in zip(keys, runs, trained):
            outcome = outcomes[key]
            if key in failures:
                outcome.error = failures[key]
                continue
            try:
                end_epoch(run, epoch_metrics(run, means, seconds), (on_epoch_end or {}).get(key))
            except Exception as error:  # noqa: BLE001 - one trial's failure must not end the others
                outcome.error = error
                continue
            outcome.metrics, outcome.checkpoint, outcome.done = run.loop.history[-1], run.loop.last_checkpoint, run.done
        for key, outcome in outcomes.items():
            if outcome.done or outcome.error is not None:
                self.leave(key)
        return outcomes

    def _train(self, keys: list[str], runs: list[Run]) -> tuple[list[dict[str, Tensor]], dict[str, NonFiniteLossError], float]:
        """One epoch of fused steps; each run's mean losses, the runs whose loss became non-finite, and the seconds."""
        runtime, steps = runs[0].runtime, runs[0].steps_per_epoch
        for r in runs:
            r.opt.raw_model.train()
        params, buffers = stack_module_state([r.opt.raw_model for r in runs])
        adam = AdamWState.of(runs, params)
        for r in runs:
            r.train_loader.set_epoch(r.loop.epoch)
            r.noise.manual_seed(noise_seed(r.config.seed, r.loop.epoch))
        sums = torch.zeros(3, len(runs), device=runtime.device)  # total, recon, kl
        unchecked: list[Tensor] = []
        failures: dict[str, NonFiniteLossError] = {}
        started = time.perf_counter()
        for i, batches in enumerate(zip(*(r.train_loader for r in runs))):
            if i == steps:
                break
            ats = [At(r.loop.epoch, i, steps, r.loop.step) for r in runs]
            with runtime.autocast():
                losses = fused_losses(self._template, params, buffers, runs, batches, ats)
            parts = torch.stack([torch.stack([loss.total, loss.recon, loss.kl]) for loss in losses], dim=1)
            for p in params.values():
                p.grad = None
            parts[0].sum().backward()
            clip_per_trial(params, [r.config.grad_clip for r in runs])
            adam.step(params, [r.opt.optimizer.param_groups[0] for r in runs])
            advance_schedules(runs)
            sums += parts.detach().float()
            unchecked.append(parts[0].detach().float())
            if len(unchecked) == runtime.check_every or i + 1 == steps:
                failures.update(find_non_finite(keys, runs, torch.stack(unchecked).cpu(), ats))
                unchecked = []
        seconds = time.perf_counter() - started
        write_back(runs, params, buffers, adam)
        means = (sums / steps).cpu()
        return [{"loss": m[0], "recon": m[1], "kl": m[2]} for m in means.unbind(1)], failures, seconds


def fused_fit(configs: list[TrainConfig], data: CelebData) -> list[list[dict[str, Any]]]:
    """Train every config as one fused group to its last epoch; return each trial's per-epoch metrics
    (as `fit`'s history). The first error of any trial is raised."""
    check_fusable(configs)
    group = FusedGroup(data)
    with contextlib.ExitStack() as stack:
        runs = [group.join(str(k), config, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celeb-ckpt-"))))
                for k, config in enumerate(configs)]
        while group.runs:
            for outcome in group.run_epoch().values():
                if outcome.error is not None:
                    raise outcome.error
        return [run.loop.history for run in runs]


def fused_losses(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], runs: list[Run],
                 batches: tuple[tuple[Tensor, Tensor], ...], ats: list[At]) -> list[Any]:
    """Every run's VAE loss on its own batch, from one vmapped forward pass."""
    x = torch.stack([b[0] for b in batches])
    conds = [r.task.cond(b[1]) for r, b in zip(runs, batches)]
    cond = torch.stack(conds) if conds[0] is not None else x.new_zeros((len(runs), x.shape[1], 0))
    # drawn as fit draws it, from each run's own generator, so the numbers are the same
    eps = torch.stack([r.task.noise(b[0], r.noise) for r, b in zip(runs, batches)])

    def one(p: dict[str, Tensor], b: dict[str, Tensor], xi: Tensor, ci: Tensor, ei: Tensor) -> VAEOutput:
        return functional_call(template, (p, b), (xi, ci if ci.shape[-1] else None), {"eps": ei})

    out = torch.vmap(one)(params, buffers, x, cond, eps)
    return [vae_loss(VAEOutput(*(t[k] for t in out)), x[k], r.task.kl_weight(at), r.task.capacity(at),
                     recon=r.config.cvae.recon) for k, (r, at) in enumerate(zip(runs, ats))]


def clip_per_trial(params: dict[str, Tensor], max_norms: list[float | None]) -> None:
    """clip_grad_norm_ for each trial's slice of the stacked gradients, with its own max norm."""
    if all(n is None for n in max_norms):
        return
    grads = [p.grad for p in params.values() if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (P,)
    limits = per_trial([math.inf if n is None else n for n in max_norms], norms)
    scale = torch.clamp(limits / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.ndim - 1))).to(g.dtype))


def per_trial(values: list[float], like: Tensor) -> Tensor:
    """(P,) float64 values on `like`'s device; copied from pinned memory without waiting for the GPU."""
    host = torch.tensor(values, dtype=torch.float64)
    if like.device.type == "cpu":
        return host
    return host.pin_memory().to(like.device, non_blocking=True)


def advance_schedules(runs: list[Run]) -> None:
    """Each run's lr schedule and step count one step on, as fit's optimizer step advances them."""
    with warnings.catch_warnings():
        # the fused step updates the weights, so the scheduler never sees its own optimizer step
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for r in runs:
            r.opt.scheduler.step()
            r.loop.step += 1


def find_non_finite(keys: list[str], runs: list[Run], losses: Tensor, ats: list[At]) -> dict[str, NonFiniteLossError]:
    """The runs whose loss was NaN or infinite in the recent steps (`losses`: steps x runs, the last at `ats`)."""
    bad: dict[str, NonFiniteLossError] = {}
    for k, (key, run, at) in enumerate(zip(keys, runs, ats)):
        try:
            check_finite(list(losses[:, k]), at, run.opt.optimizer, run.loop.last_checkpoint,
                         run.task.divergence_advice)
        except NonFiniteLossError as error:
            bad[key] = error
    return bad


@dataclass
class AdamWState:
    """AdamW over stacked weights, with a learning rate, weight decay and step count per trial (the
    P axis): the same update as torch.optim.AdamW's, written once for all trials."""

    exp_avg: dict[str, Tensor]
    exp_avg_sq: dict[str, Tensor]
    steps: Tensor  # (P,) float64: steps each trial has taken

    @classmethod
    def like(cls, params: dict[str, Tensor]) -> AdamWState:
        """Fresh state for stacked `params` (every trial at step 0)."""
        first = next(iter(params.values()))
        return cls({k: torch.zeros_like(p) for k, p in params.items()},
                   {k: torch.zeros_like(p) for k, p in params.items()},
                   torch.zeros(first.shape[0], dtype=torch.float64, device=first.device))

    @classmethod
    def of(cls, runs: list[Run], params: dict[str, Tensor]) -> AdamWState:
        """The runs' own torch AdamW states, stacked like `params` (zeros where a run has not stepped)."""
        state = cls.like(params)
        for k, run in enumerate(runs):
            named = dict(run.opt.raw_model.named_parameters())
            for name in params:
                saved = run.opt.optimizer.state.get(named[name], {})
                if saved:
                    state.exp_avg[name][k].copy_(saved["exp_avg"])
                    state.exp_avg_sq[name][k].copy_(saved["exp_avg_sq"])
                    state.steps[k] = float(saved["step"])
        return state

    @torch.no_grad()
    def step(self, params: dict[str, Tensor], groups: list[dict[str, Any]]) -> None:
        """One AdamW step for every trial, with each trial's current lr and weight decay (`groups`:
        each trial's optimizer param group)."""
        first = next(iter(params.values()))
        lrs = per_trial([g["lr"] for g in groups], first)
        wds = per_trial([g["weight_decay"] for g in groups], first)
        self.steps += 1
        beta1, beta2 = BETAS
        step_size = lrs / (1 - beta1 ** self.steps)
        correction2_sqrt = (1 - beta2 ** self.steps).sqrt()
        for name, p in params.items():
            if p.grad is None:
                continue
            shape = (-1, *([1] * (p.ndim - 1)))
            p.mul_((1 - lrs * wds).to(p.dtype).view(shape))
            self.exp_avg[name].lerp_(p.grad, 1 - beta1)
            self.exp_avg_sq[name].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (self.exp_avg_sq[name].sqrt() / correction2_sqrt.to(p.dtype).view(shape)).add_(EPS)
            p.sub_(step_size.to(p.dtype).view(shape) * self.exp_avg[name] / denom)


@torch.no_grad()
def write_back(runs: list[Run], params: dict[str, Tensor], buffers: dict[str, Tensor], adam: AdamWState) -> None:
    """Each run's slice of the stacked weights, buffers and AdamW moments into its own model and
    optimizer, in torch.optim.AdamW's own state format (what its checkpoint saves)."""
    for k, run in enumerate(runs):
        model, optimizer = run.opt.raw_model, run.opt.optimizer
        for name, stacked in buffers.items():
            model.get_buffer(name).copy_(stacked[k])
        for name, stacked in params.items():
            p = model.get_parameter(name)
            p.copy_(stacked[k])
            optimizer.state[p] = {"step": torch.tensor(float(adam.steps[k])),
                                  "exp_avg": adam.exp_avg[name][k].clone(),
                                  "exp_avg_sq": adam.exp_avg_sq[name][k].clone()}
