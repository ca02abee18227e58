"""A hyper-parameter sweep, described without Ray: the spec file, its checks and the seed policy.

A sweep spec (sweeps/*.yaml) says what to train (`task`, `fixed` trainer values), what to vary
(`search`: one distribution per trainer key), how to judge it (`metric`, `mode`), how much to spend
(`num_trials`, `max_concurrent`, `resources`, `asha`), how to seed it (`seeds`, `optuna.seed`) and
where results go (`storage_path`, `name`). `load_spec` turns it into a checked `SweepSpec` through
the same typed-dataclass mechanism as trainer configs (celeb.typed), then checks what spans keys
(`check_spec`): the metric against what the task's adapter declares it reports, every corner of the
space against the trainer's own checks, ASHA against the epochs. Every problem is an error naming
the file, the line and the key, raised on the driver before any trial starts. jobs/sweep.py turns
a `SweepSpec` into a Ray Tune run; this module never imports Ray.

Seed policy ("fixed random seeds"): a sweep has one `sweep_seed`. Each sampled config is trained
`repeats` times, with seeds `trial_seeds(sweep_seed, repeats)`; the r-th repeat of every config
uses the same seed, so configs are compared on the same random draws (paired comparisons). The
searcher's own seed (`optuna.seed`) defaults to the sweep seed.

Tracking (`wandb`): every trial is one W&B run in the project, grouped by sweep name, written by the
driver from the trial's folder (celeb.records); `mode: auto` uploads when WANDB_API_KEY is in the
environment and keeps the records offline otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from celeb.config import LATENT_TASKS, TrainConfig, config_from_dict, validate_keys
from celeb.evaluation.kl_weight import HELD_OUT_TEXT, KL_WEIGHT_KEYS, depends_on_kl_weight
from celeb.models.memory import CONTEXT_BYTES, MemoryEstimate, estimate_training_memory
from celeb.records import WANDB_MODES
from celeb.seeds import trial_seeds
from celeb.training.fused import ARCHITECTURE_KEYS, check_fusable
from celeb.training.tasks import TASKS
from celeb.typed import ConfigError, Source, above, at_least, build, flatten, read_yaml_mapping

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
REPEAT_KEY = "repeat"  # the one key in a trial's config that is not a trainer key: its repeat index
OWNED_KEYS = {"seed": "seeds.sweep_seed", "task": "task", "data.data_dir": "data_dir"}  # set by the spec itself
NAME = re.compile(r"[A-Za-z0-9_.-]+")


class SweepSpecError(ConfigError):
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
    cpu: float = field(default=1.0, metadata=above(0))  # 0 CPUs is never throttled: trials would pile up
    gpu: float = field(default=0.0, metadata=at_least(0))  # fractional GPUs (0.25) pack trials; memory is shared
    gpu_memory_gb: float | None = field(default=None, metadata=above(0))  # per GPU: packed trials must fit in it
    # > 1: up to this many trials of one architecture train as one fused model per GPU (cvae only);
    # cpu and gpu are then each fused group's, and a group drops a member silent for fuse_wait_s
    fuse: int = field(default=1, metadata=at_least(1))
    fuse_wait_s: float = field(default=60.0, metadata=above(0))

    def __post_init__(self) -> None:
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError(f"sweep key 'resources.gpu' above 1 must be a whole number, got {self.gpu}", "gpu")


@dataclass(frozen=True)
class OptunaSettings:
    seed: int | None = field(default=None, metadata=at_least(0))  # None: the sweep seed
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # configs tried first (searched keys only)


@dataclass(frozen=True)
class AshaSettings:
    max_t: int | None = field(default=None, metadata=at_least(1))  # epochs of a full trial; None: the epochs
    grace_period: int = field(default=1, metadata=at_least(1))  # epochs every trial gets before it can stop
    reduction_factor: int = field(default=3, metadata=at_least(2))  # keep the top 1/reduction_factor per rung
    # "pause": ASHA as Li et al. (2020) wrote it (jobs.search.PromotionASHA): a trial that reaches a
    # rung waits there, paused with its checkpoint, and goes on as soon as it is among the rung's top
    # 1/reduction_factor; "percentile": Ray's ASHAScheduler, which never pauses: a trial above the
    # rung's current percentile goes on, any other stops for good.
    promotion: Literal["pause", "percentile"] = "pause"


@dataclass(frozen=True)
class WandbSettings:
    project: str = "celeb"
    entity: str | None = None  # None: the account's default entity
    mode: Literal[WANDB_MODES] = "auto"  # auto: online iff WANDB_API_KEY is set
    log_checkpoint: bool = False  # upload each trial's best checkpoint as a model artifact at its end
    tags: tuple[str, ...] = ()
    upload_every_s: float = field(default=300.0, metadata=above(0))  # online: upload at least this often

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.project):
            raise ConfigError("sweep key 'wandb.project' must use letters, digits, '_', '.', '-', "
                              f"got {self.project!r}", "project")


@dataclass(frozen=True)
class SeedSettings:
    sweep_seed: int = field(default=0, metadata=at_least(0))
    repeats: int = field(default=1, metadata=at_least(1))  # trainings per config: seeds trial_seeds(sweep_seed, r)


@dataclass(frozen=True)
class CheckpointSettings:
    num_to_keep: int = field(default=2, metadata=at_least(1))  # checkpoints kept per trial (the best by metric)


def _parse_fixed(raw: Any, key: str) -> dict[str, Any]:
    """`fixed:`: trainer keys, nested or dotted, that every trial shares."""
    if not isinstance(raw, Mapping):
        raise ConfigError("sweep key 'fixed' must be a mapping of trainer keys", key)
    fixed = flatten(raw)
    for name in fixed:
        _check_trainer_key(name, "fixed")
    return fixed


def _parse_search(raw: Any, key: str) -> tuple[Param, ...]:
    """`search:`: one distribution per trainer key (nested or dotted keys down to each {type: ...})."""
    if not isinstance(raw, Mapping):
        raise ConfigError("sweep key 'search' must be a mapping of trainer key -> {type: ..., ...}", key)
    params = []
    for name, body in _search_entries(raw):
        _check_trainer_key(name, "search")
        params.append(_param(name, body))
    return tuple(params)


def _check_trainer_key(name: str, section: str) -> None:
    key = f"{section}.{name}"
    if name in OWNED_KEYS:
        raise ConfigError(f"{section}: trainer key '{name}' is set by the sweep itself; use the sweep key "
                          f"'{OWNED_KEYS[name]}' instead", key)
    try:
        validate_keys([name])
    except ConfigError as error:
        raise ConfigError(f"{section}: {error}", key) from None


@dataclass(frozen=True)
class SweepSpec:
    name: str
    task: Literal[tuple(TASKS)]
    data_dir: str  # absolute path (or URI) on the nodes that run trials
    metric: str
    mode: Literal["min", "max"]
    num_trials: int = field(metadata=at_least(1))  # sampled configs; Tune runs num_trials * seeds.repeats trials
    fixed: dict[str, Any] = field(default_factory=dict, metadata={"parse": _parse_fixed})  # flat dotted keys
    search: tuple[Param, ...] = field(default=(), metadata={"parse": _parse_search})
    searcher: Literal["optuna", "random"] = "optuna"
    max_concurrent: int = field(default=1, metadata=at_least(1))
    resources: Resources = Resources()
    optuna: OptunaSettings = OptunaSettings()
    asha: AshaSettings | None = None  # None: every trial runs its full epochs
    seeds: SeedSettings = SeedSettings()
    storage_path: str = "runs/sweeps"  # local dir (made absolute), s3://... or gs://...
    max_failures: int = field(default=2, metadata=at_least(0))  # retries of a failing trial, from its checkpoint
    checkpoint: CheckpointSettings = CheckpointSettings()
    reuse_actors: bool = True
    wandb: WandbSettings = WandbSettings()
    source: str = field(default="", metadata={"parse": lambda value, key: _not_a_key(key)})  # for messages

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ConfigError("sweep key 'name' must use letters, digits, '_', '.', '-' only (it names a folder), "
                              f"got {self.name!r}", "name")

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


def _not_a_key(key: str) -> None:
    raise ConfigError(f"'{key}' is not a sweep key (it records the spec's file)", key)


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


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None,
              base_dir: str | Path | None = None) -> SweepSpec:
    """Read and check a sweep spec; `overrides` replace top-level keys (e.g. {"data_dir": ...}).

    Relative local paths (data_dir, storage_path) are made absolute against `base_dir` (default: the
    current directory, which is the repo root under `ray job submit --working-dir .`).
    """
    try:
        raw, source = read_yaml_mapping(path, "sweeps/")
    except ConfigError as error:
        raise SweepSpecError(str(error)) from None
    return spec_from_dict({**raw, **(overrides or {})}, source, base_dir=base_dir)


def spec_from_dict(raw: Mapping[str, Any], source: Source | str = "<dict>",
                   base_dir: str | Path | None = None) -> SweepSpec:
    """Check a spec given as a dict (what `load_spec` read) and build the SweepSpec."""
    source = source if isinstance(source, Source) else Source(source)
    try:
        if isinstance(raw.get("wandb"), Mapping) and {"api_key", "key"} & set(raw["wandb"]):
            raise ConfigError("never put the W&B key in a spec: export WANDB_API_KEY in the environment instead",
                              "wandb")
        raw = {k: v for k, v in raw.items() if v not in (None, "")}  # "asha:" left empty: its default
        spec = build(SweepSpec, raw, noun="sweep")
        spec = dataclasses.replace(spec, source=source.name, data_dir=_local_or_uri(spec.data_dir, base_dir),
                                   storage_path=_local_or_uri(spec.storage_path, base_dir))
        return check_spec(spec)
    except ConfigError as error:
        message = source.describe(error)
        if "is missing" in message:
            message += " (see sweeps/smoke.yaml)"
        raise SweepSpecError(message, error.key) from None


def check_spec(spec: SweepSpec) -> SweepSpec:
    """What spans keys: the metric against what the task reports, the space against the trainer's
    config checks, ASHA against the epochs; returns the spec with ASHA's max_t and the points set."""
    _check_metric(spec)
    if not spec.search:
        raise ConfigError("sweep key 'search' is empty; give at least one trainer key to vary", "search")
    overlap = sorted(set(spec.fixed) & {p.name for p in spec.search})
    if overlap:
        raise ConfigError(f"'{overlap[0]}' is both in 'fixed' and in 'search'; keep it in one of them", "search")
    _check_trainer_values(spec)
    if "epochs" in {p.name for p in spec.search} and spec.asha is not None:
        raise ConfigError("searching 'epochs' together with 'asha' is not supported: ASHA's rungs count epochs; "
                          "fix 'epochs' in 'fixed'", "search")
    if spec.fixed.get("eval_every", 1) != 1:
        raise ConfigError("a sweep needs 'eval_every: 1' (every epoch reports the metric to Tune and ASHA)", "fixed")
    points = _points(spec.optuna.points_to_evaluate, spec.search)
    if len(points) > spec.num_trials:
        raise ConfigError(f"optuna.points_to_evaluate has {len(points)} points but num_trials is "
                          f"{spec.num_trials}; raise num_trials or drop points", "optuna")
    spec = dataclasses.replace(spec, optuna=dataclasses.replace(spec.optuna, points_to_evaluate=points))
    _check_fusion(spec)
    _check_packing(spec)
    return dataclasses.replace(spec, asha=_checked_asha(spec))


