"""Fault benchmark: what each kind of fault costs a sweep's records and work, on synthetic faces, on the CPU.

    PYTHONPATH=. python benchmarks/bench_faults.py [--runs 2] [--kills 3] [--n 300] [--out runs/bench_faults]
                                                   [--only asha sigkill lost-node torn dead-wandb]

Every scenario runs `--runs` times, each a sweep of real CVAE trials (sweeps/smoke.yaml's kind, made
tiny) with offline W&B records unless said otherwise:

  asha        a sweep whose trials ASHA stops at its rungs
  sigkill     the driver (and its process group) SIGKILLed at random moments, `--kills` times per
              run, and resumed with `celeb sweep --resume` after each
  lost-node   a worker node removed mid-sweep from a local 3-node cluster (all on 127.0.0.1)
  torn        the driver killed, the newest checkpoint of every unfinished trial cut short (as a
              disk that filled up mid-copy leaves it), then resumed
  dead-wandb  online mode with WANDB_BASE_URL at a closed local port, against the same sweep offline

Per scenario it prints: runs, trials, epochs finished, epoch records missing from W&B, panels
missing, runs not finished, trials restarted from scratch, trials restarted from an older
checkpoint than their newest complete one, epochs run twice (total, and the most per interruption
of one trial), and the wall time. Records are read back from every trial's offline W&B segments,
merged by step as `wandb sync` would (celeb.records.audit).

Targets: 0 missing, 0 unfinished, 0 from scratch, at most 1 epoch run twice per interruption.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "2"  # Tune's snapshots, as often as on a busy cluster

import ray  # noqa: E402

from bench_sweep import make_data  # noqa: E402
from celeb.training import runfolder, sealed  # noqa: E402
from celeb.records import audit  # noqa: E402
from jobs.resume import ADOPTED_FILE  # noqa: E402
from jobs.sweep import run_sweep, start_local_ray  # noqa: E402

SMOKE = REPO / "sweeps" / "smoke.yaml"
SCENARIOS = ("asha", "sigkill", "lost-node", "torn", "dead-wandb")


def write_spec(root: Path, data: Path, name: str, epochs: int = 6, trials: int = 4, asha: bool = False,
               wandb_mode: str = "offline") -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name=name, data_dir=str(data), storage_path=str(root / "sweeps"), num_trials=trials, max_concurrent=2,
               max_failures=3, checkpoint={"num_to_keep": 2}, wandb={"mode": wandb_mode, "project": "bench-faults"},
               asha={"max_t": epochs, "grace_period": 1, "reduction_factor": 2} if asha else None)
    raw["fixed"].update(epochs=epochs, max_train_batches=3, batch_size=16, eval_batch_size=64, num_recon=4)
    raw["fixed"]["cvae"] = {**raw["fixed"]["cvae"], "latent_dim": 4, "width": 4}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def experiment(spec: Path) -> Path:
    raw = yaml.safe_load(spec.read_text())
    return Path(raw["storage_path"]) / raw["name"]


def newest_on_disk(exp: Path) -> dict[str, int]:
    """trial folder -> the epoch of its newest complete checkpoint (0: none)."""
    out = {}
    for trial in sorted(exp.glob("trial_*")):
        choice = sealed.newest_complete(trial.glob("checkpoint_*"))
        out[trial.name] = int(choice.meta["epoch"]) if choice.path else 0
    return out


class Tally:
    """Restarts of each trial, against the newest complete checkpoint it had when it was interrupted."""

    def __init__(self, exp: Path) -> None:
        self.exp = exp
        self.expected: list[tuple[str, int, int]] = []  # (trial, starts so far, newest epoch on disk)

    def interrupted(self) -> None:
        for trial, epoch in newest_on_disk(self.exp).items():
            self.expected.append((trial, len(runfolder.read_starts(self.exp / trial)), epoch))

    def restarts(self) -> tuple[int, int, int]:
        """(interruptions followed by a restart, from scratch, from an older checkpoint than the newest)."""
        count = scratch = older = 0
        for trial, before, epoch in self.expected:
            starts = runfolder.read_starts(self.exp / trial)
            if len(starts) <= before:
                continue  # not restarted (ASHA stopped it on its resumed result, or it had finished)
            count += 1
            first = starts[before]["from_epoch"]
            scratch += first == 0 and epoch > 0
            older += 0 < first < epoch
        return count, scratch, older


def measure(exp: Path, tally: Tally | None = None) -> dict:
    """Every trial folder of a finished experiment against its W&B record."""
    ranking = pd.read_csv(exp / "ranking.csv", dtype={"trial_id": str})
    status = dict(zip(ranking["trial_id"], ranking["status"]))
    out = defaultdict(int)
    worst = 0.0
    for folder in sorted(exp.glob("trial_*")):
        trial_id = folder.name.removeprefix("trial_")
        if trial_id not in status:  # an orphan: a trial Tune lost with a killed driver
            adopted = (folder / ADOPTED_FILE).exists()
            out["orphans_adopted" if adopted else "orphans_lost"] += 1
            if adopted:
                continue  # its epochs are in its adopter's folder and record
        result = audit(folder, scalars=["epoch", "val/loss"])
        if result.epochs == 0:
            continue  # nothing finished, nothing to record
        expected = "failed" if status.get(trial_id) == "error" else "finished"
        out["trials"] += 1
        out["epochs"] += result.epochs
        out["missing_epochs"] += len(result.missing_epochs)
        out["missing_panels"] += len(result.missing_panels)
        out["panels"] += result.panels
        out["not_finished"] += result.state != expected
        out["epochs_twice"] += result.repeated_epochs
        restarts = max(0, len(runfolder.read_starts(folder)) - 1)
        if result.repeated_epochs:
            worst = max(worst, result.repeated_epochs / max(1, restarts))
    if tally is not None:
        out["restarts"], out["from_scratch"], out["from_older"] = tally.restarts()
    out["worst_twice_per_interruption"] = worst
    return dict(out)


def driver_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # each driver its own wandb service
    env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))
    return env


def run_driver(spec: Path, resume: bool, kill_after: float | None = None, kill_when=None) -> bool:
    """`celeb sweep SPEC` in a new process group; SIGKILL the group after `kill_after` s, or once
    `kill_when()` holds. True if it was killed (False: the sweep ended first)."""
    command = [sys.executable, "-m", "jobs.sweep", str(spec), *(["--resume"] if resume else [])]
    driver = subprocess.Popen(command, cwd=REPO, env=driver_env(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        while driver.poll() is None:
            if (kill_after is not None and time.monotonic() - started > kill_after) or (kill_when and kill_when()):
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
                return True
            time.sleep(0.1)
        return False
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


def scenario_asha(root: Path, data: Path, run: int, args) -> dict:
    spec = write_spec(root, data, f"asha_{run}", asha=True, trials=6)
    run_sweep(spec, overrides={"seeds": {"sweep_seed": run, "repeats": 1}})
    return measure(experiment(spec))


def scenario_sigkill(root: Path, data: Path, run: int, args) -> dict:
    spec = write_spec(root, data, f"sigkill_{run}", epochs=8, trials=6)
    exp, tally, rng = experiment(spec), Tally(experiment(spec)), random.Random(run)
    kills, resume = 0, False
    while kills < args.kills:
        if not run_driver(spec, resume, kill_after=rng.uniform(6.0, 16.0)):
            break  # the sweep finished before this kill
        kills += 1
        tally.interrupted()
        resume = True
    run_driver(spec, resume, kill_after=None)
    return {**measure(exp, tally), "kills": kills}


def scenario_torn(root: Path, data: Path, run: int, args) -> dict:
    spec = write_spec(root, data, f"torn_{run}")
    exp, tally = experiment(spec), Tally(experiment(spec))

    def unfinished_trial_with_two_checkpoints() -> bool:
        return any(len(list(t.glob("checkpoint_*"))) >= 2 and 2 + run <= len(runfolder.read_rows(t)) < 6
                   for t in exp.glob("trial_*"))

    run_driver(spec, resume=False, kill_when=unfinished_trial_with_two_checkpoints)
    torn = 0
    for trial in sorted(exp.glob("trial_*")):
        choice = sealed.newest_complete(trial.glob("checkpoint_*"))
        rows = runfolder.read_rows(trial)
        if choice.path and rows and rows[-1]["epoch"] < 6:  # an unfinished trial: cut its newest checkpoint short
            state = Path(choice.path) / "state.pt"
            state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
            torn += 1
    tally.interrupted()
    run_driver(spec, resume=True, kill_after=None)
    return {**measure(exp, tally), "torn": torn}


def scenario_dead_wandb(root: Path, data: Path, run: int, args) -> dict:
    timings = {}
    for mode in ("offline", "online"):
        spec = write_spec(root, data, f"wandb_{mode}_{run}", wandb_mode=mode)
        env = dict(os.environ)
        if mode == "online":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            os.environ.update(WANDB_BASE_URL=f"http://127.0.0.1:{port}", WANDB_API_KEY="x" * 40)
        try:
            started = time.perf_counter()
            run_sweep(spec)
            timings[mode] = time.perf_counter() - started
        finally:
            os.environ.clear()
            os.environ.update(env)
    from jobs.records import read_report

    report = read_report(str(experiment(spec)))
    return {**measure(experiment(spec)), "offline_s": timings["offline"], "online_dead_s": timings["online"],
            "not_uploaded": len(report.not_uploaded) if report else -1}


def scenario_lost_node(root: Path, data: Path, run: int, args) -> dict:
    from ray.cluster_utils import Cluster

    spec = write_spec(root, data, f"lost_node_{run}", trials=2)
    exp, tally = experiment(spec), Tally(experiment(spec))
    ray.shutdown()
    node = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0})
    try:
        workers = [cluster.add_node(**node, num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        assert cluster.address.startswith("127.0.0.1:"), cluster.address
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1")
        removed = threading.Event()

        def remove_mid_run() -> None:
            deadline = time.time() + 300
            while time.time() < deadline:
                rows = [runfolder.read_rows(t) for t in exp.glob("trial_*")]
                if rows and all(len(r) >= 2 + run for r in rows):
                    tally.interrupted()
                    cluster.remove_node(workers[0])
                    removed.set()
                    return
                time.sleep(0.2)

        remover = threading.Thread(target=remove_mid_run)
        remover.start()
        run_sweep(spec)
        remover.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
        start_local_ray(num_cpus=2)
    return {**measure(exp, tally), "removed": int(removed.is_set())}


RUNNERS = {"asha": scenario_asha, "sigkill": scenario_sigkill, "lost-node": scenario_lost_node,
           "torn": scenario_torn, "dead-wandb": scenario_dead_wandb}
COLUMNS = [("runs", "runs"), ("trials", "trials"), ("epochs", "epochs finished"),
           ("missing_epochs", "epoch records missing"), ("missing_panels", "panels missing"),
           ("not_finished", "runs not finished"), ("from_scratch", "restarted from scratch"),
           ("from_older", "restarted from an older checkpoint"), ("orphans_lost", "started after the last snapshot, lost"),
           ("orphans_adopted", "started after the last snapshot, adopted"), ("epochs_twice", "epochs run twice"),
           ("worst_twice_per_interruption", "most run twice per interruption")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs of each scenario (default 2)")
    parser.add_argument("--kills", type=int, default=3, help="driver kills per sigkill run (default 3)")
    parser.add_argument("--n", type=int, default=300, help="synthetic faces (default 300)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--out", default="runs/bench_faults")
    args = parser.parse_args()

    root = Path(args.out).resolve() / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True)
    data = make_data(Path(args.out).resolve(), args.n)
    start_local_ray(num_cpus=2)
    results: dict[str, dict] = {}
    for name in args.only:
        totals: dict = defaultdict(float)
        started = time.perf_counter()
        for run in range(args.runs):
            measured = RUNNERS[name](root, data, run, args)
            print(f"{name} run {run + 1}: {measured}", flush=True)
            for key, value in measured.items():
                totals[key] = max(totals[key], value) if key == "worst_twice_per_interruption" else totals[key] + value
        totals["runs"], totals["wall_s"] = args.runs, time.perf_counter() - started
        results[name] = dict(totals)
    ray.shutdown()

    print("\n=== faults: what each costs (records read back from every trial's offline W&B segments) ===")
    table = pd.DataFrame({name: {label: results[name].get(key, 0) for key, label in COLUMNS} for name in results})
    print(table.to_string(float_format=lambda v: f"{v:.3g}"))
    extras = {"sigkill": "kills", "torn": "torn", "lost-node": "removed"}
    for name, key in extras.items():
        if name in results:
            print(f"{name}: {int(results[name].get(key, 0))} {key} over {args.runs} runs, "
                  f"{int(results[name].get('restarts', 0))} trial restarts after them, "
                  f"{results[name]['wall_s']:.0f} s")
    if "dead-wandb" in results:
        r = results["dead-wandb"]
        print(f"dead-wandb: the same sweep took {r['offline_s'] / args.runs:.1f} s offline and "
              f"{r['online_dead_s'] / args.runs:.1f} s online with W&B unreachable (mean of {args.runs}); "
              f"{int(r['not_uploaded'])} segments kept on disk for a later `celeb wandb --upload`")
    print(f"\nexperiments: {root}")


if __name__ == "__main__":
    main()
