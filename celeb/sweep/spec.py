"""A hyper-parameter sweep, described without Ray: the spec file, its checks, the seed policy, ranking.

A sweep spec (sweeps/*.yaml) says what to train (`task`, `fixed` trainer values), what to vary
(`search`: one distribution per trainer key), how to judge it (`metric`, `mode`), how much to spend
(`num_trials`, `max_concurrent`, `resources`, `asha`), how to seed it (`seeds`, `optuna.seed`) and
where results go (`storage_path`, `name`). `load_spec` turns it into a checked `SweepSpec`; every
problem is an error naming the file, the line and the key, raised on the driver before any trial
starts. jobs/sweep.py turns a `SweepSpec` into a Ray Tune run; this module never imports Ray.

Seed policy ("fixed random seeds"): a sweep has one `sweep_seed`. Each sampled config is trained
`repeats` times, with seeds `trial_seeds(sweep_seed, repeats)`; the r-th repeat of every config
uses the same seed, so configs are compared on the same random draws (paired comparisons). The
searcher's own seed (`optuna.seed`) defaults to the sweep seed.

Tracking (`wandb`): every trial is one W&B run in the project, grouped by sweep name, written by the
driver from the trial's folder (celeb.records); `mode: auto` uploads when WANDB_API_KEY is in the
environment and keeps the records offline otherwise.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from celeb.config import ConfigError, TrainConfig, config_from_dict, flatten, key_lines, validate_keys
from celeb.records import WANDB_MODES

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
SEARCHERS = ("optuna", "random")
PROMOTIONS = ("quota", "percentile")
REPEAT_KEY = "repeat"  # the one key in a trial's config that is not a trainer key: its repeat index
OWNED_KEYS = {"seed": "seeds.sweep_seed", "task": "task", "data.data_dir": "data_dir"}  # set by the spec itself

# Metrics a trial reports, per task (celeb.training.loop), that a sweep may rank by.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cvae": ("val/loss", "val/recon", "val/kl", "val/mse", "val/neg_elbo", "val/active_dims",
             "train/loss", "train/recon", "train/kl"),
    "classifier": ("val/loss", "val/accuracy", "val/balanced_accuracy", "val/auroc", "train/loss"),
}
# Disentanglement scores a CVAE trial reports every epoch, from its validation latents against the
# attributes it is not conditioned on (celeb.traversal.score_latents). The costlier metrics of
# celeb.disentangle (DCI, SAP, the β-VAE and FactorVAE scores) run in `celeb review`, and after a
# trial's last epoch when its config sets cvae.final_metrics.
DISENTANGLEMENT_METRICS = ("val/mig_fixed", "val/labelled_dims")
# ... and, with `cvae.final_metrics: true`, after the last epoch only (so not for ASHA).
FINAL_METRICS = ("val/dci_disentanglement_fixed", "val/dci_completeness_fixed", "val/dci_informativeness_fixed",
                 "val/sap_fixed", "val/beta_vae_approx", "val/factor_vae_approx")


class SweepSpecError(ValueError):
    """A sweep spec that cannot run; the message names the file, the line, the key and the fix."""


@dataclass(frozen=True)
class Param:
    """One searched trainer key: uniform/loguniform floats in [low, high], ints in [low, high], or a choice."""

    name: str
    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[Any, ...] = ()

    def corners(self) -> list[Any]:
        """The extreme values (or every choice): what value checks must accept."""
        return list(self.values) if self.type == "choice" else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return any(value == v and type(value) is type(v) for v in self.values)
        if self.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.type == "choice":
            return f"{self.name}: choice of {list(self.values)}"
        return f"{self.name}: {self.type} in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractional GPUs (0.25) pack several trials on one GPU; memory is not isolated


@dataclass(frozen=True)
class OptunaSettings:
    seed: int | None = None  # None: the sweep seed
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # configs tried first (searched keys only)


@dataclass(frozen=True)
class AshaSettings:
    max_t: int  # epochs of a full trial (the last rung)
    grace_period: int = 1  # epochs every trial gets before it can be stopped
    reduction_factor: int = 3  # keep the top 1/reduction_factor at each rung
    # "quota": at most 1/reduction_factor of the trials that reach a rung are ever promoted from it
    # (Li et al. 2020's rule); "percentile": Ray's ASHA, any trial above the rung's current
    # percentile goes on (unbounded: with an improving searcher most late trials run in full).
    promotion: Literal["quota", "percentile"] = "quota"


@dataclass(frozen=True)
class WandbSettings:
    project: str = "celeb"
    entity: str | None = None  # None: the account's default entity
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY is set
    log_checkpoint: bool = False  # upload each trial's best checkpoint as a model artifact at its end
    tags: tuple[str, ...] = ()
    upload_every_s: float = 300.0  # online: a trial's record is uploaded at its end and at least this often


@dataclass(frozen=True)
class SeedSettings:
    sweep_seed: int = 0
    repeats: int = 1  # trainings per sampled config, with seeds trial_seeds(sweep_seed, repeats)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    task: Literal["cvae", "classifier"]
    data_dir: str  # absolute path (or URI) on the nodes that run trials
    metric: str
    mode: Literal["min", "max"]
    num_trials: int  # sampled configs; Tune runs num_trials * seeds.repeats trials
    fixed: dict[str, Any] = field(default_factory=dict)  # flat dotted trainer keys
    search: tuple[Param, ...] = ()
    searcher: Literal["optuna", "random"] = "optuna"
    max_concurrent: int = 1
    resources: Resources = Resources()
    optuna: OptunaSettings = OptunaSettings()
    asha: AshaSettings | None = None  # None: every trial runs its full epochs
    seeds: SeedSettings = SeedSettings()
    storage_path: str = "runs/sweeps"  # local dir (made absolute), s3://... or gs://...
    max_failures: int = 2  # retries of a failing trial, each from its last checkpoint
    num_to_keep: int = 2  # checkpoints kept per trial (the best by `metric` are kept)
    reuse_actors: bool = True
    wandb: WandbSettings = WandbSettings()
    source: str = ""  # the file it came from, for messages

    @property
    def search_seed(self) -> int:
        return self.optuna.seed if self.optuna.seed is not None else self.seeds.sweep_seed

    @property
    def total_trials(self) -> int:
        return self.num_trials * self.seeds.repeats

    @property
    def epochs(self) -> int:
        return int(self.fixed.get("epochs", TrainConfig.__dataclass_fields__["epochs"].default))

    @property
    def experiment_path(self) -> str:
        """Where Tune keeps this sweep: storage_path/name."""
        return f"{self.storage_path.rstrip('/')}/{self.name}"


def trial_seeds(sweep_seed: int, repeats: int) -> list[int]:
    """The training seed of each repeat: distinct, in [0, 2**31), a pure function of (sweep_seed, r)."""
    return [int(np.random.SeedSequence([sweep_seed, r]).generate_state(1)[0] >> 1) for r in range(repeats)]


def trial_dirname(trial_id: str) -> str:
    """The folder of one trial inside the sweep's experiment dir."""
    return f"trial_{trial_id}"


