"""The sweep's searcher and scheduler: what proposes configs and what stops trials early.

- `SeededOptunaSearch`: Tune's OptunaSearch, training each suggestion once per fixed seed, and
  telling Optuna that ASHA-stopped trials were PRUNED (Ray's tells it COMPLETE with an early value).
- `QuotaBracket`: ASHA's bracket with a bounded promotion rule (`asha.promotion: quota`).
- `SchedulerState`: a Tune callback that checkpoints the scheduler's rungs, which Tune does not.
- `make_searcher`, `make_scheduler`, `search_space`: a SweepSpec -> Tune's search algorithm,
  scheduler and param space.
What this needs of Tune's internals goes through jobs.internals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from celeb.seeds import trial_seeds
from celeb.sweep.spec import SweepSpec, base_trial_config
from jobs import internals

TIME_ATTR = "epoch"  # ASHA's clock: the trainer's own epoch count, which survives restarts


class SeededOptunaSearch(OptunaSearch):
    """OptunaSearch that trains each suggestion once per fixed seed, and tells Optuna about pruning.

    - Repeats: a suggestion becomes `len(seeds)` trials, the r-th with config["seed"] = seeds[r].
      Optuna sees one trial: its intermediate values come from the first repeat, its value is the
      mean of the repeats' final values.
    - Pruning: a trial that ended before `full_epochs` (stopped by ASHA) is told to Optuna as PRUNED,
      so TPE ranks it by its intermediate values instead of treating an early value as final. (A
      trial the trainer's own early stopping ended is short too, and is told PRUNED as well.)
    Its state (the study and the groups) is pickled by Tune with the experiment, so `--resume` keeps it.
    """

    def __init__(self, seeds: list[int], full_epochs: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._seeds = list(seeds)
        self._full_epochs = full_epochs
        self._primary_of: dict[str, str] = {}  # trial id -> the first trial of its group
        self._members: dict[str, list[str]] = {}  # first trial id -> trial ids of the group
        self._group_config: dict[str, dict] = {}
        self._outcomes: dict[str, dict[str, tuple[str, float | None]]] = {}
        self._open_group: str | None = None
        self._reported: dict[str, set[int]] = {}  # steps already given to Optuna, per trial

    def suggest(self, trial_id: str) -> dict | None:
        group = self._open_group
        if group is None or len(self._members[group]) == len(self._seeds):
            config = super().suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            group = self._open_group = trial_id
            self._members[group], self._group_config[group] = [], config
        self._members[group].append(trial_id)
        self._primary_of[trial_id] = group
        return {**self._group_config[group], "seed": self._seeds[len(self._members[group]) - 1]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._primary_of.get(trial_id) == trial_id and trial_id not in internals.completed_trials(self):
            self._report_intermediate(trial_id, result)

    def _report_intermediate(self, trial_id: str, result: dict) -> None:
        # step = the trainer's epoch, so a restarted trial re-reports the same steps, not new ones
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        reported = self._reported.setdefault(trial_id, set())
        if value is not None and math.isfinite(value) and step is not None and int(step) not in reported:
            internals.optuna_trial(self, trial_id).report(float(value), int(step))
            reported.add(int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group = self._primary_of.get(trial_id)
        if group is None or group in internals.completed_trials(self):
            return
        value = (result or {}).get(self.metric)
        if error or value is None or not math.isfinite(value):
            state = "fail"
        elif self._full_epochs is not None and (result or {}).get(TIME_ATTR, self._full_epochs) < self._full_epochs:
            state = "pruned"
        else:
            state = "complete"
        if trial_id == group and result:
            self._report_intermediate(trial_id, result)  # the last result reaches only on_trial_complete
        outcomes = self._outcomes.setdefault(group, {})
        outcomes[trial_id] = (state, value)
        if len(outcomes) == len(self._seeds):
            self._tell(group, list(outcomes.values()))

    def _tell(self, group: str, outcomes: list[tuple[str, float | None]]) -> None:
        states = [state for state, _ in outcomes]
        ot_trial = internals.optuna_trial(self, group)
        if "pruned" in states:
            internals.optuna_study(self).tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        elif "complete" in states:
            internals.optuna_study(self).tell(ot_trial, float(np.mean([v for s, v in outcomes if s == "complete"])))
        else:
            internals.optuna_study(self).tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        internals.completed_trials(self).add(group)


class QuotaBracket(internals.Bracket):
    """An ASHA bracket with a bounded promotion rule, after Li et al. (2020): of the n trials that
    reached a rung, at most ceil(n / η) are ever promoted from it, each among the rung's best
    ceil(n / η) when it arrives (the first trial at a rung goes on, so something always finishes).

    Ray's own bracket lets any trial above the rung's current (1 − 1/η) percentile continue, with
    no bound on how many do: the first trial at an empty rung always goes on, and when the searcher
    improves over time (TPE), nearly every later trial beats the earlier ones and goes on too, so
    far more than 1/η reach the top rung. Tune's stop-based scheduling cannot pause a trial and
    promote it later, so a trial that arrives while the rung's quota is used up is stopped. Rewards
    are Tune's (already negated for mode "min"), so higher is better.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.promoted: dict[int, set[str]] = {milestone: set() for milestone, _ in self._rungs}

    def on_result(self, trial: Any, cur_iter: int, cur_rew: float | None) -> str:
        for milestone, recorded in self._rungs:  # highest milestone first
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            if cur_rew is None or not math.isfinite(cur_rew):
                return super().on_result(trial, cur_iter, cur_rew)  # Ray's handling (it warns)
            recorded[trial.trial_id] = cur_rew
            quota = math.ceil(len(recorded) / self.rf)
            best = sorted(recorded.values(), reverse=True)[:quota]
            if len(self.promoted[milestone]) < quota and cur_rew >= best[-1]:
                self.promoted[milestone].add(trial.trial_id)
                return TrialScheduler.CONTINUE
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


class SchedulerState(tune.Callback):
    """Checkpoints a scheduler's bookkeeping (ASHA's rungs) with the experiment; Tune does not."""

    def __init__(self, scheduler: ASHAScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return {"scheduler": internals.scheduler_state(self.scheduler)}

    def set_state(self, state: dict) -> None:
        internals.restore_scheduler_state(self.scheduler, state["scheduler"])


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param_space: the shared trainer config plus one Tune domain per searched key."""
    domains = {}
    for p in spec.search:
        if p.type == "uniform":
            domains[p.name] = tune.uniform(p.low, p.high)
        elif p.type == "loguniform":
            domains[p.name] = tune.loguniform(p.low, p.high)
        elif p.type == "int":
            domains[p.name] = tune.randint(p.low, p.high + 1)  # Tune's upper bound is exclusive
        else:
            domains[p.name] = tune.choice(list(p.values))
    return {**base_trial_config(spec), **domains}


def make_searcher(spec: SweepSpec) -> tuple[Searcher | BasicVariantGenerator, int, dict[str, Any]]:
    """The search algorithm, Tune's num_samples for it, and what it adds to the param space."""
    seeds = trial_seeds(spec.seeds.sweep_seed, spec.seeds.repeats)
    points = [dict(p) for p in spec.optuna.points_to_evaluate]
    if spec.searcher == "optuna":
        searcher = SeededOptunaSearch(seeds=seeds, full_epochs=spec.asha.max_t if spec.asha else None,
                                      points_to_evaluate=points or None, seed=spec.search_seed)
        return searcher, spec.total_trials, {}
    # Random search: reproducible at any concurrency; each sample is expanded over the seeds.
    generator = BasicVariantGenerator(points_to_evaluate=points or None, random_state=spec.search_seed,
                                      constant_grid_search=True, max_concurrent=spec.max_concurrent)
    seed = tune.grid_search(seeds) if len(seeds) > 1 else seeds[0]
    return generator, spec.num_trials, {"seed": seed}


def make_scheduler(spec: SweepSpec) -> ASHAScheduler | None:
    """Tune's ASHAScheduler; with `promotion: quota` its bracket bounds promotions (QuotaBracket)."""
    if spec.asha is None:
        return None
    a = spec.asha
    scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=a.max_t, grace_period=a.grace_period,
                              reduction_factor=a.reduction_factor)
    if a.promotion == "quota":
        internals.replace_brackets(scheduler, lambda stop_last_trials: QuotaBracket(
            min_t=a.grace_period, max_t=a.max_t, reduction_factor=a.reduction_factor, s=0,
            stop_last_trials=stop_last_trials))
    return scheduler
