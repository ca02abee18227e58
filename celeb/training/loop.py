"""The one training loop, for both the conditional β-VAE and the attribute classifier.

`fit` reads top to bottom: seed everything -> data loaders -> model -> optimizer and scheduler ->
(resume from a checkpoint) -> for each epoch: train, evaluate on val, log, checkpoint, report,
early-stop. What differs between the tasks (building the model, the loss of a batch, evaluation,
images to look at) lives in two small adapters with the same methods, `CVAETask` and
`ClassifierTask`; there is no second loop.

Exactness: the batch order and augmentation of epoch e are pure functions of (seed, e) (see
celeb/data/loader.py), the reparameterisation noise comes from a generator re-seeded from (seed, e) at
the start of each epoch, and checkpoints hold every other RNG state, so a run resumed from the
checkpoint of epoch k ends with the same weights, bit for bit on the CPU, as one never interrupted.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from celeb.training.checkpoint import (capture_rng_state, checkpoint_name, load_checkpoint, prune_checkpoints,
                              restore_rng_state, save_checkpoint)
from celeb.config import ConfigError, TrainConfig, config_to_dict, flatten
from celeb.data.dataset import CelebData
from celeb.training.runfolder import best_row
from celeb.data.splits import positive_weight_array
from celeb.training.tracking import NullTracker, Tracker
from celeb.traversal import ACTIVE_DIM_NATS, images_as_tensor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, value: float, lr: float, last_checkpoint: Path | None,
                 where: str = "training", global_step: int | None = None) -> None:
        self.epoch, self.step, self.value, self.last_checkpoint = epoch, step, value, last_checkpoint
        self._args = (epoch, step, value, lr, last_checkpoint, where, global_step)
        kept = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint is not None
                else "no checkpoint had been written yet")
        at = f"epoch {epoch}, step {step}" + (f" (global step {global_step})" if global_step is not None else "")
        super().__init__(
            f"the loss became {value} during {where} at {at}, lr {lr:.3g}; "
            f"stopped, {kept}. Lower the learning rate (lr), set grad_clip (e.g. 1.0), "
            "or use amp: none and resume from the checkpoint."
        )

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
class Visuals:
    """What an evaluation gives people to look at: images (tracker.log_images) and tables (log_table)."""

    images: dict[str, Tensor | np.ndarray] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


class At(NamedTuple):
    """Where the loop is: the schedules (KL warm-up, capacity) are functions of this."""

    epoch: int  # 0-based
    step_in_epoch: int
    steps_per_epoch: int
    global_step: int


def fit(
    config: TrainConfig,
    data: CelebData,
    tracker: Tracker | None = None,
    on_epoch_end: Callable[[dict[str, Any], Path], None] | None = None,
    state: Path | None = None,
    run_dir: Path | None = None,
    progress: bool = False,
) -> FitResult:
    """Train `config.task` on `data`; resume exactly from the checkpoint dir `state` when given.

    Checkpoints go to run_dir/checkpoints/epoch_NNN (the last and the best are kept), or to a
    temporary folder when run_dir is None. `on_epoch_end(metrics, checkpoint_dir)` is called once
    per epoch after the checkpoint is written (a Ray trial reports from there). Metrics and images
    go to `tracker`, which the caller owns (fit never calls its `finish`). `progress` shows a tqdm
    bar per epoch on stderr.
    """
    tracker = tracker or NullTracker()
    with contextlib.ExitStack() as stack:
        checkpoint_root = (Path(run_dir) / "checkpoints" if run_dir is not None
                           else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celeb-ckpt-"))))

        # --- seed, device, precision
        seed_everything(config.seed)
        device = resolve_device(config.device)
        amp_dtype = resolve_amp(config.amp, device)
        channels_last = device.type == "cuda" if config.channels_last == "auto" else config.channels_last

        # --- data
        from celeb.data.augment import make_augment
        from celeb.data.loader import BatchLoader

        task = make_task(config, data, device)
        train_idx, val_idx = split_indices(data, config.data.split)
        train_loader = BatchLoader(data.images, data.labels, train_idx, config.batch_size, shuffle=True,
                                   seed=config.seed, drop_last=len(train_idx) >= config.batch_size,
                                   device=device, on_device=config.data.on_device,
                                   augment=make_augment(task.augment))
        val_loader = BatchLoader(data.images, data.labels, val_idx, config.eval_batch_size, shuffle=False,
                                 seed=config.seed, device=device, on_device=config.data.on_device)
        steps_per_epoch = min(len(train_loader), config.max_train_batches or len(train_loader))

        # --- model, optimizer, schedule
        raw_model = task.build_model().to(device)
        if channels_last:
            raw_model = raw_model.to(memory_format=torch.channels_last)
        model = torch.compile(raw_model) if config.compile else raw_model
        optimizer = torch.optim.AdamW(task.parameter_groups(raw_model, config.lr), lr=config.lr,
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, steps_per_epoch))
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        noise = torch.Generator(device=device)  # reparameterisation noise, re-seeded per epoch
        autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

        # --- loop state, or resume it
        start_epoch, step = 0, 0
        history: list[dict[str, Any]] = []
        best = {"metric": None, "epoch": None, "bad_evals": 0}
        last_checkpoint = best_checkpoint = None
        if state is not None:
            checkpoint = load_checkpoint(state)
            check_resumable(checkpoint["config"], config_to_dict(config), state)
            raw_model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if checkpoint["scaler"] is not None:
                scaler.load_state_dict(checkpoint["scaler"])
            start_epoch, step = checkpoint["epoch"], checkpoint["step"]
            history = checkpoint["loop_state"]["history"]
            best = checkpoint["loop_state"]["best"]
            last_checkpoint = Path(state)
            restore_rng_state(checkpoint["rng_state"], {"noise": noise})

        stopped_early = False
        for epoch in range(start_epoch, config.epochs):
            # --- train one epoch
            model.train()
            train_loader.set_epoch(epoch)
            noise.manual_seed(derived_seed(config.seed, epoch))
            sums: dict[str, Tensor] = {}
            unchecked: list[Tensor] = []
            check_every = 1 if device.type == "cpu" else 16  # each check waits for the GPU
            started = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, desc=f"{config.task} epoch {epoch + 1}/{config.epochs}",
                       disable=not progress, file=sys.stderr, dynamic_ncols=True, leave=False)
            for i, (x, y) in enumerate(train_loader):
                if i == steps_per_epoch:
                    break
                at = At(epoch, i, steps_per_epoch, step)
                with autocast:
                    loss, parts = task.loss(model, x, y, at, noise)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                for name, value in {"loss": loss, **parts}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().float()
                unchecked.append(loss.detach().float())
                if len(unchecked) == check_every or i + 1 == steps_per_epoch:
                    last = check_finite(unchecked, at, optimizer, last_checkpoint)
                    unchecked = []
                    bar.set_postfix(loss=f"{last:.4g}", refresh=False)
                bar.update(1)
            bar.close()
            seconds = time.perf_counter() - started
            metrics: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": max(scheduler.get_last_lr()),
                                       **{f"train/{k}": (v / steps_per_epoch).item() for k, v in sums.items()},
                                       **task.train_extras(At(epoch, steps_per_epoch, steps_per_epoch, step)),
                                       "time/epoch_s": seconds,
                                       "train/images_per_s": steps_per_epoch * config.batch_size / seconds}

            # --- evaluate on val
            evaluated = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
            if evaluated:
                model.eval()
                with torch.no_grad(), autocast:
                    metrics.update(task.evaluate(model, val_loader, At(epoch, 0, steps_per_epoch, step)))
                    final = epoch + 1 == config.epochs
                    if final:
                        metrics.update(task.final_metrics())
                    visuals = task.visuals(raw_model, epoch + 1, final=final)
                if not math.isfinite(metrics["val/loss"]):
                    raise NonFiniteLossError(epoch + 1, steps_per_epoch, metrics["val/loss"],
                                             max(scheduler.get_last_lr()), last_checkpoint, where="evaluation",
                                             global_step=step)
                tracker.log_images(visuals.images, step)
                for name, table in visuals.tables.items():
                    tracker.log_table(name, table, step)
            tracker.log(metrics, step)
            history.append(metrics)

            # --- early stopping bookkeeping, checkpoint, report
            if evaluated:
                if config.early_stopping_metric not in metrics:
                    known = ", ".join(sorted(k for k in metrics if k.count("/") == 1))
                    raise ConfigError(f"config key 'early_stopping_metric': '{config.early_stopping_metric}' is not "
                                      f"a metric of the {config.task} task; choose one of {known}")
                top = best_row(history, config.early_stopping_metric, config.early_stopping_mode)
                if top is not None and top["epoch"] == epoch + 1:
                    best = {"metric": float(top[config.early_stopping_metric]), "epoch": epoch + 1, "bad_evals": 0}
                else:
                    best["bad_evals"] += 1
            last_checkpoint = save_checkpoint(
                checkpoint_root / checkpoint_name(epoch + 1), model=raw_model, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, epoch=epoch + 1, step=step, config=config_to_dict(config),
                metrics=metrics, rng_state=capture_rng_state({"noise": noise}),
                loop_state={"history": history, "best": best})
            best_checkpoint = (checkpoint_root / checkpoint_name(best["epoch"])) if best["epoch"] else None
            if best_checkpoint is not None and not best_checkpoint.exists():  # resumed into another dir
                best_checkpoint = None
            prune_checkpoints(checkpoint_root, keep={last_checkpoint, best_checkpoint or last_checkpoint})
            if on_epoch_end is not None:
                on_epoch_end(metrics, last_checkpoint)
            if config.early_stopping_patience is not None and best["bad_evals"] >= config.early_stopping_patience:
                stopped_early = True
                break

        raw_model.eval()
        temporary = run_dir is None
        return FitResult(history=history, model=raw_model, best_epoch=best["epoch"], best_metric=best["metric"],
                         best_checkpoint=None if temporary else best_checkpoint,
                         last_checkpoint=None if temporary else last_checkpoint, stopped_early=stopped_early)


# ----------------------------------------------------------------------------- task adapters


class CVAETask:
    """Conditional β-VAE: loss = recon + β·KL (or β·|KL − C| with a capacity schedule)."""

    def __init__(self, config: TrainConfig, data: CelebData, device: torch.device) -> None:
        from celeb.models import config_beta

        c = config.cvae
        self.config, self.device = config, device
        self.augment = config.data.augment
        self.image_size = image_size_of(data)
        self.cond_index = torch.tensor(data.attribute_index(c.conditions), dtype=torch.long, device=device)
        self.beta = config_beta(config, self.image_size)
        train_idx, val_idx = split_indices(data, config.data.split)
        self.mean_image = mean_image(data.images, train_idx).to(device)  # (3, H, W) in [0, 1]
        self.show_x, self.show_y = images_to_tensor(data, val_idx[: config.num_recon], device)
        self.panel_x, self.panel_y = images_to_tensor(data, val_idx[: c.panel_faces], device)
        self.names = tuple(data.attribute_names)

    def build_model(self) -> nn.Module:
        from celeb.models import build_model

        return build_model(self.config, image_size=self.image_size)

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    def cond(self, y: Tensor) -> Tensor | None:
        return y[:, self.cond_index] if len(self.cond_index) else None

    def kl_weight(self, at: At) -> float:
        from celeb.models import kl_weight_schedule

        return kl_weight_schedule(at.epoch, at.step_in_epoch, at.steps_per_epoch, self.beta,
                                  self.config.cvae.warmup_epochs)

    def capacity(self, at: At) -> float:
        from celeb.models import capacity_schedule

        c = self.config.cvae
        if c.capacity <= 0:
            return 0.0
        return capacity_schedule(at.global_step, c.capacity, c.capacity_epochs * at.steps_per_epoch)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, at: At, noise: torch.Generator) -> tuple[Tensor, dict]:
        from celeb.models import vae_loss

        out = model(x, self.cond(y), generator=noise)
        parts = vae_loss(out, x, self.kl_weight(at), self.capacity(at), recon=self.config.cvae.recon)
        return parts.total, {"recon": parts.recon, "kl": parts.kl}

    def train_extras(self, at: At) -> dict[str, float]:
        return {"beta": self.beta, "kl_weight": self.kl_weight(at), "capacity": self.capacity(at)}

    def evaluate(self, model: nn.Module, loader, at: At) -> dict[str, Any]:
        """Val loss with the run's full β, its parts, per-dim KL, and the mean-image baseline."""
        from celeb.models import vae_loss

        noise = torch.Generator(device=self.device).manual_seed(derived_seed(self.config.seed, -1))
        sums: dict[str, Tensor | float] = {}
        kl_per_dim: Tensor | float = 0.0
        n = 0
        mus, logvars, labels = [], [], []
        mean_logits = torch.logit(self.mean_image, eps=1e-6)
        for x, y in loader:
            b, cond = x.shape[0], self.cond(y)
            out = model(x, cond, generator=noise)
            parts = vae_loss(out, x, self.beta, self.capacity(at), recon=self.config.cvae.recon)
            recon_images = model.reconstruct(x, cond).float()
            batch = {"loss": parts.total * b, "recon": parts.recon * b, "kl": parts.kl * b,
                     "mse": (recon_images - x).square().mean(dim=(1, 2, 3)).sum(),
                     "baseline_mse": (self.mean_image - x).square().mean(dim=(1, 2, 3)).sum(),
                     "baseline_recon": recon_error(mean_logits.expand_as(x), x, self.config.cvae.recon)}
            for name, value in batch.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            kl_per_dim = kl_per_dim + parts.kl_per_dim.detach().float() * b
            n += b
            mus.append(out.mu.float())
            logvars.append(out.logvar.float())
            labels.append(y.bool())
        metrics = {f"val/{k}": (v / n).item() for k, v in sums.items()}
        metrics["val/neg_elbo"] = metrics["val/recon"] + metrics["val/kl"]
        per_dim = (kl_per_dim / n).cpu()
        metrics["val/kl_per_dim"] = per_dim.tolist()
        metrics["val/active_dims"] = int((per_dim > ACTIVE_DIM_NATS).sum())
        # one device-to-host copy after the loop, not a GPU sync per batch
        self.latents = tuple(torch.cat(parts).cpu().numpy() for parts in (mus, logvars, labels))
        self.dimensions, scores = self.score(*self.latents)
        metrics.update({f"val/{k}": v for k, v in scores.items() if k != "active_dims"})
        return metrics

    def score(self, mu: np.ndarray, logvar: np.ndarray, labels: np.ndarray) -> tuple[pd.DataFrame, dict[str, float]]:
        """Per-dim table and MIG of val latents against the attributes the model is not conditioned on."""
        from celeb.traversal import score_latents

        free = [k for k in range(labels.shape[1]) if k not in self.cond_index.tolist()]
        return score_latents(mu, logvar, labels[:, free], [self.names[k] for k in free])

    def final_metrics(self) -> dict[str, float]:
        """With cvae.final_metrics, after the last epoch: every fixed-setting disentanglement score of
        the val latents against the attributes the model is not conditioned on (a few seconds)."""
        from celeb.traversal import fixed_metrics

        if not self.config.cvae.final_metrics:
            return {}
        mu, _, labels = self.latents
        free = [k for k in range(labels.shape[1]) if k not in self.cond_index.tolist()]
        scores, note = fixed_metrics(mu, labels[:, free], [self.names[k] for k in free], self.config.seed)
        if note:
            warnings.warn(note, stacklevel=2)
        return {f"val/{k}": v for k, v in scores.items() if k != "mig_fixed"}

    def visuals(self, model: nn.Module, epoch: int, final: bool) -> Visuals:
        """Reconstructions every evaluation; traversal panels and the dimension table every
        `cvae.panel_every` evaluations and after the last epoch."""
        from celeb.traversal import latent_panels, reconstruction_panel

        c, visuals = self.config.cvae, Visuals()
        if len(self.show_x):
            visuals.images["reconstructions"] = reconstruction_panel(model, self.show_x, self.cond(self.show_y))
        evaluation = epoch // self.config.eval_every
        if c.panel_every and len(self.panel_x) and (final or evaluation % c.panel_every == 0):
            mu, logvar, _ = self.latents
            visuals.images.update(latent_panels(
                model, self.panel_x, self.cond(self.panel_y), mu, logvar, self.dimensions, c.conditions,
                steps=c.panel_steps, span=c.panel_span))
            visuals.tables["dimensions"] = self.dimensions.drop(
                columns=[k for k in self.dimensions if k.startswith(("mi_", "corr_"))])
        return visuals


