"""`celeb wandb`: the records of sweep and run folders written (or uploaded) from the folders alone."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from celeb.training import runfolder

from celeb import storage
from celeb.records.keeper import RecordKeeper, RecordReport
from celeb.records.ledger import WANDB_DIR, Ledger
from celeb.records.settings import RunInfo


def run_id_of(run_dir: str | os.PathLike[str]) -> str:
    """The W&B run id of a local run: its folder's name, in the characters W&B allows."""
    import re

    return re.sub(r"[^A-Za-z0-9_-]", "-", Path(run_dir).resolve().name)


def find_run_folders(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every run folder (a folder holding metrics.jsonl) at or under `roots`, sorted."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist; pass a sweep folder (storage_path/<name>) or a run folder")
        found.update(p.parent.resolve() for p in root.rglob(runfolder.METRICS_FILE)
                     if WANDB_DIR not in p.relative_to(root).parts)
    return sorted(found)


def run_info_of(folder: str | os.PathLike[str], project: str | None = None) -> RunInfo:
    """Who a run folder is in W&B: as its ledger says, else as the folder says (a sweep trial's
    params.json and its sweep's sweep_spec.json, or a local run's config.yaml)."""
    folder = Path(folder)
    ledger = Ledger.read(folder)
    if ledger is not None:
        info = ledger.info
        return info if project is None else RunInfo.from_dict({**asdict(info), "project": project})
    params, spec = folder / "params.json", folder.parent / "sweep_spec.json"
    if params.exists() and folder.name.startswith("trial_"):
        config = json.loads(params.read_text(encoding="utf-8"))
        sweep = json.loads(spec.read_text(encoding="utf-8")) if spec.exists() else {}
        return RunInfo(run_id=folder.name.removeprefix("trial_"), name=folder.name, group=folder.parent.name,
                       project=project or "celeb", config=config, job_type=config.get("task"),
                       metric=sweep.get("metric"), mode=sweep.get("mode", "min"))
    import yaml

    config_file = folder / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    return RunInfo(run_id=run_id_of(folder), name=folder.name, group="local", project=project or "celeb",
                   config=config or {}, job_type=(config or {}).get("task"),
                   metric=(config or {}).get("early_stopping_metric"), mode=(config or {}).get("early_stopping_mode", "min"))


def write_records(roots: Iterable[str | os.PathLike[str]], upload: bool = False, rebuild: bool = False,
                  project: str | None = None, progress: bool = True) -> RecordReport:
    """Bring the W&B records of every run folder under `roots` up to date with the folders (after a
    killed driver that was not resumed, say); `rebuild` first deletes the records there and writes
    them again from the folders; `upload` also sends every segment not yet uploaded (needs W&B's
    server, e.g. after an outage). Runs keep how they ended (finished or failed)."""
    from tqdm.auto import tqdm

    folders = find_run_folders(roots)
    if not folders:
        raise FileNotFoundError(f"no run folders (with {runfolder.METRICS_FILE}) under {', '.join(map(str, roots))}")
    keeper = RecordKeeper("online" if upload else "offline", upload_every_s=None).start()
    for folder in tqdm(folders, desc="W&B records", unit="run", disable=not progress, leave=False):
        ledger = Ledger.read(folder)
        info = run_info_of(folder, project)
        final = ledger.final if ledger is not None else None
        if rebuild:
            storage.delete_dir(folder / WANDB_DIR)
        keeper.close(str(folder), info, final or "finished", final=True)
        keeper.wait()
    keeper.upload_pending(map(str, folders))
    return keeper.drain(upload_timeout_s=None)
