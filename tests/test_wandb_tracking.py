"""WandbTracker against real offline wandb runs, read back with `wandb leet inspect`; log_table on the
local trackers; the W&B mode rules, the credential filter, and failures that must not stop training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from celeb.tracking import (LocalTracker, MultiTracker, NullTracker, WandbTracker, WandbWarning, as_image_array,
                            loggable_config, offline_run_records, resolve_wandb_mode)

FAKE_KEY = "fakekey0123456789abcdef0123456789abcdef01"
RUN_ID = "trial_00001"


def records(run_path: Path) -> list[dict]:
    return offline_run_records(run_path)


def history(recs: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in recs if r["type"] == "history"]


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """Offline, silent wandb with every wandb folder under a temp root and a fake key in the environment."""
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


@pytest.fixture(scope="module")
def logged(wandb_env):
    """One offline run with everything a trial logs, finished; returns what was logged and where."""
    run_dir = wandb_env / "trial"
    generator = torch.Generator().manual_seed(0)
    images = {"reconstructions": torch.rand(6, 3, 8, 8, generator=generator),
              "one": np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)}
    table = pd.DataFrame({"attribute": ["Smiling", "Male"], "auroc": [0.91, 0.97], "positive": [True, False]})
    checkpoint = wandb_env / "checkpoint" / "epoch_002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.pt").write_bytes(b"weights")
    (checkpoint / "meta.json").write_text('{"epoch": 2}')

    tracker = WandbTracker(group="sweep-a", name="trial 1", run_id=RUN_ID, run_dir=run_dir, job_type="train",
                           tags=("cvae",), config={"seed": 7, "lr": 1e-3, "cvae.latent_dim": 16,
                                                   "wandb_api_key": FAKE_KEY, "hf_token": "tok",
                                                   "note": f"key={FAKE_KEY}"})
    tracker.log_images(images, step=10)
    tracker.log({"epoch": 1, "step": 10, "train/loss": np.float32(2.5), "val/kl_per_dim": [0.1, 0.2],
                 "task": "cvae", "improved": True, "val/active_dims": torch.tensor(3)}, step=10)
    tracker.log({"epoch": 2, "step": 20, "train/loss": 2.0}, step=20)
    tracker.log({"epoch": 2, "step": 15, "train/loss": 99.0}, step=15)  # lower than the last: skipped
    tracker.log_table("val/per_attribute", table, step=20)
    tracker.log({"epoch": 3, "step": 30, "train/loss": 1.0}, step=30)
    tracker.set_summary({"best/val_loss": 0.5, "best/epoch": 2})
    tracker.log_checkpoint(checkpoint, "model-trial_1:best?", {"epoch": 2, "val/loss": 0.5})
    assert tracker.mode == "offline" and tracker.active  # auto + WANDB_MODE=offline, despite the key
    sync_dir = tracker.sync_dir
    tracker.finish()
    assert not tracker.active
    tracker.log({"train/loss": 0.0}, step=40)  # after finish: nothing, no error
    return {"run_dir": run_dir, "sync_dir": sync_dir, "images": images, "table": table,
            "records": records(sync_dir), "summary": offline_run_records(sync_dir, summary=True)[0]}


def test_offline_run_layout(logged):
    run_files = [p.relative_to(logged["run_dir"]).as_posix() for p in logged["run_dir"].rglob("*.wandb")]
    assert len(run_files) == 1
    assert re.fullmatch(rf"wandb/offline-run-\d{{8}}_\d{{6}}-{RUN_ID}/run-{RUN_ID}\.wandb", run_files[0])
    assert logged["sync_dir"] == (logged["run_dir"] / run_files[0]).parent


def test_run_record_has_group_name_id_and_safe_config(logged):
    (run,) = [r["run"] for r in logged["records"] if r["type"] == "run"]
    assert (run["run_group"], run["display_name"], run["run_id"], run["project"]) == (
        "sweep-a", "trial 1", RUN_ID, "celeb")
    assert run["job_type"] == "train" and run["tags"] == ["cvae"] and run["resume"] is True
    config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
    assert config == {"seed": 7, "lr": 1e-3, "cvae.latent_dim": 16}
    assert logged["summary"]["config"] == config


def test_scalar_history_at_trainer_steps(logged):
    rows = history(logged["records"])
    assert [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r] == [(10, 2.5), (20, 2.0), (30, 1.0)]
    first = next(r for r in rows if "train/loss" in r)
    assert first["improved"] is True and first["val/active_dims"] == 3 and first["epoch"] == 1
    assert not any("val/kl_per_dim" in r or "task" in r for r in rows)  # lists and strings are not logged
    assert [r["_step"] for r in rows] == list(range(len(rows)))  # W&B's own counter never skips a row
    metrics = [r["metric"] for r in logged["records"] if r["type"] == "metric"]
    assert {"glob_name": "*", "step_metric": "step"}.items() <= next(m for m in metrics if "glob_name" in m).items()


def test_images_are_recorded_pixel_for_pixel(logged):
    row = next(r for r in history(logged["records"]) if "reconstructions._type" in r)
    assert row["step"] == 10 and row["one._type"] == "image-file"
    assert (row["reconstructions.width"], row["reconstructions.height"]) == (2 + 6 * 10, 2 + 10)  # one grid row
    for name, image in logged["images"].items():
        png = Image.open(logged["sync_dir"] / "files" / row[f"{name}.path"])
        assert np.array_equal(np.asarray(png.convert("RGB")), as_image_array(image))


def test_table_is_recorded_with_its_rows(logged):
    row = next(r for r in history(logged["records"]) if "val/per_attribute._type" in r)
    assert row["val/per_attribute._type"] == "table-file" and row["step"] == 20
    assert (row["val/per_attribute.nrows"], row["val/per_attribute.ncols"]) == (2, 3)
    stored = json.loads((logged["sync_dir"] / "files" / row["val/per_attribute.path"]).read_text())
    assert stored["columns"] == list(logged["table"].columns)
    assert stored["data"] == logged["table"].to_numpy().tolist()


def test_summary_and_state(logged):
    summary = logged["summary"]
    assert summary["state"] == "finished" and summary["run_id"] == RUN_ID and summary["name"] == "trial 1"
    assert summary["summary"]["best/val_loss"] == 0.5 and summary["summary"]["best/epoch"] == 2
    assert summary["summary"]["train/loss"] == 1.0  # the last logged value


def test_checkpoint_artifact_record(logged):
    (artifact,) = [r["artifact"] for r in logged["records"]
                   if r["type"] == "artifact" and r["artifact"]["type"] == "model"]
    assert artifact["name"] == "model-trial_1-best-"  # ':' and '?' are not allowed in artifact names
    assert "best" in artifact["aliases"] and artifact["run_id"] == RUN_ID
    assert sorted(e["path"] for e in artifact["manifest"]["contents"]) == ["meta.json", "model.pt"]
    assert json.loads(artifact["metadata"]) == {"epoch": 2, "val/loss": 0.5}


def test_api_key_is_written_nowhere(logged, wandb_env):
    files = [p for p in wandb_env.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert [p for p in files if FAKE_KEY.encode() in p.read_bytes()] == []
    assert FAKE_KEY not in json.dumps(records(logged["sync_dir"]))


# ----------------------------------------------------------------------------- failures never stop training


def test_init_failure_warns_once_and_becomes_a_no_op(wandb_env, monkeypatch, tmp_path):
    import wandb

    def unreachable(**kwargs):
        raise RuntimeError(f"could not reach api.wandb.ai with key {FAKE_KEY}")

    monkeypatch.setattr(wandb, "init", unreachable)
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"w")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = WandbTracker(group="g", name="t", config={"seed": 1}, run_dir=tmp_path / "run", mode="online")
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.log_images({"x": torch.zeros(3, 4, 4)}, step=1)
        tracker.log_table("t", pd.DataFrame({"a": [1]}), step=1)
        tracker.set_summary({"best": 1.0})
        tracker.log_checkpoint(checkpoint, "m", {})
        tracker.finish()
    messages = [str(w.message) for w in caught if issubclass(w.category, WandbWarning)]
    assert len(messages) == 1 and not tracker.active
    assert "wandb.init" in messages[0] and "continues without W&B" in messages[0] and "wandb sync" in messages[0]
    assert FAKE_KEY not in messages[0] and "<WANDB_API_KEY>" in messages[0]


def test_logging_failure_warns_once_and_still_closes_the_run(wandb_env, tmp_path):
    tracker = WandbTracker(group="g", name="t", config={"seed": 1}, run_dir=tmp_path / "run", run_id="broken")
    tracker.log({"train/loss": 1.0}, step=1)

    def broken(*args, **kwargs):
        raise ValueError("bad value")

    tracker.run.log = broken
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log({"train/loss": 2.0}, step=2)
        tracker.log({"train/loss": 3.0}, step=3)
        tracker.log_images({"x": torch.zeros(3, 4, 4)}, step=3)
        tracker.set_summary({"best": 1.0})
        sync_dir = tracker.sync_dir
        tracker.finish()
    messages = [str(w.message) for w in caught if issubclass(w.category, WandbWarning)]
    assert len(messages) == 1 and "ValueError: bad value" in messages[0]
    assert f"wandb sync {sync_dir}" in messages[0]
    recs = records(sync_dir)
    assert [r["train/loss"] for r in history(recs)] == [1.0]
    assert recs[-1]["type"] == "exit"  # the offline file is complete and can be synced
    assert "best" not in offline_run_records(sync_dir, summary=True)[0]["summary"]


def test_disabled_mode_touches_nothing(tmp_path):
    tracker = WandbTracker(group=None, name=None, config={}, run_dir=tmp_path / "run", mode="disabled")
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.log_table("t", pd.DataFrame({"a": [1]}), step=1)
    tracker.finish()
    assert tracker.mode == "disabled" and not tracker.active and not (tmp_path / "run").exists()


def test_importing_tracking_does_not_import_wandb():
    code = "import sys, celeb.tracking; assert 'wandb' not in sys.modules, 'wandb was imported'"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
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


# ----------------------------------------------------------------------------- log_table on the other trackers


def test_local_tracker_writes_latest_and_per_step_tables(tmp_path):
    tracker = LocalTracker(tmp_path)
    MultiTracker(NullTracker(), tracker).log_table("val/per_attribute", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
                                                   step=20)
    tracker.log_table("val/per_attribute", pd.DataFrame({"a": [3], "b": ["z"]}), step=30)
    assert (tmp_path / "val_per_attribute.csv").read_text().splitlines() == ["a,b", "3,z"]
    assert pd.read_csv(tmp_path / "tables" / "val_per_attribute_step0000020.csv").to_dict("list") == {
        "a": [1, 2], "b": ["x", "y"]}
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "val_per_attribute_step0000020.csv", "val_per_attribute_step0000030.csv"]
    assert not list(tmp_path.rglob("*.tmp*"))