class ClassifierTask:
    """Multi-label attribute classifier: BCE-with-logits over all attributes (+ Inception's aux head)."""

    def __init__(self, config: TrainConfig, data: CelebData, device: torch.device) -> None:
        self.config, self.device = config, device
        self.augment = config.classifier.augment
        self.names = tuple(data.attribute_names)
        train_idx, _ = split_indices(data, config.data.split)
        self.pos_weight = None
        if config.classifier.use_pos_weight:
            weights = data.pos_weight if data.pos_weight is not None else positive_weight_array(data.labels[train_idx])
            self.pos_weight = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=device)

    def build_model(self) -> nn.Module:
        from celeb.models import build_model

        return build_model(self.config)

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        from celeb.models import parameter_groups

        return parameter_groups(model, lr, self.config.classifier.backbone_lr_mult)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, at: At, noise: torch.Generator) -> tuple[Tensor, dict]:
        from celeb.models import classifier_loss

        return classifier_loss(model(x), y, pos_weight=self.pos_weight), {}

    def train_extras(self, at: At) -> dict[str, float]:
        return {}

    def evaluate(self, model: nn.Module, loader, at: At) -> dict[str, Any]:
        """Val loss, accuracy, balanced accuracy and AUROC (+ per attribute), and the majority baseline."""
        from celeb.metrics import attribute_metrics, majority_baseline
        from celeb.models import classifier_loss

        logits, targets, loss_sum, n = [], [], 0.0, 0
        for x, y in loader:
            out = model(x)
            loss_sum = loss_sum + classifier_loss(out, y, pos_weight=self.pos_weight).float() * x.shape[0]
            n += x.shape[0]
            logits.append(out.logits.float().cpu())
            targets.append(y.float().cpu())
        logits_np, targets_np = torch.cat(logits).numpy(), torch.cat(targets).numpy()
        metrics: dict[str, Any] = {"val/loss": (loss_sum / n).item()}
        metrics.update({f"val/{k}": v for k, v in attribute_metrics(logits_np, targets_np, self.names).items()})
        baseline = majority_baseline(targets_np, self.names)
        metrics.update({f"val/baseline_{k}": baseline[k] for k in ("accuracy", "balanced_accuracy", "auroc")
                        if k in baseline})
        return metrics

    def final_metrics(self) -> dict[str, float]:
        return {}

    def visuals(self, model: nn.Module, epoch: int, final: bool) -> Visuals:
        return Visuals()


