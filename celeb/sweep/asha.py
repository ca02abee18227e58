"""ASHA's promotion rule (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning",
the "promotion" type of Syne Tune), as plain bookkeeping with no Ray in it.

Rungs sit at `grace_period * reduction_factor**k` epochs below `max_t`. A trial that reaches a rung
records its value there and waits. It is *promotable* from rung m while it is among the best
floor(n_m / η) of the n_m trials recorded at m and has not been promoted from m yet; promotions only
grow as more trials arrive, so a trial that waits is never judged against too few others (the
failure of a rule that must decide on arrival). Once no trial can still reach a rung (every trial
of the sweep has been created, and each is recorded there or above or has ended), the rung is *closed*: its
quota becomes max(1, floor(n_m / η)), so a small sweep still carries its best trial to the end, and
every other trial waiting there can be stopped for good.

jobs.search.PromotionASHA drives this from Tune; `Rungs` is kept with the experiment as a plain dict
(`state` / `from_state`), so a resumed sweep keeps its rungs, waiting trials and promotions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def rung_milestones(grace_period: int, max_t: int, reduction_factor: int) -> list[int]:
    """The epochs at which trials are compared, ascending, all below `max_t`."""
    milestones, t = [], grace_period
    while t < max_t:
        milestones.append(t)
        t *= reduction_factor
    return milestones


def score(value: float | None, mode: str) -> float:
    """A rung value where higher is better (NaN, inf or missing: the worst)."""
    if value is None or not math.isfinite(value):
        return -math.inf
    return float(value) if mode == "max" else -float(value)


@dataclass
class Rungs:
    """What every rung has seen: each trial's value (higher is better) in arrival order, and which
    trials were promoted from it."""

    milestones: list[int]
    reduction_factor: int
    values: dict[int, dict[str, float]] = field(default_factory=dict)
    promoted: dict[int, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.milestones:
            self.values.setdefault(m, {})
            self.promoted.setdefault(m, set())

    def rung_reached(self, trial_id: str, epoch: int) -> int | None:
        """The highest rung at or below `epoch` where the trial has not been recorded yet, if any."""
        for m in reversed(self.milestones):
            if m <= epoch:
                return None if trial_id in self.values[m] else m
        return None

    def record(self, trial_id: str, milestone: int, value: float) -> None:
        self.values[milestone][trial_id] = value

    def quota(self, milestone: int, closed: bool) -> int:
        n = len(self.values[milestone])
        quota = n // self.reduction_factor
        return max(quota, 1) if closed and n else quota

    def promotable(self, milestone: int, closed: bool) -> list[str]:
        """Trials recorded at `milestone` that may go on now and have not, best first (ties: first arrived)."""
        recorded = self.values[milestone]
        order = sorted(recorded, key=lambda t: -recorded[t])  # stable: arrival order breaks ties
        top = order[:self.quota(milestone, closed)]
        return [t for t in top if t not in self.promoted[milestone]]

    def promote(self, trial_id: str, milestone: int) -> None:
        self.promoted[milestone].add(trial_id)

    def passed(self, milestone: int) -> set[str]:
        """Trials recorded at `milestone` or above (a resumed trial may first report past a rung)."""
        return set().union(*(set(v) for m, v in self.values.items() if m >= milestone))

    def state(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "reduction_factor": self.reduction_factor,
                "values": {m: dict(v) for m, v in self.values.items()},
                "promoted": {m: sorted(p) for m, p in self.promoted.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rungs:
        return cls(list(state["milestones"]), int(state["reduction_factor"]),
                   {int(m): dict(v) for m, v in state["values"].items()},
                   {int(m): set(p) for m, p in state["promoted"].items()})


@dataclass
class PromotionRule:
    """The whole scheduling rule over `Rungs`: what a trial does when it reports, which waiting
    trials go on, and which are stopped once their rung is closed. Trial ids are all it needs;
    `total_trials` is how many trials the sweep will create."""

    rungs: Rungs
    max_t: int
    total_trials: int
    waiting: dict[str, int] = field(default_factory=dict)  # trial -> the rung it waits at
    ended: set[str] = field(default_factory=set)

    @classmethod
    def new(cls, grace_period: int, max_t: int, reduction_factor: int, total_trials: int) -> PromotionRule:
        return cls(Rungs(rung_milestones(grace_period, max_t, reduction_factor), reduction_factor), max_t,
                   total_trials)

    def on_result(self, trial_id: str, epoch: int, value: float, seen: set[str]) -> str:
        """"continue", "pause" (wait at a rung) or "stop" (the full budget is done); `value`:
        higher is better; `seen`: every trial created so far."""
        if epoch >= self.max_t:
            return "stop"
        milestone = self.rungs.rung_reached(trial_id, epoch)
        if milestone is None:
            return "continue"
        self.rungs.record(trial_id, milestone, value)
        if trial_id in self.rungs.promotable(milestone, self.closed(milestone, seen)):
            self.rungs.promote(trial_id, milestone)
            return "continue"
        self.waiting[trial_id] = milestone
        return "pause"

    def on_end(self, trial_id: str) -> None:
        """The trial ended (finished, stopped, failed for good)."""
        self.ended.add(trial_id)
        self.waiting.pop(trial_id, None)

    def closed(self, milestone: int, seen: set[str]) -> bool:
        """True once no trial can still arrive at `milestone`."""
        if len(seen) < self.total_trials:
            return False
        return not (seen - self.rungs.passed(milestone) - self.ended)

    def promote_waiting(self, seen: set[str]) -> list[str]:
        """Promote every waiting trial that may go on (highest rung first); return them in that order."""
        promoted = []
        for milestone in reversed(self.rungs.milestones):
            for trial_id in self.rungs.promotable(milestone, self.closed(milestone, seen)):
                if self.waiting.get(trial_id) == milestone:
                    self.rungs.promote(trial_id, milestone)
                    del self.waiting[trial_id]
                    promoted.append(trial_id)
        return promoted

    def to_stop(self, seen: set[str]) -> list[str]:
        """Waiting trials that can never be promoted: their rung is closed and its quota used."""
        return [t for t, m in self.waiting.items()
                if self.closed(m, seen) and t not in self.rungs.promotable(m, closed=True)]

    def state(self) -> dict[str, Any]:
        return {"rungs": self.rungs.state(), "max_t": self.max_t, "total_trials": self.total_trials,
                "waiting": dict(self.waiting), "ended": sorted(self.ended)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PromotionRule:
        return cls(Rungs.from_state(state["rungs"]), int(state["max_t"]), int(state["total_trials"]),
                   dict(state["waiting"]), set(state["ended"]))
