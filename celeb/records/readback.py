"""Reading W&B records back: every offline segment of a run folder, merged by step as `wandb sync`
would, and the audit of a folder against its record (what tests and benchmarks check)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celeb.training import runfolder
from celeb.records.ledger import SEGMENT_PREFIX, WANDB_DIR
from celeb.records.upload import wandb_command


def offline_run_records(run_path: str | Path, summary: bool = False) -> list[dict[str, Any]]:
    """What an offline W&B run recorded, as `wandb leet inspect --json` prints it (one dict per record;
    with `summary`, one dict of config, summary and state): check a run before `wandb sync`."""
    done = subprocess.run([*wandb_command(), "leet", "inspect", "--json", *(["--summary"] if summary else []),
                           str(run_path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"`wandb leet inspect {run_path}` failed: {done.stderr.strip()}")
    if summary:  # one (pretty-printed) object
        return [json.loads(done.stdout)]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@dataclass
class Recorded:
    """A run's W&B record as `wandb sync` of all its offline segments would give it."""

    rows: dict[int, dict[str, Any]]  # W&B step -> the merged history row
    segments: list[dict[str, Any]]  # per segment: dir, steps, state, start_time, summary
    repeated_steps: int  # steps held by more than one segment

    @property
    def state(self) -> str | None:
        """The state of the newest segment (how the run ended): "finished", "failed", or "running"."""
        return self.segments[-1]["state"] if self.segments else None


def read_recorded(folder: str | os.PathLike[str]) -> Recorded:
    """Read every offline segment in folder/wandb/ (the published ones, as a user would sync them),
    oldest first, and merge their history by W&B step."""
    segments = [_read_segment(run_dir) for run_dir in sorted((Path(folder) / WANDB_DIR).glob(f"{SEGMENT_PREFIX}*"))]
    segments.sort(key=lambda s: s["start_time"])
    rows: dict[int, dict[str, Any]] = {}
    repeated = 0
    for segment in segments:
        for item in segment.pop("history"):
            step = int(item["_step"])
            repeated += step in rows
            rows.setdefault(step, {}).update(item)
    return Recorded(rows=rows, segments=segments, repeated_steps=repeated)


def _read_segment(run_dir: Path) -> dict[str, Any]:
    """One offline run's records, read once: its run record, history, summary and how it ended
    (its exit record: "finished" for exit code 0, "failed" otherwise; none: "running")."""
    records = offline_run_records(run_dir)
    run = next((r["run"] for r in records if r["type"] == "run"), {})
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    summary: dict[str, Any] = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    exits = [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"]
    state = "running" if not exits else ("finished" if exits[-1] == 0 else "failed")
    config = {k: v for k, v in run.get("config", {}).get("update", {}).items() if k != "_wandb"}
    return {"dir": run_dir.name, "steps": [int(item["_step"]) for item in history], "history": history,
            "state": state, "start_time": run.get("start_time", ""), "summary": summary, "config": config, "run": run}


@dataclass
class Audit:
    """A run folder against its W&B record: what the folder finished that the record lacks."""

    epochs: int
    missing_epochs: list[int]  # steps of finished epochs absent from the record (or with other values)
    panels: int
    missing_panels: list[str]  # "name@step" of images and tables absent from the record
    state: str | None  # the record's final state
    repeated_steps: int
    repeated_epochs: int  # epochs the folder holds more than once (run twice)
    recorded: Recorded | None = None


def audit(folder: str | os.PathLike[str], scalars: Sequence[str] | None = None) -> Audit:
    """Compare a run folder with its W&B record epoch by epoch: every finished epoch's scalars
    (or only `scalars`), and every panel and table logged at a finished epoch's step."""
    raw = runfolder.read_rows(folder)
    rows = runfolder.epoch_rows(raw)
    recorded = read_recorded(folder)
    missing = []
    for row in rows:
        logged = recorded.rows.get(int(row[runfolder.STEP]))
        values = runfolder.scalar_values(row)
        names = [n for n in (scalars or values) if n in values]
        if logged is None or any(not _same(logged.get(n), values[n]) for n in names):
            missing.append(int(row[runfolder.STEP]))
    steps = {int(row[runfolder.STEP]) for row in rows}
    panels, missing_panels = 0, []
    for kind, type_name in ((runfolder.IMAGES_DIR, "image-file"), (runfolder.TABLES_DIR, "table-file")):
        for step, names in runfolder.logged_files(folder, kind).items():
            if step not in steps:
                continue  # logged by an epoch that did not finish; its rerun logs it again
            for name in names:
                panels += 1
                if recorded.rows.get(step, {}).get(f"{name}._type") != type_name:
                    missing_panels.append(f"{name}@{step}")
    return Audit(epochs=len(rows), missing_epochs=missing, panels=panels, missing_panels=missing_panels,
                 state=recorded.state, repeated_steps=recorded.repeated_steps,
                 repeated_epochs=runfolder.repeated_steps(raw), recorded=recorded)


def _same(logged: Any, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return logged == value
    if not isinstance(logged, (int, float)):
        return False
    return logged == value or abs(logged - value) <= 1e-9 * max(1.0, abs(value)) or (logged != logged and value != value)
