"""W&B records written from run folders (celeb.records), read back from real offline runs with
`wandb leet inspect`: what a record holds, that it survives a killed writer, a resume, a failure
and an unreachable W&B, and `celeb wandb`. Also the run-folder format and the W&B mode rules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from celeb.training import runfolder, sealed
from celeb.records import (Ledger, RecordKeeper, RunInfo, audit, loggable_config, offline_run_records,
                           read_recorded, resolve_wandb_mode)
from celeb.training.tracking import LocalTracker, MultiTracker, NullTracker, as_image_array

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "fakekey0123456789abcdef0123456789abcdef01"


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """Silent wandb with every wandb folder under a temp root, records offline, a fake key in the environment."""
    root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_API_KEY", FAKE_KEY)
        for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            folder = root / name.lower()
            folder.mkdir()
            mp.setenv(name, str(folder))
        yield root


def info(run_id: str = "t1", **changes) -> RunInfo:
    base = dict(run_id=run_id, name=f"trial {run_id}", group="sweep-a", project="celeb-test", metric="val/loss",
                config={"seed": 7, "lr": 1e-3, "wandb_api_key": FAKE_KEY, "note": f"key={FAKE_KEY}"})
    return RunInfo(**{**base, **changes})


def write_epochs(folder: Path, epochs: range, steps_per_epoch: int = 10) -> None:
    """What fit writes per epoch: the panels of the epoch (every other one), then its row."""
    tracker = LocalTracker(folder)
    for epoch in epochs:
        step = epoch * steps_per_epoch
        if epoch % 2 == 1:
            tracker.log_images({"traversal": torch.full((3, 6, 6), epoch / 10)}, step)
            tracker.log_table("dimensions", pd.DataFrame({"dim": [0, 1], "kl": [0.5, epoch / 10]}), step)
        tracker.log({"epoch": epoch, "val/loss": 1.0 / epoch, "val/kl_per_dim": [0.1, 0.2], "task": "cvae"}, step)


def segments_of(folder: Path) -> list[Path]:
    return sorted((folder / "wandb").glob("offline-run-*"))


def assert_complete(folder: Path, state: str = "finished"):
    """Every finished epoch, panel and table of the folder is in its W&B record, once; the run ended as `state`."""
    result = audit(folder)
    assert result.missing_epochs == [] and result.missing_panels == [], result
    assert result.repeated_steps == 0 and result.state == state, result
    return result


# ----------------------------------------------------------------------------- what a record holds


@pytest.fixture(scope="module")
def recorded(wandb_env):
    """A trial folder of 3 epochs, recorded epoch by epoch as the driver does, then finished; with a
    sealed checkpoint of the best epoch to upload."""
    folder = wandb_env / "sweep-a" / "trial_t1"
    checkpoint = folder / "checkpoint_000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"weights")
    sealed.seal(checkpoint, {"epoch": 3})
    keeper = RecordKeeper("auto").start()  # auto + WANDB_MODE=offline, despite the key
    run = info(log_checkpoint=True, tags=("cvae",), job_type="cvae")
    for epoch in (1, 2, 3):
        write_epochs(folder, range(epoch, epoch + 1))
        keeper.update(str(folder), run)
    keeper.close(str(folder), run, "finished")
    report = keeper.drain()
    (segment,) = segments_of(folder)
    return {"folder": folder, "report": report, "segment": segment, "records": offline_run_records(segment),
            "summary": offline_run_records(segment, summary=True)[0], "read": read_recorded(folder)}


def test_one_finished_segment_listed_in_the_ledger_and_no_staging_left(recorded):
    folder, segment = recorded["folder"], recorded["segment"]
    assert (segment / "run-t1.wandb").exists() and segment.name.endswith("-t1")
    ledger = Ledger.read(folder)
    assert [(s.dir, s.first_step, s.last_step, s.epochs, s.state) for s in ledger.segments] == [
        (segment.name, 10, 30, 3, "finished")]
    assert ledger.final == "finished" and not (folder / "wandb" / ".staging").exists()
    report = recorded["report"]
    assert (report.mode, report.runs, report.epochs, report.segments) == ("offline", 1, 3, 1)


def test_run_record_has_group_name_id_and_safe_config(recorded):
    (run,) = [r["run"] for r in recorded["records"] if r["type"] == "run"]
    assert (run["run_group"], run["display_name"], run["run_id"], run["project"]) == (
        "sweep-a", "trial t1", "t1", "celeb-test")
    assert run["job_type"] == "cvae" and run["tags"] == ["cvae"] and run["resume"] is True
    config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
    assert config == {"seed": 7, "lr": 1e-3}


def test_every_epoch_at_its_trainer_step_with_its_scalars_only(recorded):
    rows = [r["history"]["item"] for r in recorded["records"] if r["type"] == "history"]
    assert [(r["_step"], r["step"], r["epoch"], r["val/loss"]) for r in rows] == [
        (10, 10, 1, 1.0), (20, 20, 2, 0.5), (30, 30, 3, pytest.approx(1 / 3))]
    assert not any("val/kl_per_dim" in r or "task" in r for r in rows)  # lists and strings stay in the folder


def test_panels_are_recorded_pixel_for_pixel_at_their_epoch(recorded):
    rows = {r["history"]["item"]["_step"]: r["history"]["item"] for r in recorded["records"] if r["type"] == "history"}
    assert [step for step, row in rows.items() if "traversal._type" in row] == [10, 30]
    for step in (10, 30):
        png = Image.open(recorded["segment"] / "files" / rows[step]["traversal.path"])
        expected = np.asarray(Image.open(runfolder.image_file(recorded["folder"], "traversal", step)).convert("RGB"))
        assert np.array_equal(np.asarray(png.convert("RGB")), expected)
        assert np.array_equal(expected, as_image_array(torch.full((3, 6, 6), step / 100)))
    table = json.loads((recorded["segment"] / "files" / rows[30]["dimensions.path"]).read_text())
    assert table["columns"] == ["dim", "kl"] and table["data"] == [[0, 0.5], [1, 0.3]]


def test_summary_is_the_best_epoch_and_the_state_finished(recorded):
    summary = recorded["summary"]  # as `wandb leet inspect --summary` gives it
    assert summary["state"] == "finished"
    assert summary["summary"]["best_epoch"] == 3 and summary["summary"]["best/val/loss"] == pytest.approx(1 / 3)
    (segment,) = recorded["read"].segments  # as celeb.records.read_recorded gives it
    assert segment["state"] == "finished" and segment["summary"]["best_epoch"] == 3


def test_best_checkpoint_is_uploaded_as_a_model_artifact(recorded):
    (artifact,) = [r["artifact"] for r in recorded["records"]
                   if r["type"] == "artifact" and r["artifact"]["type"] == "model"]
    assert artifact["name"] == "model-t1" and "best" in artifact["aliases"]
    assert sorted(e["path"] for e in artifact["manifest"]["contents"]) == ["manifest.json", "state.pt"]


def test_audit_finds_nothing_missing(recorded):
    assert_complete(recorded["folder"])


def test_api_key_is_written_nowhere(recorded, wandb_env):
    files = [p for p in wandb_env.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "ledger.json" for p in files)
    assert [p for p in files if FAKE_KEY.encode() in p.read_bytes()] == []


# ----------------------------------------------------------------------------- what a record survives


KILLED_WRITER = """\
import os, signal, sys
from celeb.records import RecordKeeper, RunInfo
keeper = RecordKeeper("offline").start()
keeper.update(sys.argv[1], RunInfo(run_id="k1", group="g", project="celeb-test", metric="val/loss"))
keeper.wait()  # the segment is open and holds both epochs, in staging
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_nothing_that_counts_and_the_next_writes_every_epoch(wandb_env):
    folder = wandb_env / "killed" / "trial_k1"
    write_epochs(folder, range(1, 3))
    # WANDB_SERVICE: this process's wandb service, which a child would otherwise share (and keep its run open in)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder)], cwd=REPO, timeout=120,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert list((folder / "wandb" / ".staging").iterdir()) and segments_of(folder) == []

    write_epochs(folder, range(3, 4))
    keeper = RecordKeeper("offline").start()
    keeper.close(str(folder), info("k1"), "finished")
    report = keeper.drain()
    assert len(report.discarded) == 1 and "staging" in report.discarded[0]
    assert not (folder / "wandb" / ".staging").exists() and len(segments_of(folder)) == 1
    assert sorted(assert_complete(folder).recorded.rows) == [10, 20, 30]