TASKS = {"cvae": CVAETask, "classifier": ClassifierTask}


def make_task(config: TrainConfig, data: CelebData, device: torch.device) -> CVAETask | ClassifierTask:
    return TASKS[config.task](config, data, device)


# ----------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's noise (epoch -1: evaluation), distinct across (seed, epoch)."""
    return (seed * 1_000_003 + epoch + 7) % 2**63


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


def check_finite(losses: list[Tensor], at: At, optimizer: torch.optim.Optimizer,
                 last_checkpoint: Path | None) -> float:
    """Raise NonFiniteLossError naming the first bad step among the recent `losses` (the last of
    which was step `at`); else return the last loss."""
    values = torch.stack(losses).cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        back = len(losses) - int(bad[0])  # 1 for the last step
        raise NonFiniteLossError(at.epoch + 1, at.step_in_epoch - back + 2, values[-back].item(),
                                 optimizer.param_groups[0]["lr"], last_checkpoint,
                                 global_step=at.global_step - back + 2)
    return values[-1].item()


def check_resumable(saved: dict[str, Any], current: dict[str, Any], state: Path) -> None:
    """A resumed run must train the same thing; settings that only steer the run may differ."""
    if saved["task"] != current["task"]:
        raise ValueError(f"{state} is a {saved['task']} checkpoint but the config's task is {current['task']}")
    steering = {"epochs", "device", "early_stopping_patience", "eval_every", "compile", "data.data_dir",
                "data.on_device"}
    saved, current = flatten(saved), flatten(current)
    changed = sorted(k for k in current if k not in steering and saved.get(k) != current.get(k))
    if changed:
        warnings.warn(f"resuming from {state} with config changes in {changed}: the run will not "
                      "match an uninterrupted one", stacklevel=3)


