"""The one training loop, for every task (the conditional β-VAE and the attribute classifier).

`fit` reads top to bottom: seed -> task, loaders, model and optimizer -> (resume) -> for each epoch:
train, evaluate on val, log, checkpoint, report, early-stop. What differs between the tasks lives
in their adapters (celeb.training.adapter.Task); the machine side (device, precision, optimizer
step) in celeb.training.runtime.

Exactness: the batch order and augmentation of epoch e are pure functions of (seed, e) (see
celeb/data/loader.py), the reparameterisation noise comes from a generator re-seeded from (seed, e) at
the start of each epoch, and checkpoints hold every other RNG state, so a run resumed from the
checkpoint of epoch k ends with the same weights, bit for bit on the CPU, as one never interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from celeb.config import ConfigError, TrainConfig, config_to_dict, flatten
from celeb.data.augment import make_augment
from celeb.data.dataset import CelebData
from celeb.data.loader import BatchLoader
from celeb.seeds import noise_seed, seed_everything
from celeb.training.adapter import DIVERGENCE_ADVICE, At, Evaluation, Task, split_indices
from celeb.training.checkpoint import (capture_rng_state, checkpoint_name, load_checkpoint, prune_checkpoints,
                                       restore_rng_state, save_checkpoint)
from celeb.training.runfolder import best_row
from celeb.training.runtime import Optimization, Runtime
from celeb.training.tasks import make_task
from celeb.training.tracking import NullTracker, Tracker

EpochCallback = Callable[[dict[str, Any], Path], None]
log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, value: float, lr: float, last_checkpoint: Path | None,
                 where: str = "training", global_step: int | None = None, advice: str | None = None) -> None:
        self.epoch, self.step, self.value, self.last_checkpoint = epoch, step, value, last_checkpoint
        self._args = (epoch, step, value, lr, last_checkpoint, where, global_step, advice)
        kept = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint is not None
                else "no checkpoint had been written yet")
        at = f"epoch {epoch}, step {step}" + (f" (global step {global_step})" if global_step is not None else "")
        super().__init__(f"the loss became {value} during {where} at {at}, lr {lr:.3g}; stopped, {kept}. "
                         + (advice or DIVERGENCE_ADVICE))

    def __reduce__(self) -> tuple[type, tuple]:
        # Ray pickles a trial's error to report it; the default reduce would call __init__ with the message.
        return (type(self), self._args)


@dataclass
class FitResult:
    """What a run produced: per-epoch metrics, the best epoch and the trained model (in eval mode).

    Checkpoint paths are None when fit() ran without a run_dir (its checkpoints were temporary).
    """

    history: list[dict[str, Any]]
    model: nn.Module
    best_epoch: int | None = None
    best_metric: float | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False

    @property
    def metrics(self) -> dict[str, Any]:
        """The last epoch's metrics."""
        return self.history[-1] if self.history else {}


@dataclass
class LoopState:
    """The loop's own counters: what a checkpoint's loop_state holds, plus where the run is."""

    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"metric": None, "epoch": None, "bad_evals": 0})
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    stopped_early: bool = False


@dataclass
class Run:
    """One training run as the loop drives it: its task, model and optimizer, loaders, noise, the
    loop's counters, its tracker and where its checkpoints go. `fit` drives one; a fused group
    (celeb.training.fused) drives several through the same `end_epoch`."""

    config: TrainConfig
    task: Task
    runtime: Runtime
    opt: Optimization
    train_loader: BatchLoader
    val_loader: BatchLoader
    noise: torch.Generator  # reparameterisation noise, re-seeded per epoch
    loop: LoopState
    tracker: Tracker
    checkpoint_root: Path
    steps_per_epoch: int

    @property
    def done(self) -> bool:
        return self.loop.epoch >= self.config.epochs or self.loop.stopped_early


Loaders = Callable[[TrainConfig, Task, torch.device], tuple[BatchLoader, BatchLoader]]