def trials_per_gpu(spec: SweepSpec) -> int:
    """How many trials share one GPU: a fused group's, or those Ray packs when resources.gpu is a fraction."""
    if spec.resources.fuse > 1:
        return spec.resources.fuse
    return math.floor(1 / spec.resources.gpu + 1e-9) if 0 < spec.resources.gpu < 1 else 1


def _check_fusion(spec: SweepSpec) -> None:
    """Fused trials must share their architecture (celeb.training.fused.ARCHITECTURE_KEYS)."""
    if spec.resources.fuse == 1:
        return
    if spec.task != "cvae":
        raise ConfigError(f"resources.fuse trains CVAEs only; a {spec.task} sweep needs fuse: 1", "resources")
    searched = sorted({p.name for p in spec.search} & set(ARCHITECTURE_KEYS))
    if searched:
        raise ConfigError(f"'{searched[0]}' cannot be searched with resources.fuse > 1: fused trials share "
                          f"{', '.join(ARCHITECTURE_KEYS)}; fix it, or set fuse: 1", "search")
    if spec.resources.gpu != int(spec.resources.gpu):
        raise ConfigError("a fused group takes whole GPUs (resources.gpu 0 or 1); fusing is packing "
                          "without the processes", "resources")
    try:
        check_fusable([config_from_dict(base_trial_config(spec) | {"seed": 0})])
    except ValueError as error:
        raise ConfigError(f"resources.fuse: {error}", "fixed") from None


