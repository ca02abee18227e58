"""The sweep's searcher and scheduler: what proposes configs and what stops trials early.

- `SeededOptunaSearch`: Tune's OptunaSearch, training each suggestion once per fixed seed, and
  telling Optuna that ASHA-stopped trials were PRUNED (Ray's tells it COMPLETE with an early value).
- `PromotionASHA`: ASHA that pauses trials at a rung and promotes them later (`asha.promotion: pause`).
- `SchedulerState`: a Tune callback that checkpoints the scheduler's rungs, which Tune does not.
- `make_searcher`, `make_scheduler`, `search_space`: a SweepSpec -> Tune's search algorithm,
  scheduler and param space.
What this needs of Tune's internals goes through jobs.internals.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from celeb.seeds import trial_seeds
from celeb.sweep.asha import PromotionRule, score
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
        self._last_result: dict[str, dict] = {}  # a trial stopped while paused completes without a result

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
        self._last_result[trial_id] = result
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
        result = result or self._last_result.get(trial_id)
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


class PromotionASHA(TrialScheduler):
    """ASHA that pauses and promotes (`asha.promotion: pause`, celeb.sweep.asha.PromotionRule), on
    Tune's public scheduler interface: `on_trial_result` answers CONTINUE, PAUSE (Tune checkpoints
    the trial and frees its resources; the trial resumes from that checkpoint when promoted) or
    STOP; `choose_trial_to_run` starts promoted trials before new ones and never a waiting one.

    It also keeps the sweep's concurrency: at most `max_running` trials run at once. (Tune's own
    limit counts paused trials as live, so with trials waiting at a rung it would start no new ones
    and the sweep would stall.) Once a rung is closed, the trials waiting there that its quota
    leaves out are stopped for good, so the sweep ends.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, total_trials: int,
                 max_running: int) -> None:
        super().__init__()
        self.rule = PromotionRule.new(grace_period, max_t, reduction_factor, total_trials)
        self.max_running = max_running
        self.mode = "min"

    # each result must reach on_trial_result as it comes: a trial pauses at the epoch of its rung
    _supports_buffered_results = False

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self.mode = mode or self.mode
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if TIME_ATTR not in result:
            return TrialScheduler.CONTINUE
        decision = self.rule.on_result(trial.trial_id, int(result[TIME_ATTR]), score(result.get(self.metric), self.mode),
                                       seen_trials(tune_controller))
        if decision == "pause" and trial.trial_id in self.rule.to_stop(seen_trials(tune_controller)):
            self.rule.on_end(trial.trial_id)  # its rung closed with it, and it is not among the best
            decision = "stop"
        return {"continue": TrialScheduler.CONTINUE, "pause": TrialScheduler.PAUSE,
                "stop": TrialScheduler.STOP}[decision]

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.rule.on_end(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        seen = {t.trial_id for t in trials}
        self._reconcile(tune_controller, trials)
        self.rule.promote_waiting(seen)
        self._stop_hopeless(tune_controller)
        if sum(t.status == Trial.RUNNING for t in trials) >= self.max_running:
            return None
        ready = [t for t in trials if t.status in (Trial.PAUSED, Trial.PENDING) and t.trial_id not in self.rule.waiting
                 and t.trial_id not in self.rule.ended]
        # promoted trials (paused, or pending after a resume) before new ones, the furthest along first
        ready.sort(key=lambda t: (t.status != Trial.PAUSED, -int((t.last_result or {}).get(TIME_ATTR, 0))))
        return ready[0] if ready else None

    def _reconcile(self, tune_controller: Any, trials: list[Trial]) -> None:
        """Make Tune's statuses and the rule agree after a resume. Tune requeues every unfinished
        trial of its last snapshot as PENDING, and starts PENDING trials without asking: a trial
        waiting at a rung goes back to PAUSED, one the rule ended (after that snapshot) is
        stopped again. A trial Tune ended is ended for the rule too (its rungs may be older)."""
        for trial in trials:
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                if trial.trial_id not in self.rule.ended:
                    self.rule.on_end(trial.trial_id)
            elif trial.status == Trial.PENDING and trial.trial_id in self.rule.waiting:
                internals.set_trial_status(tune_controller, trial, Trial.PAUSED)
            elif trial.status in (Trial.PENDING, Trial.PAUSED) and trial.trial_id in self.rule.ended:
                tune_controller.stop_trial(trial)  # the searcher's and callbacks' ends are idempotent

    def _stop_hopeless(self, tune_controller: Any) -> None:
        trials = {t.trial_id: t for t in tune_controller.get_trials()}
        for trial_id in self.rule.to_stop(set(trials)):
            if trials[trial_id].status in (Trial.PAUSED, Trial.PENDING):
                self.rule.on_end(trial_id)
                tune_controller.stop_trial(trials[trial_id])

    def waiting_trials(self) -> set[str]:
        """Trials paused at a rung, not (yet) promoted."""
        return set(self.rule.waiting)

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m}: {len(v)} seen, {len(self.rule.rungs.promoted[m])} promoted"
                          for m, v in self.rule.rungs.values.items())
        return f"Using promotion ASHA ({len(self.rule.waiting)} waiting; rungs {rungs})"

    def get_state(self) -> dict[str, Any]:
        return self.rule.state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.rule = PromotionRule.from_state(state)