def start_run(config: TrainConfig, data: CelebData, tracker: Tracker, checkpoint_root: Path,
              state: Path | None = None, loaders: Loaders | None = None) -> Run:
    """Seed, then build the task, loaders, model and optimizer (in that order: the RNG draws are
    part of a run's identity), and resume from the checkpoint dir `state` when given. `loaders`
    replaces `make_loaders` (a fused group shares one device copy of the data between its runs)."""
    seed_everything(config.seed)
    runtime = Runtime.of(config)
    task = make_task(config, data, runtime.device)
    train_loader, val_loader = (loaders(config, task, runtime.device) if loaders is not None
                                else make_loaders(config, data, task, runtime.device))
    steps_per_epoch = min(len(train_loader), config.max_train_batches or len(train_loader))
    opt = Optimization.build(config, task, runtime, steps_per_epoch)
    noise = torch.Generator(device=runtime.device)
    loop = resume(state, config, opt, noise) if state is not None else LoopState()
    return Run(config, task, runtime, opt, train_loader, val_loader, noise, loop, tracker, Path(checkpoint_root),
               steps_per_epoch)


def fit(config: TrainConfig, data: CelebData, tracker: Tracker | None = None,
        on_epoch_end: EpochCallback | None = None, state: Path | None = None, run_dir: Path | None = None,
        progress: bool = False) -> FitResult:
    """Train `config.task` on `data`; resume exactly from the checkpoint dir `state` when given.

    Checkpoints go to run_dir/checkpoints/epoch_NNN (the last and the best are kept), or to a
    temporary folder when run_dir is None. `on_epoch_end(metrics, checkpoint_dir)` is called once
    per epoch after the checkpoint is written (a Ray trial reports from there). Metrics and images
    go to `tracker`, which the caller owns (fit never calls its `finish`). `progress` shows a tqdm
    bar per epoch on stderr.
    """
    with contextlib.ExitStack() as stack:
        checkpoint_root = (Path(run_dir) / "checkpoints" if run_dir is not None
                           else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celeb-ckpt-"))))
        run = start_run(config, data, tracker or NullTracker(), checkpoint_root, state)
        while not run.done:
            end_epoch(run, train_epoch(run, progress), on_epoch_end)
        return run_result(run, temporary=run_dir is None)


def end_epoch(run: Run, metrics: dict[str, Any], on_epoch_end: EpochCallback | None = None) -> None:
    """After an epoch's training steps: evaluate when due, log, keep the best, checkpoint, call
    back, and decide on early stopping. Advances `run.loop.epoch`."""
    config, loop, epoch = run.config, run.loop, run.loop.epoch
    evaluated = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
    if evaluated:
        metrics.update(evaluate_epoch(run))
    run.tracker.log(metrics, loop.step)
    loop.history.append(metrics)
    if evaluated:
        update_best(config, loop, metrics, epoch)
    save_epoch(run, metrics)
    loop.epoch = epoch + 1
    if on_epoch_end is not None:
        on_epoch_end(metrics, loop.last_checkpoint)
    if config.early_stopping_patience is not None and loop.best["bad_evals"] >= config.early_stopping_patience:
        loop.stopped_early = True


def run_result(run: Run, temporary: bool) -> FitResult:
    """What `fit` returns of a finished run (no checkpoint paths when they were temporary)."""
    run.opt.raw_model.eval()
    loop = run.loop
    return FitResult(history=loop.history, model=run.opt.raw_model, best_epoch=loop.best["epoch"],
                     best_metric=loop.best["metric"], best_checkpoint=None if temporary else loop.best_checkpoint,
                     last_checkpoint=None if temporary else loop.last_checkpoint, stopped_early=loop.stopped_early)


def make_loaders(config: TrainConfig, data: CelebData, task: Task,
                 device: torch.device) -> tuple[BatchLoader, BatchLoader]:
    """The shuffled, augmented training loader and the val loader of the config's split."""
    train_idx, val_idx = split_indices(data, config.data.split)
    where = {"device": device, "placement": config.data.placement,
             "memory_budget": None if config.data.memory_gb is None else int(config.data.memory_gb * 1e9)}
    train = BatchLoader(data.images, data.labels, train_idx, config.batch_size, shuffle=True, seed=config.seed,
                        drop_last=len(train_idx) >= config.batch_size, augment=make_augment(task.augment), **where)
    val = BatchLoader(data.images, data.labels, val_idx, config.eval_batch_size, shuffle=False, seed=config.seed,
                      **where)
    log.info("data: train %s, val %s", train.placement, val.placement)
    return train, val


def resume(state: Path, config: TrainConfig, opt: Optimization, noise: torch.Generator) -> LoopState:
    """Load the checkpoint dir `state` into the model, optimizer and RNGs; return the loop's state."""
    checkpoint = load_checkpoint(state)
    check_resumable(checkpoint["config"], config_to_dict(config), state)
    opt.load(checkpoint)
    restore_rng_state(checkpoint["rng_state"], {"noise": noise})
    saved = checkpoint["loop_state"]
    return LoopState(epoch=checkpoint["epoch"], step=checkpoint["step"], history=saved["history"],
                     best=saved["best"], last_checkpoint=Path(state))


def train_epoch(run: Run, progress: bool = False) -> dict[str, Any]:
    """One epoch of training steps; returns its metrics (mean losses, lr, speed)."""
    config, opt, loop, epoch, steps = run.config, run.opt, run.loop, run.loop.epoch, run.steps_per_epoch
    opt.model.train()
    run.train_loader.set_epoch(epoch)
    run.noise.manual_seed(noise_seed(config.seed, epoch))
    sums: dict[str, Tensor] = {}
    unchecked: list[Tensor] = []
    started = time.perf_counter()
    bar = tqdm(total=steps, desc=f"{config.task} epoch {epoch + 1}/{config.epochs}",
               disable=not progress, file=sys.stderr, dynamic_ncols=True, leave=False)
    for i, (x, y) in enumerate(run.train_loader):
        if i == steps:
            break
        at = At(epoch, i, steps, loop.step)
        opt.begin_step()
        with run.runtime.autocast():
            loss, parts = run.task.loss(opt.model, x, y, at, run.noise)
        opt.step(loss)
        loop.step += 1
        for name, value in {"loss": loss, **parts}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
        unchecked.append(loss.detach().float().clone())  # clone: a CUDA graph reuses its output buffers
        if len(unchecked) == run.runtime.check_every or i + 1 == steps:
            last = check_finite(unchecked, at, opt.optimizer, loop.last_checkpoint, run.task.divergence_advice)
            unchecked = []
            bar.set_postfix(loss=f"{last:.4g}", refresh=False)
        bar.update(1)
    bar.close()
    return epoch_metrics(run, {k: v / steps for k, v in sums.items()}, time.perf_counter() - started)


def epoch_metrics(run: Run, means: dict[str, Tensor], seconds: float) -> dict[str, Any]:
    """An epoch's training row: its counters, lr, mean losses, the task's extras and its speed."""
    loop, steps = run.loop, run.steps_per_epoch
    return {"epoch": loop.epoch + 1, "step": loop.step, "lr": run.opt.lr,
            **{f"train/{k}": float(v) for k, v in means.items()},
            **run.task.train_extras(At(loop.epoch, steps, steps, loop.step)),
            "time/epoch_s": seconds, "train/images_per_s": steps * run.config.batch_size / seconds}


def evaluate_epoch(run: Run) -> dict[str, Any]:
    """Evaluate on val, log the visuals, and return the metrics; a non-finite val loss stops the run."""
    config, opt, loop, epoch = run.config, run.opt, run.loop, run.loop.epoch
    opt.model.eval()
    final = epoch + 1 == config.epochs
    with torch.no_grad(), run.runtime.autocast():
        evaluation: Evaluation = run.task.evaluate(opt.model, run.val_loader,
                                                   At(epoch, 0, run.steps_per_epoch, loop.step), final)
        visuals = run.task.visuals(opt.raw_model, evaluation, epoch + 1, final=final)
    metrics = evaluation.metrics
    if not math.isfinite(metrics["val/loss"]):
        raise NonFiniteLossError(epoch + 1, run.steps_per_epoch, metrics["val/loss"], opt.lr, loop.last_checkpoint,
                                 where="evaluation", global_step=loop.step, advice=run.task.divergence_advice)
    run.tracker.log_images(visuals.images, loop.step)
    for name, table in visuals.tables.items():
        run.tracker.log_table(name, table, loop.step)
    return metrics


def update_best(config: TrainConfig, loop: LoopState, metrics: dict[str, Any], epoch: int) -> None:
    """Early-stopping bookkeeping after an evaluation, by the one best-epoch rule (runfolder.best_row)."""
    if config.early_stopping_metric not in metrics:
        known = ", ".join(sorted(k for k in metrics if k.count("/") == 1))
        raise ConfigError(f"config key 'early_stopping_metric': '{config.early_stopping_metric}' is not "
                          f"a metric of the {config.task} task; choose one of {known}")
    top = best_row(loop.history, config.early_stopping_metric, config.early_stopping_mode)
    if top is not None and top["epoch"] == epoch + 1:
        loop.best = {"metric": float(top[config.early_stopping_metric]), "epoch": epoch + 1, "bad_evals": 0}
    else:
        loop.best["bad_evals"] += 1


def save_epoch(run: Run, metrics: dict[str, Any]) -> None:
    """Checkpoint the epoch, then keep only the last and the best checkpoints."""
    loop, root = run.loop, run.checkpoint_root
    loop.last_checkpoint = save_checkpoint(
        root / checkpoint_name(loop.epoch + 1), **run.opt.state(), epoch=loop.epoch + 1, step=loop.step,
        config=config_to_dict(run.config), metrics=metrics, rng_state=capture_rng_state({"noise": run.noise}),
        loop_state={"history": loop.history, "best": loop.best})
    best = (root / checkpoint_name(loop.best["epoch"])) if loop.best["epoch"] else None
    loop.best_checkpoint = best if best is not None and best.exists() else None  # None: resumed into another dir
    prune_checkpoints(root, keep={loop.last_checkpoint, loop.best_checkpoint or loop.last_checkpoint})


def check_finite(losses: list[Tensor], at: At, optimizer: torch.optim.Optimizer,
                 last_checkpoint: Path | None, advice: str | None = None) -> float:
    """Raise NonFiniteLossError naming the first bad step among the recent `losses` (the last of
    which was step `at`); else return the last loss."""
    values = torch.stack(losses).cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        back = len(losses) - int(bad[0])  # 1 for the last step
        raise NonFiniteLossError(at.epoch + 1, at.step_in_epoch - back + 2, values[-back].item(),
                                 optimizer.param_groups[0]["lr"], last_checkpoint,
                                 global_step=at.global_step - back + 2, advice=advice)
    return values[-1].item()


def check_resumable(saved: dict[str, Any], current: dict[str, Any], state: Path) -> None:
    """A resumed run must train the same thing; settings that only steer the run may differ."""
    if saved["task"] != current["task"]:
        raise ValueError(f"{state} is a {saved['task']} checkpoint but the config's task is {current['task']}")
    steering = {"epochs", "device", "early_stopping_patience", "eval_every", "compile", "data.data_dir",
                "data.on_device", "data.placement", "data.memory_gb"}
    saved, current = flatten(saved), flatten(current)
    changed = sorted(k for k in current if k not in steering and saved.get(k) != current.get(k))
    if changed:
        warnings.warn(f"resuming from {state} with config changes in {changed}: the run will not "
                      "match an uninterrupted one", stacklevel=3)