def largest_trial_memory(spec: SweepSpec) -> MemoryEstimate:
    """The GPU memory estimate of the hungriest trial the space allows: each searched key at the
    corner that needs the most, all at once (memory grows with width, batch and image size)."""
    base = base_trial_config(spec)
    worst: dict[str, Any] = {}
    for param in spec.search:
        worst[param.name] = max(param.corners(), key=lambda v: estimate_training_memory(
            config_from_dict({**base, param.name: v})).total)
    return estimate_training_memory(config_from_dict({**base, **worst}))


def _check_packing(spec: SweepSpec) -> None:
    """Refuse packed trials that would not fit the GPU's memory together (when it is given)."""
    if spec.resources.gpu_memory_gb is None or trials_per_gpu(spec) == 1:
        return
    per_trial, packed = largest_trial_memory(spec), trials_per_gpu(spec)
    need, have = packed * per_trial.total, spec.resources.gpu_memory_gb * 1e9
    if spec.resources.fuse > 1:  # one process: one CUDA context for the group
        need -= (packed - 1) * CONTEXT_BYTES
    if need > have:
        how = f"resources.fuse {packed} fuses" if spec.resources.fuse > 1 else f"resources.gpu {spec.resources.gpu:g} packs"
        raise ConfigError(f"{how} {packed} trials per GPU, which would need "
                          f"{need / 1e9:.1f} GB of its {spec.resources.gpu_memory_gb:g} GB: the largest trial of the "
                          f"space takes {per_trial.describe()}; give each trial more of a GPU, or a smaller "
                          "batch_size or width", "resources")