def test_a_segment_moved_into_place_but_not_listed_is_replaced(wandb_env):
    folder = wandb_env / "unlisted" / "trial_u1"
    write_epochs(folder, range(1, 3))
    keeper = RecordKeeper("offline").start()
    keeper.close(str(folder), info("u1"), "finished", final=False)
    keeper.drain()
    ledger_file = folder / "wandb" / "ledger.json"
    ledger_file.unlink()  # killed between the move and the ledger's update
    write_epochs(folder, range(3, 4))
    keeper = RecordKeeper("offline").start()
    keeper.close(str(folder), info("u1"), "finished")
    assert len(keeper.drain().discarded) == 1
    assert_complete(folder)
    assert Ledger.read(folder).segments[0].first_step == 10  # every epoch written again, once


def test_a_resumed_run_continues_its_record_and_a_repeated_epoch_is_written_once(wandb_env):
    folder = wandb_env / "resumed" / "trial_r1"
    write_epochs(folder, range(1, 3))
    first = RecordKeeper("offline").start()
    first.update(str(folder), info("r1"))
    first.close(str(folder), info("r1"), "finished", final=False)  # the sweep was interrupted
    first.drain()
    assert Ledger.read(folder).final is None
    write_epochs(folder, range(2, 5))  # resumed from epoch 1's checkpoint: epoch 2 runs again
    second = RecordKeeper("offline").start()
    second.update(str(folder), info("r1"))
    second.close(str(folder), info("r1"), "finished")
    second.drain()
    result = assert_complete(folder)
    assert [s["steps"] for s in result.recorded.segments] == [[10, 20], [30, 40]]
    assert {s["run"]["run_id"] for s in result.recorded.segments} == {"r1"}
    assert result.repeated_epochs == 1


