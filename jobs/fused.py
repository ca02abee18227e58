"""Fused trials under Ray Tune (`resources.fuse` > 1): trials of one architecture share a GPU as
one batched model (celeb.training.fused) instead of as P processes.

One `GroupActor` per GPU owns a `FusedGroup`. A trial (jobs.trial.train_fused_trial) joins a group
on its own node that has room (or starts one), asks it for its epochs one at a time and reports
each to Tune with its checkpoint, as a lone trial does: Optuna suggests each trial's config on its
own, ASHA stops each on its own, and each keeps its seed, β, lr, AdamW state, folder, checkpoints
and W&B record. The group trains an epoch once all its members have asked for one, so the members
move in step, each at its own epoch.

A trial that stops asking leaves the group: the driver's `FusedMembers` callback tells the groups
when Tune ends or loses a trial, and a member silent for `resources.fuse_wait_s` while the others
wait is dropped. A member dropped only for being slow finds itself gone at its next request and
rejoins from its last checkpoint, which continues the run exactly (a fused run's checkpoint is
`fit`'s). New trials join between epochs.

Groups are detached actors, so a group outlives the trial that started it; the driver ends a
sweep's groups when the sweep ends (`end_groups`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from celeb.config import config_to_dict, flatten
from celeb.data.dataset import load_data
from celeb.sweep.spec import train_config_from_trial
from celeb.training.fused import ARCHITECTURE_KEYS, EpochOutcome, FusedGroup
from celeb.training.runfolder import scalar_values
from celeb.training.tracking import LocalTracker

NAMESPACE = "celeb-fused"
TRIAL_CPU = 0.05  # a fused trial's own process only relays epochs; its group holds the CPUs and the GPU
GROUP_START_S = 60.0  # a group not started by then has no GPU to start on


class LeftGroup(RuntimeError):
    """The trial is no longer a member of the group (it was dropped as silent); rejoin to go on."""


class GroupActor:
    """A FusedGroup behind a barrier: `next_epoch` returns once the epoch every member asked for has run."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity, self.wait_s = capacity, wait_s
        self.group: FusedGroup | None = None
        self.changed = threading.Condition()
        self.asking: set[str] = set()
        self.outcomes: dict[str, EpochOutcome] = {}
        self.generation = 0  # epochs run
        self.running = False

    def join(self, trial_id: str, config: dict[str, Any], run_dir: str, state: str | None) -> bool:
        """Add the trial (from the checkpoint dir `state` when given); False when the group is full."""
        train_config = train_config_from_trial(config)
        with self.changed:
            self._wait_while_running()
            members = self.group.runs if self.group is not None else {}
            if trial_id not in members and len(members) >= self.capacity:
                return False
            if self.group is None:
                d = train_config.data
                self.group = FusedGroup(load_data(Path(d.data_dir), split=d.split, image_size=d.image_size, crop=d.crop))
            self.group.join(trial_id, train_config, Path(run_dir) / "checkpoints", LocalTracker(run_dir),
                            Path(state) if state else None)
            self.changed.notify_all()
            return True

    def leave(self, trial_id: str) -> None:
        with self.changed:
            self._wait_while_running()
            if self.group is not None:
                self.group.leave(trial_id)
            self.asking.discard(trial_id)
            self.changed.notify_all()

    def members(self) -> list[str]:
        with self.changed:
            return list(self.group.runs) if self.group is not None else []

    def next_epoch(self, trial_id: str) -> dict[str, Any]:
        """Wait for the trial's next epoch: run it when every member has asked, drop members silent
        for wait_s. Returns its scalar metrics, checkpoint dir and whether it is done; raises the
        error that ended it, or LeftGroup."""
        with self.changed:
            self._check_member(trial_id)
            self.asking.add(trial_id)
            self.changed.notify_all()
            generation, deadline = self.generation, time.monotonic() + self.wait_s
            while self.generation == generation:
                if not self.running and set(self.group.runs) <= self.asking:
                    self.running = True
                    break
                if not self.running and time.monotonic() >= deadline:
                    for silent in set(self.group.runs) - self.asking:
                        self.group.leave(silent)
                    continue
                self.changed.wait(timeout=None if self.running else max(0.01, deadline - time.monotonic()))
            else:
                return self._outcome(trial_id)
        try:
            outcomes = self.group.run_epoch()
        except Exception as error:  # noqa: BLE001 - the group itself failed: every member gets the error
            outcomes = {key: EpochOutcome(error=error) for key in list(self.group.runs)}
            self.group.runs.clear()
        with self.changed:
            self.outcomes.update(outcomes)
            self.asking.clear()
            self.generation += 1
            self.running = False
            self.changed.notify_all()
            return self._outcome(trial_id)

    def _wait_while_running(self) -> None:
        while self.running:
            self.changed.wait()

    def _check_member(self, trial_id: str) -> None:
        if self.group is None or trial_id not in self.group.runs:
            raise LeftGroup(f"trial {trial_id} is not in this fused group")

    def _outcome(self, trial_id: str) -> dict[str, Any]:
        outcome = self.outcomes.pop(trial_id, None)
        if outcome is None:
            raise LeftGroup(f"trial {trial_id} left the fused group before its epoch ran")
        if outcome.error is not None:
            raise outcome.error
        return {"metrics": scalar_values(outcome.metrics), "checkpoint": str(outcome.checkpoint), "done": outcome.done}