def split_indices(data: CelebData, split_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and val row indices, with a clear error when either is empty."""
    train_idx, val_idx = data.indices("train"), data.indices("val")
    for name, idx in (("train", train_idx), ("val", val_idx)):
        if len(idx) == 0:
            raise ValueError(f"the '{split_name}' split has no {name} rows; rerun `celeb split` with a "
                             "non-zero ratio for it (or use more images)")
    return train_idx, val_idx


def image_size_of(data: CelebData) -> int:
    height, width = data.images.shape[1:3]
    if height != width:
        raise ValueError(f"images must be square, got {height}x{width}")
    return int(height)


def mean_image(images: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> Tensor:
    """Mean of images[rows] as a float (3, H, W) tensor in [0, 1], in chunks (images may be a memmap)."""
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(rows), chunk):
        total += images[np.sort(rows[start:start + chunk])].sum(axis=0, dtype=np.float64)
    return torch.from_numpy(total / max(1, len(rows)) / 255.0).float().permute(2, 0, 1).contiguous()


def images_to_tensor(data: CelebData, rows: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """A few images as float (B, 3, H, W) in [0, 1] and their labels as float (B, K)."""
    y = torch.from_numpy(np.asarray(data.labels[rows], dtype=np.float32))
    return images_as_tensor(data.images[rows], device), y.to(device)


def recon_error(logits: Tensor, x: Tensor, kind: str) -> Tensor:
    """Summed reconstruction error of the batch, matching vae_loss's per-image sums."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum")
    return (torch.sigmoid(logits.float()) - x).square().sum()