def test_a_failed_run_ends_failed_and_a_retry_that_succeeds_ends_finished(wandb_env):
    folder = wandb_env / "failed" / "trial_f1"
    write_epochs(folder, range(1, 2))
    keeper = RecordKeeper("offline").start()
    keeper.close(str(folder), info("f1"), "failed")
    keeper.drain()
    assert_complete(folder, state="failed")
    assert Ledger.read(folder).final == "failed"
    write_epochs(folder, range(2, 3))  # `--resume` retries errored trials
    keeper = RecordKeeper("offline").start()
    keeper.close(str(folder), info("f1"), "finished")
    keeper.drain()
    assert_complete(folder, state="finished")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_wandb_costs_nothing_and_keeps_every_record_for_later(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    folders = [wandb_env / "outage" / f"trial_o{i}" for i in range(3)]
    started = time.monotonic()
    keeper = RecordKeeper("online").start()
    for i, folder in enumerate(folders):
        write_epochs(folder, range(1, 3))
        keeper.update(str(folder), info(f"o{i}"))
        keeper.close(str(folder), info(f"o{i}"), "finished")
    report = keeper.drain()
    assert time.monotonic() - started < 20  # writing the records, not waiting on W&B
    assert report.uploaded == 0 and len(report.not_uploaded) == 3
    described = report.describe(str(wandb_env / "outage"))
    assert "NOT uploaded: 3 segments" in described and "unreachable" in described
    assert f"celeb wandb {wandb_env / 'outage'} --upload" in described
    for folder in folders:
        assert_complete(folder)
        assert [s.uploaded for s in Ledger.read(folder).segments] == [False]

    from celeb.cli import main

    started = time.monotonic()
    with pytest.raises(SystemExit, match="3 segments were not uploaded"):
        main(["wandb", str(wandb_env / "outage"), "--upload"])
    assert time.monotonic() - started < 20


# ----------------------------------------------------------------------------- `celeb wandb`


def test_celeb_wandb_writes_records_from_the_folders_alone_and_is_idempotent(wandb_env, capsys):
    from celeb.cli import main

    sweep = wandb_env / "no-driver"
    for trial_id in ("a1", "a2"):
        folder = sweep / f"trial_{trial_id}"
        write_epochs(folder, range(1, 4))
        (folder / "params.json").write_text(json.dumps({"seed": 1, "task": "cvae", "lr": 0.01}))
    (sweep / "sweep_spec.json").write_text(json.dumps({"metric": "val/loss", "mode": "min"}))
    assert main(["wandb", str(sweep)]) == 0
    assert "6 epoch records of 2 runs written in 2 segments" in capsys.readouterr().out
    for trial_id in ("a1", "a2"):
        (segment,) = assert_complete(sweep / f"trial_{trial_id}").recorded.segments
        assert segment["run"]["run_group"] == "no-driver" and segment["run"]["run_id"] == trial_id
        assert segment["summary"]["best/val/loss"] == pytest.approx(1 / 3) and segment["config"]["lr"] == 0.01

    assert main(["wandb", str(sweep)]) == 0  # nothing new: nothing written
    assert "0 epoch records of 2 runs written in 0 segments" in capsys.readouterr().out
    assert all(len(segments_of(sweep / f"trial_{t}")) == 1 for t in ("a1", "a2"))

    ledger = Ledger.read(sweep / "trial_a2")
    ledger.final = "failed"
    ledger.write(sweep / "trial_a2")
    assert main(["wandb", str(sweep), "--rebuild"]) == 0
    assert_complete(sweep / "trial_a1")
    assert_complete(sweep / "trial_a2", state="failed")  # a rebuilt run keeps how it ended


def test_celeb_wandb_names_what_is_missing(tmp_path, capsys):
    from celeb.cli import main

    assert main(["wandb", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["wandb", str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the run folder


def test_a_row_cut_short_is_dropped_and_the_next_append_starts_a_clean_line(tmp_path):
    runfolder.append_row(tmp_path, {"step": 10, "val/loss": 1.0})
    with open(tmp_path / runfolder.METRICS_FILE, "a") as f:
        f.write('{"step": 20, "val/lo')  # the writer was killed mid-line
    assert runfolder.read_rows(tmp_path) == [{"step": 10, "val/loss": 1.0}]
    runfolder.append_row(tmp_path, {"step": 20, "val/loss": 0.5})
    assert runfolder.read_rows(tmp_path) == [{"step": 10, "val/loss": 1.0}, {"step": 20, "val/loss": 0.5}]


def test_a_damaged_row_inside_the_file_is_an_error_naming_the_line(tmp_path):
    (tmp_path / runfolder.METRICS_FILE).write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not a JSON object"):
        runfolder.read_rows(tmp_path)


def test_epoch_rows_keep_the_first_of_each_step_and_best_row_the_earliest_best():
    rows = [{"step": 10, "v": 3.0}, {"step": 20, "v": 1.0}, {"step": 20, "v": 9.0}, {"step": 30, "v": 1.0},
            {"step": 40, "v": float("nan")}]
    assert [r["v"] for r in runfolder.epoch_rows(rows)][:3] == [3.0, 1.0, 1.0]
    assert runfolder.repeated_steps(rows) == 1
    assert runfolder.best_row(rows, "v", "min")["step"] == 20
    assert runfolder.best_row(rows, "v", "max")["step"] == 20  # the repeat of step 20 (9.0) is a row too
    assert runfolder.best_row(runfolder.epoch_rows(rows), "v", "max")["step"] == 10
    assert runfolder.best_row(rows, "missing", "min") is None


def test_local_tracker_writes_latest_and_per_step_tables(tmp_path):
    tracker = LocalTracker(tmp_path)
    MultiTracker(NullTracker(), tracker).log_table("val/per_attribute", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
                                                   step=20)
    tracker.log_table("val/per_attribute", pd.DataFrame({"a": [3], "b": ["z"]}), step=30)
    assert (tmp_path / "val_per_attribute.csv").read_text().splitlines() == ["a,b", "3,z"]
    assert pd.read_csv(tmp_path / "tables" / "val_per_attribute_step0000020.csv").to_dict("list") == {
        "a": [1, 2], "b": ["x", "y"]}
    assert sorted(runfolder.logged_files(tmp_path, runfolder.TABLES_DIR)) == [20, 30]
    assert not list(tmp_path.rglob("*.tmp*"))


def test_importing_the_trackers_and_records_does_not_import_wandb():
    code = "import sys, celeb.training.tracking, celeb.records; assert 'wandb' not in sys.modules, 'wandb was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- mode and config rules


@pytest.mark.parametrize("mode, environ, expected", [
    ("auto", {"WANDB_API_KEY": "k"}, "online"),
    ("auto", {}, "offline"),
    ("auto", {"WANDB_API_KEY": "  "}, "offline"),
    ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
    ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "dryrun"}, "offline"),
    ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "disabled"}, "disabled"),
    ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "online"}, "online"),
    ("offline", {"WANDB_API_KEY": "k"}, "offline"),
    ("online", {}, "online"),
    ("disabled", {"WANDB_API_KEY": "k"}, "disabled"),
])
def test_resolve_wandb_mode(mode, environ, expected):
    assert resolve_wandb_mode(mode, environ) == expected


def test_resolve_wandb_mode_rejects_unknown_modes():
    with pytest.raises(ValueError, match="'offlin' is not one of auto, online, offline, disabled"):
        resolve_wandb_mode("offlin", {})


def test_loggable_config_drops_credentials():
    config = {"seed": 3, "lr": np.float32(0.5), "data.data_dir": Path("/d"), "WANDB_API_KEY": "x", "hf-Token": "x",
              "db.password": "x", "client_secret": "x", "comment": "uses k123", "nested": {"apikey": "x", "width": 8}}
    assert loggable_config(config, {"WANDB_API_KEY": "k123"}) == {
        "seed": 3, "lr": 0.5, "data.data_dir": "/d", "nested": {"width": 8}}


def test_disabled_records_touch_nothing(tmp_path):
    write_epochs(tmp_path, range(1, 2))
    keeper = RecordKeeper("disabled").start()
    keeper.update(str(tmp_path), info())
    keeper.close(str(tmp_path), info())
    assert keeper.drain().describe("x") == "W&B: disabled" and not (tmp_path / "wandb").exists()