def seen_trials(tune_controller: Any) -> set[str]:
    return {t.trial_id for t in tune_controller.get_trials()}


class PausedAwareLimiter(ConcurrencyLimiter):
    """Tune's ConcurrencyLimiter, not counting the trials PromotionASHA keeps waiting at a rung.

    The searcher is asked for a new trial only when one can run now, so Optuna suggests each config
    having seen every result reported so far (as it does under Tune's own limit) and the sweep still
    goes on while up to max_concurrent trials wait to be promoted.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, scheduler: PromotionASHA) -> None:
        super().__init__(searcher, max_concurrent)
        self.scheduler = scheduler

    def suggest(self, trial_id: str) -> dict | None:
        if len(self.live_trials - self.scheduler.waiting_trials()) >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def get_state(self) -> dict:
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in ("searcher", "scheduler")}

    def set_state(self, state: dict) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k not in ("searcher", "scheduler")})


class SchedulerState(tune.Callback):
    """Checkpoints a scheduler's bookkeeping (ASHA's rungs, waiting trials and promotions) with the
    experiment; Tune does not (ray issue 30838)."""

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict:
        if isinstance(self.scheduler, PromotionASHA):
            return {"promotion": self.scheduler.get_state()}
        return {"scheduler": internals.scheduler_state(self.scheduler)}

    def set_state(self, state: dict) -> None:
        if isinstance(self.scheduler, PromotionASHA) and "promotion" in state:
            self.scheduler.set_state(state["promotion"])
        elif "scheduler" in state:
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


def make_searcher(spec: SweepSpec, scheduler: TrialScheduler | None = None,
                  ) -> tuple[Searcher | BasicVariantGenerator, int, dict[str, Any]]:
    """The search algorithm, Tune's num_samples for it, and what it adds to the param space.

    Under `PromotionASHA` (`scheduler`) the Optuna searcher is paced by `PausedAwareLimiter`, in
    place of Tune's own limit, which would count the trials waiting at a rung as running."""
    seeds = trial_seeds(spec.seeds.sweep_seed, spec.seeds.repeats)
    points = [dict(p) for p in spec.optuna.points_to_evaluate]
    if spec.searcher == "optuna":
        searcher = SeededOptunaSearch(seeds=seeds, full_epochs=spec.asha.max_t if spec.asha else None,
                                      points_to_evaluate=points or None, seed=spec.search_seed)
        if isinstance(scheduler, PromotionASHA):
            return PausedAwareLimiter(searcher, spec.max_concurrent, scheduler), spec.total_trials, {}
        return searcher, spec.total_trials, {}
    # Random search: reproducible at any concurrency; each sample is expanded over the seeds.
    generator = BasicVariantGenerator(points_to_evaluate=points or None, random_state=spec.search_seed,
                                      constant_grid_search=True,
                                      max_concurrent=0 if scheduler_limits_concurrency(spec) else spec.max_concurrent)
    seed = tune.grid_search(seeds) if len(seeds) > 1 else seeds[0]
    return generator, spec.num_trials, {"seed": seed}


def make_scheduler(spec: SweepSpec) -> TrialScheduler | None:
    """`PromotionASHA` for `asha.promotion: pause` (the default), Ray's ASHAScheduler for `percentile`."""
    if spec.asha is None:
        return None
    a = spec.asha
    if scheduler_limits_concurrency(spec):
        return PromotionASHA(max_t=a.max_t, grace_period=a.grace_period, reduction_factor=a.reduction_factor,
                             total_trials=spec.total_trials, max_running=spec.max_concurrent)
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=a.max_t, grace_period=a.grace_period,
                         reduction_factor=a.reduction_factor)


def scheduler_limits_concurrency(spec: SweepSpec) -> bool:
    """Whether the spec's scheduler (PromotionASHA) keeps max_concurrent itself, in place of Tune's
    limit and the searcher's, which count paused trials as running."""
    return spec.asha is not None and spec.asha.promotion == "pause"
