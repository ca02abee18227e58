"""The local debug run behind `celeb train cvae|nvae|classifier CONFIG.yaml [--set key=value]`: no Ray.

It loads the config and the data, runs `celeb.training.loop.fit` on the local GPU (or the CPU) with a
progress bar, and leaves everything in one run dir:

    runs/<task>-<time>/config.yaml            the exact config that ran
                      checkpoints/epoch_NNN/  the last and the best checkpoints (resumable)
                      metrics.jsonl, .csv     one row per epoch; metrics.json: summary + history
                      reconstructions.png     CVAE: val originals (top) above reconstructions
                      traversal.png, ...      CVAE: latent traversal, condition sweeps, KL chart,
                      dimensions.csv          and the labelled latent dims (celeb.evaluation)
                      wandb/                  with --wandb PROJECT: the W&B run, written from the files
                                              above (celeb.records; uploaded with WANDB_API_KEY)
                      balanced_accuracy.png   classifier: per-attribute balanced accuracy on val
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from celeb.atomic import atomic_path, write_text_atomic
from celeb.config import LATENT_TASKS, ConfigError, TrainConfig, config_to_dict, load_config, parse_override
from celeb.data.dataset import load_data
from celeb.records import RecordKeeper, RunInfo, run_id_of
from celeb.training import sealed
from celeb.training.checkpoint import plain
from celeb.training.loop import fit
from celeb.training.tracking import LocalTracker

SHOWN_METRICS = {
    "cvae": ("train/loss", "val/loss", "val/kl", "val/active_dims", "val/mse", "val/baseline_mse"),
    "nvae": ("train/loss", "val/loss", "val/kl", "val/kl_top", "val/bits_per_dim", "val/active_dims", "val/mse"),
    "classifier": ("train/loss", "val/loss", "val/balanced_accuracy", "val/auroc",
                   "val/baseline_balanced_accuracy"),
}


def run_local(task: str, config_path: Path, overrides: list[str], run_dir: Path | None = None,
              progress: bool = True, resume: Path | None = None, wandb_project: str | None = None) -> Path:
    """Train `task` with the config at `config_path` (+ `--set` overrides) locally; return the run dir.

    `resume` is a checkpoint dir (run_dir/checkpoints/epoch_NNN) to continue from exactly.
    `wandb_project`: also log to this W&B project (online with WANDB_API_KEY, else offline under
    run_dir/wandb), as one run named after the run dir.
    """
    config = task_config(task, Path(config_path), overrides)
    if not config.data.data_dir:
        raise ConfigError(f"{config_path}: config key 'data.data_dir' is empty; set it there or pass "
                          "--set data.data_dir=DIR (a folder made by `celeb prepare` and `celeb split`)")
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(task)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))

    c = config.data
    data = load_data(Path(c.data_dir), split=c.split, image_size=c.image_size, crop=c.crop)
    print(f"{task}: {len(data.indices('train')):,} train / {len(data.indices('val')):,} val images "
          f"({c.image_size}px, split '{c.split}') from {c.data_dir}; run dir {run_dir}")

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        shown = "  ".join(f"{k} {_fmt(metrics[k])}" for k in SHOWN_METRICS[task] if k in metrics)
        tqdm.write(f"epoch {metrics['epoch']}/{config.epochs}  {shown}")

    records, info = None, None
    if wandb_project is not None:
        records = RecordKeeper("auto").start()
        info = RunInfo(run_id=run_id_of(run_dir), name=run_dir.name, group="local", project=wandb_project,
                       config=config_to_dict(config), job_type=task, metric=config.early_stopping_metric,
                       mode=config.early_stopping_mode)

    def report_and_record(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        report(metrics, checkpoint_dir)
        if records is not None:
            records.update(str(run_dir), info)

    state = resume_point(Path(resume)) if resume is not None else None
    try:
        result = fit(config, data, tracker=LocalTracker(run_dir), on_epoch_end=report_and_record, run_dir=run_dir,
                     progress=progress, state=state)
    except BaseException:
        if records is not None:
            records.close(str(run_dir), info, "failed")
            records.drain()
        raise
    if records is not None:
        records.close(str(run_dir), info, "finished")
        print(records.drain().describe(str(run_dir.parent)))

    summary = {"task": task, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
               "best_metric_name": config.early_stopping_metric, "stopped_early": result.stopped_early,
               "best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
               "final": result.metrics, "history": result.history}
    write_text_atomic(run_dir / "metrics.json", json.dumps(plain(summary), indent=2) + "\n")
    pictures = []
    if task in LATENT_TASKS:
        shown = {"reconstructions.png": "val originals above reconstructions",
                 "traversal.png": "one row per latent dim, most used first, each swept ±3σ",
                 "conditions.png": "each condition attribute swept off -> on",
                 "dimensions.csv": "KL, activity and the attribute label of every latent dim"}
        pictures += [f"{name} ({what})" for name, what in shown.items() if (run_dir / name).exists()]
    if task == "classifier" and "val/balanced_accuracy" in result.metrics:
        plot_balanced_accuracy(result.metrics, run_dir / "balanced_accuracy.png")
        pictures.append("balanced_accuracy.png (per attribute, val)")

    print(f"\ndone: {run_dir}")
    print(f"  config       {run_dir / 'config.yaml'}")
    print(f"  metrics      {run_dir / 'metrics.csv'}, metrics.jsonl, metrics.json")
    print(f"  checkpoints  last {result.last_checkpoint}, best {result.best_checkpoint} "
          f"({config.early_stopping_metric} {_fmt(result.best_metric)} at epoch {result.best_epoch})")
    for picture in pictures:
        print(f"  picture      {run_dir / picture}")
    if result.stopped_early:
        print(f"  stopped early: no improvement in {config.early_stopping_patience} evaluations")
    return run_dir


def resume_point(checkpoint: Path) -> Path:
    """`--resume CHECKPOINT`, or the newest complete checkpoint before it when it is cut short
    (the run says which it passed over, and why)."""
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"--resume {checkpoint}: no such checkpoint folder (expected "
                                "runs/<run>/checkpoints/epoch_NNN)")
    siblings = [p for p in checkpoint.parent.glob("epoch_*") if p.name <= checkpoint.name]
    choice = sealed.newest_complete([checkpoint, *siblings])
    if choice.path is None:
        raise sealed.IncompleteFolderError(f"--resume {checkpoint}: {choice.describe()}; start the run again "
                                           "without --resume")
    if choice.describe():
        print(f"resume: {choice.describe()}")
    return Path(choice.path)


def task_config(task: str, config_path: Path, overrides: list[str]) -> TrainConfig:
    """The config for `celeb train TASK`: a task written in the file or a --set must agree with TASK."""
    if task not in SHOWN_METRICS:
        raise ConfigError(f"unknown task {task!r}; use {', '.join(SHOWN_METRICS)}")
    config = load_config(config_path, overrides)
    written = {key: value for key, value in map(parse_override, overrides) if key == "task"}
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    stated = written.get("task", raw.get("task"))
    if stated is not None and stated != task:
        raise ConfigError(f"{config_path} is a '{stated}' config but you asked for `celeb train {task}`; "
                          f"run `celeb train {stated} {config_path}` or use a {task} config")
    return dataclasses.replace(config, task=task)


def new_run_dir(task: str, root: Path = Path("runs")) -> Path:
    """runs/<task>-<YYYYmmdd-HHMMSS>, with a suffix if that exists already."""
    base = root / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def plot_balanced_accuracy(metrics: dict[str, Any], path: Path) -> Path:
    """A horizontal bar per attribute: val balanced accuracy, with the majority baseline (0.5) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k.split("/", 2)[2] for k in metrics if k.startswith("val/bacc/")]
    values = [metrics[f"val/bacc/{n}"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(names) + 1.2))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.axvline(0.5, color="grey", linestyle="--", label="majority baseline (0.5)")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("balanced accuracy (val)")
    ax.set_title(f"epoch {metrics.get('epoch')}: mean {metrics['val/balanced_accuracy']:.3f}")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