def _check_metric(spec: SweepSpec) -> None:
    task = TASKS[spec.task]
    known = task.epoch_metrics + task.final_metrics
    if spec.metric not in known:
        close = difflib.get_close_matches(spec.metric, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"a {spec.task} trial reports: {', '.join(known)}"
        raise ConfigError(f"sweep key 'metric': a {spec.task} trial does not report '{spec.metric}'; {hint}", "metric")
    kl_weights = sorted({p.name for p in spec.search} & set(KL_WEIGHT_KEYS))
    if spec.task in LATENT_TASKS and kl_weights and depends_on_kl_weight(spec.metric):
        raise ConfigError(
            f"sweep key 'metric': '{spec.metric}' depends on the KL weight, and this sweep searches "
            f"'{kl_weights[0]}', so it would rank the KL weight by how the metric is defined (a smaller β "
            f"lowers val/loss by itself; val/neg_elbo favours β near 1), not by how good the model is. "
            f"Rank by a held-out metric instead: {HELD_OUT_TEXT}", "metric")
    if spec.metric == "val/bits_per_dim" and (spec.fixed.get("cvae.recon", "bce") != "logistic"
                                             or "cvae.recon" in {p.name for p in spec.search}):
        raise ConfigError("'val/bits_per_dim' is a likelihood bound only with the discretised logistic: fix "
                          "'cvae.recon: logistic' in 'fixed' (with bce or mse it is not comparable)", "metric")
    if spec.metric in task.final_metrics:
        if not spec.fixed.get("cvae.final_metrics"):
            raise ConfigError(f"'{spec.metric}' is reported only with 'cvae.final_metrics: true' in 'fixed' "
                              "(it is computed once, after the last epoch); add it or rank by val/mig_fixed", "metric")
        if spec.asha is not None:
            raise ConfigError(f"'{spec.metric}' comes only after a trial's last epoch, so ASHA cannot stop on it; "
                              "set 'asha: null' or rank by val/mig_fixed, which every epoch reports", "asha")


def _checked_asha(spec: SweepSpec) -> AshaSettings | None:
    asha = spec.asha
    if asha is None:
        return None
    max_t = spec.epochs if asha.max_t is None else asha.max_t
    if max_t > spec.epochs:
        raise ConfigError(f"asha.max_t ({max_t}) is more than the trials' epochs ({spec.epochs}); a trial ends "
                          "at its last epoch, so set asha.max_t <= fixed.epochs", "asha")
    if asha.grace_period > max_t:
        raise ConfigError(f"asha.grace_period ({asha.grace_period}) must be <= asha.max_t ({max_t})", "asha")
    return dataclasses.replace(asha, max_t=max_t)


def _local_or_uri(value: str, base_dir: str | Path | None) -> str:
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (Path(base_dir) if base_dir else Path.cwd()) / path)


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