def base_trial_config(spec: SweepSpec) -> dict[str, Any]:
    """The flat trainer config every trial shares (searched keys and the seed are added per trial)."""
    return {**spec.fixed, "task": spec.task, "data.data_dir": spec.data_dir}


def train_config_from_trial(config: Mapping[str, Any]) -> TrainConfig:
    """A trial's config dict (flat dotted keys, + its repeat index) -> the TrainConfig it trains."""
    return config_from_dict({k: v for k, v in config.items() if k != REPEAT_KEY})


# ----------------------------------------------------------------------------- loading and checking

TOP_LEVEL = {"name", "task", "data_dir", "metric", "mode", "num_trials", "fixed", "search", "searcher",
             "max_concurrent", "resources", "optuna", "asha", "seeds", "storage_path", "max_failures",
             "checkpoint", "reuse_actors", "wandb"}
NESTED = {
    "resources": {"cpu", "gpu"},
    "optuna": {"seed", "points_to_evaluate"},
    "asha": {"max_t", "grace_period", "reduction_factor", "promotion"},
    "seeds": {"sweep_seed", "repeats"},
    "checkpoint": {"num_to_keep"},
    "wandb": {"project", "entity", "mode", "log_checkpoint", "tags", "upload_every_s"},
}
REQUIRED = ("name", "task", "data_dir", "metric", "mode", "num_trials")


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None,
              base_dir: str | Path | None = None) -> SweepSpec:
    """Read and check a sweep spec; `overrides` replace top-level keys (e.g. {"data_dir": ...}).

    Relative local paths (data_dir, storage_path) are made absolute against `base_dir` (default: the
    current directory, which is the repo root under `ray job submit --working-dir .`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sweep spec {path} not found; see sweeps/ for examples")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise SweepSpecError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SweepSpecError(f"{path}: expected a mapping of sweep keys at the top, got {type(raw).__name__}")
    raw = {**raw, **(overrides or {})}
    return spec_from_dict(raw, source=str(path), lines=key_lines(text), base_dir=base_dir)


def spec_from_dict(raw: Mapping[str, Any], source: str = "<dict>", lines: Mapping[str, int] | None = None,
                   base_dir: str | Path | None = None) -> SweepSpec:
    """Check a spec given as a dict (what `load_spec` read) and build the SweepSpec."""
    lines = lines or {}

    def where(key: str) -> str:
        line = lines.get(key) or lines.get(key.split(".")[0])
        return f"{source}, line {line}: " if line else f"{source}: "

    def fail(key: str, message: str) -> SweepSpecError:
        return SweepSpecError(f"{where(key)}{message}")

    _check_known(raw, TOP_LEVEL, "", fail)
    if isinstance(raw.get("wandb"), Mapping) and {"api_key", "key"} & set(raw["wandb"]):
        raise fail("wandb", "never put the W&B key in a spec: export WANDB_API_KEY in the environment instead")
    for section, keys in NESTED.items():
        if raw.get(section) is not None:
            if not isinstance(raw[section], Mapping):
                raise fail(section, f"'{section}' must be a mapping of {', '.join(sorted(keys))}")
            _check_known(raw[section], keys, f"{section}.", fail)
    for key in REQUIRED:
        if raw.get(key) in (None, ""):
            raise fail(key, f"sweep key '{key}' is missing; add it (see sweeps/smoke.yaml)")

    name = _typed(raw, "name", str, fail)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise fail("name", f"sweep key 'name' must use letters, digits, '_', '.', '-' only (it names a folder), got {name!r}")
    task = _one_of(raw, "task", ("cvae", "classifier"), fail)
    mode = _one_of(raw, "mode", ("min", "max"), fail)
    searcher = _one_of(raw, "searcher", SEARCHERS, fail, default="optuna")
    metric = _typed(raw, "metric", str, fail)
    known_metrics = TASK_METRICS[task] + (DISENTANGLEMENT_METRICS + FINAL_METRICS if task == "cvae" else ())
    if metric not in known_metrics:
        close = difflib.get_close_matches(metric, known_metrics, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"a {task} trial reports: {', '.join(known_metrics)}"
        raise fail("metric", f"sweep key 'metric': a {task} trial does not report '{metric}'; {hint}")

    num_trials = _positive_int(raw, "num_trials", fail)
    max_concurrent = _positive_int(raw, "max_concurrent", fail, default=1)
    max_failures = _positive_int(raw, "max_failures", fail, default=2, minimum=0)
    reuse_actors = _typed(raw, "reuse_actors", bool, fail, default=True)
    resources = _resources(raw.get("resources") or {}, fail)
    seeds = SeedSettings(sweep_seed=_positive_int(raw.get("seeds") or {}, "sweep_seed", fail, 0, 0, "seeds."),
                         repeats=_positive_int(raw.get("seeds") or {}, "repeats", fail, 1, 1, "seeds."))
    num_to_keep = _positive_int(raw.get("checkpoint") or {}, "num_to_keep", fail, 2, 1, "checkpoint.")

    data_dir = _local_or_uri(_typed(raw, "data_dir", str, fail), base_dir)
    storage_path = _local_or_uri(_typed(raw, "storage_path", str, fail, default="runs/sweeps"), base_dir)

    fixed = _fixed(raw.get("fixed") or {}, fail)
    search = _search(raw.get("search") or {}, fail)
    if not search:
        raise fail("search", "sweep key 'search' is empty; give at least one trainer key to vary")
    overlap = sorted(set(fixed) & {p.name for p in search})
    if overlap:
        raise fail("search", f"'{overlap[0]}' is both in 'fixed' and in 'search'; keep it in one of them")
    _check_trainer_values(task, data_dir, fixed, search, fail)
    epochs = int(fixed.get("epochs", TrainConfig.__dataclass_fields__["epochs"].default))
    if "epochs" in {p.name for p in search} and raw.get("asha"):
        raise fail("search", "searching 'epochs' together with 'asha' is not supported: ASHA's rungs "
                             "count epochs; fix 'epochs' in 'fixed'")
    if fixed.get("eval_every", 1) != 1:
        raise fail("fixed", "a sweep needs 'eval_every: 1' (every epoch reports the metric to Tune and ASHA)")

    optuna_raw = raw.get("optuna") or {}
    optuna = OptunaSettings(
        seed=_positive_int(optuna_raw, "seed", fail, None, 0, "optuna."),
        points_to_evaluate=_points(optuna_raw.get("points_to_evaluate") or [], search, fail))
    if optuna.points_to_evaluate and len(optuna.points_to_evaluate) > num_trials:
        raise fail("optuna", f"optuna.points_to_evaluate has {len(optuna.points_to_evaluate)} points but "
                             f"num_trials is {num_trials}; raise num_trials or drop points")
    asha = _asha(raw.get("asha"), epochs, fail)
    if metric in FINAL_METRICS:
        if not fixed.get("cvae.final_metrics"):
            raise fail("metric", f"'{metric}' is reported only with 'cvae.final_metrics: true' in 'fixed' "
                                 "(it is computed once, after the last epoch); add it or rank by val/mig_fixed")
        if asha is not None:
            raise fail("asha", f"'{metric}' comes only after a trial's last epoch, so ASHA cannot stop on it; "
                               "set 'asha: null' or rank by val/mig_fixed, which every epoch reports")
    wandb = _wandb(raw.get("wandb") or {}, fail)

    return SweepSpec(name=name, task=task, data_dir=data_dir, metric=metric, mode=mode, num_trials=num_trials,
                     fixed=fixed, search=search, searcher=searcher, max_concurrent=max_concurrent,
                     resources=resources, optuna=optuna, asha=asha, seeds=seeds, storage_path=storage_path,
                     max_failures=max_failures, num_to_keep=num_to_keep, reuse_actors=reuse_actors, wandb=wandb,
                     source=source)


def _check_known(section: Mapping[str, Any], known: set[str], prefix: str, fail) -> None:
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid: {', '.join(sorted(known))}"
            raise fail(f"{prefix}{key}", f"unknown sweep key '{prefix}{key}'; {hint}")


def _typed(raw: Mapping[str, Any], key: str, kind: type, fail, default: Any = None, prefix: str = "") -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise fail(f"{prefix}{key}", f"sweep key '{prefix}{key}' must be {kind.__name__}, got {value!r}")
    return value


def _one_of(raw: Mapping[str, Any], key: str, allowed: Sequence[str], fail, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise fail(key, f"sweep key '{key}' must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _positive_int(raw: Mapping[str, Any], key: str, fail, default: int | None = None, minimum: int = 1,
                  prefix: str = "") -> int | None:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise fail(f"{prefix}{key}", f"sweep key '{prefix}{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _resources(raw: Mapping[str, Any], fail) -> Resources:
    cpu, gpu = raw.get("cpu", 1), raw.get("gpu", 0)
    for key, value in (("cpu", cpu), ("gpu", gpu)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise fail(f"resources.{key}", f"sweep key 'resources.{key}' must be a number >= 0, got {value!r}")
    if cpu <= 0:
        raise fail("resources.cpu", "sweep key 'resources.cpu' must be > 0: a trial with 0 CPUs is never "
                                    "throttled, so fractional-GPU trials would pile up on a node's CPUs")
    if gpu > 1 and gpu != int(gpu):
        raise fail("resources.gpu", f"sweep key 'resources.gpu' above 1 must be a whole number, got {gpu}")
    return Resources(cpu=float(cpu), gpu=float(gpu))


def _wandb(raw: Mapping[str, Any], fail) -> WandbSettings:
    project = _typed(raw, "project", str, fail, default="celeb", prefix="wandb.")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", project):
        raise fail("wandb.project", f"sweep key 'wandb.project' must use letters, digits, '_', '.', '-', got {project!r}")
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise fail("wandb.tags", f"sweep key 'wandb.tags' must be a list of strings, got {tags!r}")
    mode = raw.get("mode", "auto")
    if mode not in WANDB_MODES:
        raise fail("wandb.mode", f"sweep key 'wandb.mode' must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
    upload_every_s = raw.get("upload_every_s", WandbSettings.upload_every_s)
    if isinstance(upload_every_s, bool) or not isinstance(upload_every_s, (int, float)) or upload_every_s <= 0:
        raise fail("wandb.upload_every_s", "sweep key 'wandb.upload_every_s' must be a positive number of seconds, "
                   f"got {upload_every_s!r}")
    return WandbSettings(project=project, entity=_typed(raw, "entity", str, fail, prefix="wandb."), mode=mode,
                         log_checkpoint=_typed(raw, "log_checkpoint", bool, fail, default=False, prefix="wandb."),
                         tags=tuple(tags), upload_every_s=float(upload_every_s))


def _local_or_uri(value: str, base_dir: str | Path | None) -> str:
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (Path(base_dir) if base_dir else Path.cwd()) / path)


def _fixed(raw: Mapping[str, Any], fail) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise fail("fixed", "sweep key 'fixed' must be a mapping of trainer keys")
    fixed = flatten(raw)
    for key in fixed:
        _check_not_owned(key, f"fixed.{key}", fail)
        try:
            validate_keys([key])
        except ConfigError as error:
            raise fail(f"fixed.{key}", f"fixed: {error}") from None
    return fixed


def _check_not_owned(key: str, where: str, fail) -> None:
    if key in OWNED_KEYS:
        raise fail(where, f"{where.split('.')[0]}: trainer key '{key}' is set by the sweep itself; use the "
                          f"sweep key '{OWNED_KEYS[key]}' instead")


def _search(raw: Mapping[str, Any], fail) -> tuple[Param, ...]:
    if not isinstance(raw, Mapping):
        raise fail("search", "sweep key 'search' must be a mapping of trainer key -> {type: ..., ...}")
    params = []
    for name, body in _search_entries(raw):
        _check_not_owned(name, f"search.{name}", fail)
        try:
            validate_keys([name])
        except ConfigError as error:
            raise fail(f"search.{name}", f"search: {error}") from None
        params.append(_param(name, body, fail))
    return tuple(params)


def _search_entries(raw: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted or nested keys down to each {type: ...} mapping."""
    entries = []
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "type" not in value:
            entries += _search_entries(value, f"{name}.")
        else:
            entries.append((name, value))
    return entries


