"""How a run uses the machine: its device, its precision and memory format, and its optimizer and
learning-rate schedule (one optimizer step, with AMP scaling and clipping, in one place)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from celeb.config import TrainConfig
from celeb.training.adapter import Task


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; a cuda device without CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"config key 'device': {error}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device' is {name!r} but CUDA is not available here; use device: auto or cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: "auto" is bf16 on cuda and full precision on the CPU."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]


def resolve_compile(compile: bool | str, device: torch.device) -> str | None:
    """torch.compile's mode, or None for eager: "auto" compiles on cuda only. On cuda the mode is
    reduce-overhead, which replays each step as a CUDA graph (a 64-px CVAE step is bound by kernel
    launches, not by compute); elsewhere the default mode."""
    if compile == "auto":
        compile = device.type == "cuda"
    if not compile:
        return None
    return "reduce-overhead" if device.type == "cuda" else "default"


@dataclass(frozen=True)
class Runtime:
    """The device a run trains on, its autocast dtype (None: full precision) and memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    compile_mode: str | None = None  # None: eager; else torch.compile's mode

    @classmethod
    def of(cls, config: TrainConfig) -> Runtime:
        device = resolve_device(config.device)
        channels_last = device.type == "cuda" if config.channels_last == "auto" else bool(config.channels_last)
        return cls(device, resolve_amp(config.amp, device), channels_last, resolve_compile(config.compile, device))

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    @property
    def check_every(self) -> int:
        """Training steps between NaN checks: each check waits for the GPU, so it is batched there."""
        return 1 if self.device.type == "cpu" else 16


def lr_lambda(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """lr multiplier per step: linear warm-up, then cosine decay to 0 (or constant)."""
    warmup = round(config.lr_warmup_epochs * steps_per_epoch)
    total = config.epochs * steps_per_epoch

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "none":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


@dataclass
class Optimization:
    """The model being trained (raw and, with `compile`, compiled), its optimizer, lr schedule and
    AMP gradient scaler: everything a checkpoint saves besides the loop's own state."""

    raw_model: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    grad_clip: float | None
    graphed: bool = False  # the model replays CUDA graphs (torch.compile's reduce-overhead mode)

    @classmethod
    def build(cls, config: TrainConfig, task: Task, runtime: Runtime, steps_per_epoch: int) -> Optimization:
        """The task's model on the run's device, with AdamW over the task's parameter groups."""
        raw_model = task.build_model().to(runtime.device)
        if runtime.channels_last:
            raw_model = raw_model.to(memory_format=torch.channels_last)
        # dynamic=False: static shapes (every training batch is full; a short last val batch gets its own graph)
        model = (torch.compile(raw_model, mode=runtime.compile_mode, dynamic=False) if runtime.compile_mode
                 else raw_model)
        optimizer = torch.optim.AdamW(task.parameter_groups(raw_model, config.lr), lr=config.lr,
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, steps_per_epoch))
        scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
        return cls(raw_model, model, optimizer, scheduler, scaler, config.grad_clip,
                   graphed=runtime.compile_mode == "reduce-overhead")

    def begin_step(self) -> None:
        """Mark a new training step: a CUDA graph may then reuse the last step's buffers."""
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()

    def step(self, loss: Tensor) -> None:
        """One optimizer step on `loss`: backward (scaled), clip, step, and advance the lr schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return max(self.scheduler.get_last_lr())

    def state(self) -> dict[str, Any]:
        """What save_checkpoint stores of it."""
        return {"model": self.raw_model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler}

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Restore what `state` saved, from a loaded checkpoint."""
        self.raw_model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"] is not None:
            self.scaler.load_state_dict(checkpoint["scaler"])