def _param(name: str, body: Any) -> Param:
    where, key = f"search: '{name}'", f"search.{name}"
    if not isinstance(body, Mapping) or "type" not in body:
        raise ConfigError(f"{where} must be a mapping like {{type: loguniform, low: 1e-4, high: 1e-2}} "
                          f"or {{type: choice, values: [...]}}", key)
    kind = body["type"]
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}: unknown type {kind!r}; use one of {', '.join(PARAM_TYPES)}", key)
    allowed = {"type", "values"} if kind == "choice" else {"type", "low", "high"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown field '{extra[0]}' for type {kind}; it takes "
                          f"{', '.join(sorted(allowed))}", key)
    if kind == "choice":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: 'values' must be a non-empty list", key)
        return Param(name, kind, values=tuple(values))
    low, high = (_number(body.get(k), f"{where}: '{k}'", kind == "int", key) for k in ("low", "high"))
    if not low < high:
        raise ConfigError(f"{where}: needs low < high, got low={low}, high={high}", key)
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {low}", key)
    return Param(name, kind, low=low, high=high)


def _number(value: Any, what: str, integer: bool, key: str) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{what} must be an integer, got {value!r}", key)
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a number, got {value!r}", key)
    return float(value)


def _check_trainer_values(spec: SweepSpec) -> None:
    """Build the trainer config at every corner of the space, so bad values fail now, not in a trial."""
    base = base_trial_config(spec)
    try:
        config_from_dict(base)
    except ConfigError as error:
        raise ConfigError(f"fixed: {error}", "fixed") from None
    for param in spec.search:
        for value in param.corners():
            try:
                config_from_dict({**base, param.name: value})
            except ConfigError as error:
                raise ConfigError(f"search: '{param.name}' value {value!r}: {error}", f"search.{param.name}") from None


def _points(raw: Sequence[Any], search: Sequence[Param]) -> tuple[dict[str, Any], ...]:
    key = "optuna.points_to_evaluate"
    params = {p.name: p for p in search}
    points = []
    for i, point in enumerate(raw):
        if not isinstance(point, Mapping):
            raise ConfigError(f"{key}[{i}] must be a mapping", key)
        point = flatten(point)
        unknown = sorted(set(point) - set(params))
        missing = sorted(set(params) - set(point))
        if unknown or missing:
            what = f"'{unknown[0]}' is not a searched key" if unknown else f"it lacks '{missing[0]}'"
            raise ConfigError(f"{key}[{i}]: {what}; a point gives a value to each searched key: "
                              f"{', '.join(params)}", key)
        for name, value in point.items():
            if isinstance(value, str) and params[name].type != "choice":
                value = _number(value, f"{key}[{i}].{name}", params[name].type == "int", key)
                point[name] = value
            if not params[name].contains(value):
                raise ConfigError(f"{key}[{i}]: {name}={value!r} is outside the space ({params[name].describe()})",
                                  key)
        points.append(point)
    return tuple(points)


# ----------------------------------------------------------------------------- describing


def describe(spec: SweepSpec) -> str:
    """A few lines saying what the sweep will do, printed by the driver before it starts."""
    asha = (f"ASHA (max_t {spec.asha.max_t}, grace {spec.asha.grace_period}, "
            f"reduction {spec.asha.reduction_factor}, {spec.asha.promotion} promotion)" if spec.asha
            else "no early stopping")
    seeds = trial_seeds(spec.seeds.sweep_seed, spec.seeds.repeats)
    packing = []
    if trials_per_gpu(spec) > 1:
        how = "fused as one model" if spec.resources.fuse > 1 else "as processes"
        packed = (f"{trials_per_gpu(spec)} trials per GPU {how}, the largest "
                  f"~{largest_trial_memory(spec).total / 1e9:.1f} GB each")
        packing = [f"  packing: {packed}" + ("" if spec.resources.gpu_memory_gb else
                                                "; set resources.gpu_memory_gb to have it checked")]
    lines = [f"sweep '{spec.name}' ({spec.task}) from {spec.source}: {spec.num_trials} configs x "
             f"{spec.seeds.repeats} seed(s) = {spec.total_trials} trials, {spec.max_concurrent} at a time, "
             f"each {spec.resources.cpu:g} CPU + {spec.resources.gpu:g} GPU",
             f"  search: {spec.searcher} (seed {spec.search_seed}); {asha}; {spec.mode} {spec.metric}",
             f"  training seeds: {seeds} (sweep_seed {spec.seeds.sweep_seed})",
             *(f"  {p.describe()}" for p in spec.search), *packing,
             f"  results: {spec.experiment_path}"]
    return "\n".join(lines)