RemoteGroup = ray.remote(GroupActor)


def architecture_id(config: dict[str, Any]) -> str:
    """A short id of what fused trials must share (celeb.training.fused.ARCHITECTURE_KEYS)."""
    flat = flatten(config_to_dict(train_config_from_trial(config)))
    shared = json.dumps({k: flat[k] for k in ARCHITECTURE_KEYS}, sort_keys=True, default=str)
    return hashlib.sha1(shared.encode()).hexdigest()[:10]


def join_group(sweep: str, trial_id: str, config: dict[str, Any], run_dir: Path, state: Path | None,
               capacity: int, wait_s: float, cpu: float, gpu: float) -> Any:
    """A handle to a group on this node, of this architecture, with room, which the trial has joined.

    Groups are tried in order and the first missing one is started (with `cpu` CPUs and `gpu`
    GPUs). One that cannot start within GROUP_START_S (the node's GPUs are all held by full
    groups) is given up, and the trial waits for a place in the others."""
    node = ray.get_runtime_context().get_node_id()
    prefix = f"{sweep}-{node[:12]}-{architecture_id(config)}"
    while True:
        for index in itertools.count():
            group = RemoteGroup.options(
                name=f"{prefix}-{index}", namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                max_concurrency=capacity + 8, num_cpus=cpu, num_gpus=gpu,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(capacity, wait_s)
            started, _ = ray.wait([group.members.remote()], timeout=GROUP_START_S)
            if not started:
                ray.kill(group)
                break
            if ray.get(group.join.remote(trial_id, config, str(run_dir), str(state) if state else None)):
                return group
        time.sleep(1.0)


def sweep_groups(sweep: str) -> list[Any]:
    """Handles to every fused group of the sweep `sweep` on the cluster."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == NAMESPACE and a["name"].startswith(f"{sweep}-")]
    return [ray.get_actor(name, namespace=NAMESPACE) for name in names]


def end_groups(sweep: str) -> None:
    """End the sweep's fused groups (they are detached: nothing else ends them)."""
    for group in sweep_groups(sweep):
        ray.kill(group)


class FusedMembers(tune.Callback):
    """Tells the sweep's fused groups when Tune ends, pauses or loses a trial, so they stop waiting for it."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def _left(self, trial: Any) -> None:
        for group in sweep_groups(self.sweep):
            group.leave.remote(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._left(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._left(trial)

    def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # trials report their checkpoints; Tune itself saves a trial only to pause it
        self._left(trial)


def report_epochs(sweep: str, trial_id: str, config: dict[str, Any], run_dir: Path, state: Path | None,
                  capacity: int, wait_s: float, cpu: float, gpu: float) -> None:
    """The fused trial's loop: join a group, then report each epoch it trains until the run is done;
    rejoin from the last checkpoint when the group dropped the trial."""
    group = join_group(sweep, trial_id, config, run_dir, state, capacity, wait_s, cpu, gpu)
    while True:
        try:
            epoch = ray.get(group.next_epoch.remote(trial_id))
        except LeftGroup:
            group = join_group(sweep, trial_id, config, run_dir, state, capacity, wait_s, cpu, gpu)
            continue
        state = Path(epoch["checkpoint"])
        tune.report(epoch["metrics"], checkpoint=tune.Checkpoint.from_directory(epoch["checkpoint"]))
        if epoch["done"]:
            return