def _param(name: str, body: Any, fail) -> Param:
    where, key = f"search: '{name}'", f"search.{name}"
    if not isinstance(body, Mapping) or "type" not in body:
        raise fail(key, f"{where} must be a mapping like {{type: loguniform, low: 1e-4, high: 1e-2}} "
                             f"or {{type: choice, values: [...]}}")
    kind = body["type"]
    if kind not in PARAM_TYPES:
        raise fail(key, f"{where}: unknown type {kind!r}; use one of {', '.join(PARAM_TYPES)}")
    allowed = {"type", "values"} if kind == "choice" else {"type", "low", "high"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise fail(key, f"{where}: unknown field '{extra[0]}' for type {kind}; it takes {', '.join(sorted(allowed))}")
    if kind == "choice":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise fail(key, f"{where}: 'values' must be a non-empty list")
        return Param(name, kind, values=tuple(values))
    low, high = (_number(body.get(k), f"{where}: '{k}'", kind == "int", fail, key) for k in ("low", "high"))
    if not low < high:
        raise fail(key, f"{where}: needs low < high, got low={low}, high={high}")
    if kind == "loguniform" and low <= 0:
        raise fail(key, f"{where}: loguniform needs low > 0, got {low}")
    return Param(name, kind, low=low, high=high)


def _number(value: Any, what: str, integer: bool, fail, key: str = "search") -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(key, f"{what} must be an integer, got {value!r}")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise fail(key, f"{what} must be a number, got {value!r}")
    return float(value)


def _check_trainer_values(task: str, data_dir: str, fixed: dict[str, Any], search: Sequence[Param], fail) -> None:
    """Build the trainer config at every corner of the space, so bad values fail now, not in a trial."""
    base = {**fixed, "task": task, "data.data_dir": data_dir}
    try:
        config_from_dict(base)
    except ConfigError as error:
        raise fail("fixed", f"fixed: {error}") from None
    for param in search:
        for value in param.corners():
            try:
                config_from_dict({**base, param.name: value})
            except ConfigError as error:
                raise fail(f"search.{param.name}", f"search: '{param.name}' value {value!r}: {error}") from None


def _points(raw: Any, search: Sequence[Param], fail) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        raise fail("optuna.points_to_evaluate", "optuna.points_to_evaluate must be a list of {key: value} mappings")
    params = {p.name: p for p in search}
    points = []
    for i, point in enumerate(raw):
        if not isinstance(point, Mapping):
            raise fail("optuna.points_to_evaluate", f"optuna.points_to_evaluate[{i}] must be a mapping")
        point = flatten(point)
        unknown = sorted(set(point) - set(params))
        missing = sorted(set(params) - set(point))
        if unknown or missing:
            what = f"'{unknown[0]}' is not a searched key" if unknown else f"it lacks '{missing[0]}'"
            raise fail("optuna.points_to_evaluate", f"optuna.points_to_evaluate[{i}]: {what}; a point gives "
                                                    f"a value to each searched key: {', '.join(params)}")
        for key, value in point.items():
            if isinstance(value, str) and params[key].type != "choice":
                value = _number(value, f"optuna.points_to_evaluate[{i}].{key}", params[key].type == "int", fail,
                                "optuna.points_to_evaluate")
                point[key] = value
            if not params[key].contains(value):
                raise fail("optuna.points_to_evaluate", f"optuna.points_to_evaluate[{i}]: {key}={value!r} is "
                                                        f"outside the space ({params[key].describe()})")
        points.append(point)
    return tuple(points)


def _asha(raw: Any, epochs: int, fail) -> AshaSettings | None:
    if raw is None or raw is False:
        return None
    max_t = _positive_int(raw, "max_t", fail, epochs, 1, "asha.")
    grace = _positive_int(raw, "grace_period", fail, 1, 1, "asha.")
    factor = _positive_int(raw, "reduction_factor", fail, 3, 2, "asha.")
    if max_t > epochs:
        raise fail("asha", f"asha.max_t ({max_t}) is more than the trials' epochs ({epochs}); a trial ends "
                           "at its last epoch, so set asha.max_t <= fixed.epochs")
    if grace > max_t:
        raise fail("asha", f"asha.grace_period ({grace}) must be <= asha.max_t ({max_t})")
    promotion = raw.get("promotion", "quota")
    if promotion not in PROMOTIONS:
        raise fail("asha.promotion", f"sweep key 'asha.promotion' must be one of {', '.join(PROMOTIONS)}, "
                                     f"got {promotion!r}")
    return AshaSettings(max_t=max_t, grace_period=grace, reduction_factor=factor, promotion=promotion)


# ----------------------------------------------------------------------------- describing and ranking


def describe(spec: SweepSpec) -> str:
    """A few lines saying what the sweep will do, printed by the driver before it starts."""
    asha = (f"ASHA (max_t {spec.asha.max_t}, grace {spec.asha.grace_period}, "
            f"reduction {spec.asha.reduction_factor}, {spec.asha.promotion} promotion)" if spec.asha
            else "no early stopping")
    seeds = trial_seeds(spec.seeds.sweep_seed, spec.seeds.repeats)
    lines = [f"sweep '{spec.name}' ({spec.task}) from {spec.source}: {spec.num_trials} configs x "
             f"{spec.seeds.repeats} seed(s) = {spec.total_trials} trials, {spec.max_concurrent} at a time, "
             f"each {spec.resources.cpu:g} CPU + {spec.resources.gpu:g} GPU",
             f"  search: {spec.searcher} (seed {spec.search_seed}); {asha}; {spec.mode} {spec.metric}",
             f"  training seeds: {seeds} (sweep_seed {spec.seeds.sweep_seed})",
             *(f"  {p.describe()}" for p in spec.search),
             f"  results: {spec.experiment_path}"]
    return "\n".join(lines)


RANK_COLUMNS = ["rank", "trial_id", "status", "config_id", "repeat", "seed", "best", "best_epoch",
                "epochs_run", "checkpoint", "error"]


def rank_trials(rows: Sequence[Mapping[str, Any]], metric: str, mode: str) -> pd.DataFrame:
    """One row per trial, best first: searched params, best `metric`, epochs run, best checkpoint.

    Each row gives trial_id, status, params (dict of searched values), seed, repeat, best (the best
    value of the metric over its epochs, None if it never reported), best_epoch, epochs_run,
    checkpoint and error. Trials without a value sort last. `config_id` numbers the distinct configs,
    so the repeats of one config share it.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    param_names = sorted({k for row in rows for k in row.get("params", {})})
    records = []
    config_ids: dict[tuple, int] = {}
    for row in rows:
        params = row.get("params", {})
        key = tuple(repr(params.get(k)) for k in param_names)
        config_ids.setdefault(key, len(config_ids))
        best = row.get("best")
        records.append({
            "trial_id": row["trial_id"], "status": row.get("status", ""), "config_id": config_ids[key],
            "repeat": row.get("repeat", 0), "seed": row.get("seed"),
            "best": float(best) if best is not None and math.isfinite(float(best)) else math.nan,
            "best_epoch": row.get("best_epoch"), "epochs_run": row.get("epochs_run", 0),
            "checkpoint": row.get("checkpoint") or "", "error": row.get("error") or "",
            **{name: params.get(name) for name in param_names}})
    columns = RANK_COLUMNS[1:4] + param_names + RANK_COLUMNS[4:]
    table = pd.DataFrame.from_records(records, columns=columns)
    table = table.sort_values("best", ascending=mode == "min", na_position="last", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table.attrs["metric"] = metric
    return table.reset_index(drop=True)


def summarize_configs(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Configs ranked by the mean of their repeats' best values (mean, std, n), from `rank_trials`."""
    param_names = [c for c in table.columns if c not in RANK_COLUMNS]
    grouped = table.groupby("config_id", sort=False)
    summary = grouped[param_names].first()
    summary["mean"] = grouped["best"].mean()
    summary["std"] = grouped["best"].std(ddof=1)
    summary["n"] = grouped["best"].count()
    summary = summary.sort_values("mean", ascending=mode == "min", na_position="last", kind="stable")
    return summary.reset_index()


def format_table(table: pd.DataFrame, max_rows: int = 20) -> str:
    """The ranking as aligned text for the terminal (long columns shortened)."""
    shown = table.drop(columns=[c for c in ("error", "checkpoint") if c in table.columns]).head(max_rows)
    return shown.to_string(index=False, float_format=lambda v: f"{v:.5g}")
