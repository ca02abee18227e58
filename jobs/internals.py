"""The only place this project reaches into Ray Tune's internals, each where no public API exists.

Ray is pinned to its minor version in pyproject.toml for these; `check_internals` (run by the test
suite) fails with a message naming the one that moved when an upgrade changes any of them.

- OptunaSearch's study and its per-trial Optuna trials (`_ot_study`, `_ot_trials`,
  `_completed_trials`): SeededOptunaSearch tells Optuna about repeats and pruning through them.
- A scheduler's bookkeeping (`__dict__`): Tune does not checkpoint schedulers, so SchedulerState
  saves and restores it through a Tune callback.
- `ray._private.ray_constants.ENABLE_RAY_CLUSTER`: the in-process copy of the flag that keeps a
  local Ray's ports on 127.0.0.1.
- The controller's `_set_trial_status`, which Tune hands to schedulers (it is on the scheduler's
  whitelist, and HyperBandScheduler uses it): Tune starts every PENDING trial by itself, so
  PromotionASHA marks a trial that waits at a rung PAUSED again when a resume has made it PENDING.
"""

from __future__ import annotations

from typing import Any

import optuna
import ray
import ray._private.ray_constants as ray_constants
from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

__all__ = ["bind_local_ray_to_loopback", "check_internals", "completed_trials", "optuna_study", "optuna_trial",
           "restore_scheduler_state", "scheduler_state", "set_trial_status"]


def optuna_study(searcher: OptunaSearch) -> Any:
    """The optuna.Study behind a Tune OptunaSearch."""
    return searcher._ot_study


def optuna_trial(searcher: OptunaSearch, trial_id: str) -> Any:
    """The optuna.Trial that a Tune trial's config was asked from."""
    return searcher._ot_trials[trial_id]


def completed_trials(searcher: OptunaSearch) -> set[str]:
    """The Tune trial ids the searcher has already told Optuna about (mutable: add to mark one told)."""
    return searcher._completed_trials


def scheduler_state(scheduler: ASHAScheduler) -> dict[str, Any]:
    """Everything the scheduler has recorded (rungs, counters), as Tune's callback state can pickle it."""
    return dict(scheduler.__dict__)


def restore_scheduler_state(scheduler: ASHAScheduler, state: dict[str, Any]) -> None:
    scheduler.__dict__.update(state)


def bind_local_ray_to_loopback() -> None:
    """Ray binds its gRPC ports to loopback only with multi-node clusters off; it reads the flag
    once, at import, so this process's copy is set too (the environment variable covers the
    processes Ray starts)."""
    ray_constants.ENABLE_RAY_CLUSTER = False


def set_trial_status(tune_controller: Any, trial: Any, status: str) -> None:
    """Set a trial's status as a scheduler may (Tune's status sets follow it)."""
    tune_controller._set_trial_status(trial, status)


def check_internals() -> None:
    """Raise RuntimeError naming each internal above that this Ray no longer has."""
    scheduler = ASHAScheduler(time_attr="epoch", max_t=3, grace_period=1, reduction_factor=3)
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min")
    missing = [name for name, ok in [
        ("ASHAScheduler._brackets (its rungs, saved by SchedulerState)",
         isinstance(scheduler_state(scheduler).get("_brackets"), list)),
        ("OptunaSearch._ot_study", hasattr(searcher, "_ot_study")),
        ("OptunaSearch._ot_trials", isinstance(getattr(searcher, "_ot_trials", None), dict)),
        ("OptunaSearch._completed_trials", isinstance(getattr(searcher, "_completed_trials", None), set)),
        ("ray._private.ray_constants.ENABLE_RAY_CLUSTER", hasattr(ray_constants, "ENABLE_RAY_CLUSTER")),
        ("TuneController._set_trial_status", callable(getattr(TuneController, "_set_trial_status", None))),
    ] if not ok]
    if missing:
        raise RuntimeError(f"Ray {ray.__version__} changed internals jobs/internals.py uses: {', '.join(missing)}; "
                           "pin ray back to the version in pyproject.toml or port jobs/internals.py")
