"""The training loop, checkpoints, trackers and the local run: determinism, exact resume, NaN handling,
early stopping, and both models learning on synthetic faces through `celeb train`."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from celeb.training.checkpoint import capture_rng_state, list_checkpoints, load_checkpoint, restore_rng_state
from celeb.config import ConfigError, TrainConfig, config_from_dict
from celeb.data.dataset import CelebData
from celeb.data.splits import MAX_POS_WEIGHT, positive_weight_array
from celeb.training.classifier_task import ClassifierTask
from celeb.training.cvae_task import CVAETask
from celeb.training.nvae_task import NVAETask
from celeb.training.loop import NonFiniteLossError, fit
from celeb.training.tracking import LocalTracker, read_metrics

REPO = Path(__file__).resolve().parents[1]
LOSS_KEYS = ("train/loss", "val/loss")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def squares(n: int = 96, size: int = 64, seed: int = 0) -> CelebData:
    """Coloured squares whose first attributes are visible: square colour (attrs 0-2), a top band (3)."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, 40)) < 0.4
    images = np.full((n, size, size, 3), 40, np.uint8)
    q = size // 4
    images[:, q:3 * q, q:3 * q] = np.where(labels[:, None, None, :3], 200, 60)
    images[labels[:, 3], : q // 2] = 255
    split = np.array(["train"] * (n * 2 // 3) + ["val"] * (n - n * 2 // 3 - 8) + ["test"] * 8)
    return CelebData(images, labels, split)


def tiny(task: str, **overrides) -> TrainConfig:
    base = {"task": task, "device": "cpu", "epochs": 3, "batch_size": 16, "lr": 3e-3, "num_recon": 4,
            "cvae.width": 4, "cvae.latent_dim": 4, "cvae.conditions": ["Male", "Smiling"],
            "cvae.warmup_epochs": 1.0, "data.augment": "light",
            "classifier.dropout": 0.2, "classifier.augment": "heavy"}
    return config_from_dict({**base, **overrides})


@pytest.fixture(scope="module")
def data64() -> CelebData:
    return squares(size=64)


@pytest.fixture(scope="module")
def data16() -> CelebData:
    return squares(size=16)


def data_for(task: str, data64: CelebData, data16: CelebData) -> CelebData:
    return data16 if task == "classifier" else data64  # the VAEs need 64 px; the classifier is fastest small


def losses(history: list[dict]) -> list[tuple[float, ...]]:
    return [tuple(m[k] for k in LOSS_KEYS) for m in history]


# ----------------------------------------------------------------------------- determinism, resume


@pytest.mark.parametrize("task", ["cvae", "nvae", "classifier"])
def test_same_seed_same_losses_other_seed_other_losses(task, data64, data16):
    data = data_for(task, data64, data16)
    first = fit(tiny(task, epochs=2), data)
    again = fit(tiny(task, epochs=2), data)
    other = fit(tiny(task, epochs=2, seed=1), data)
    assert losses(first.history) == losses(again.history)
    assert losses(first.history) != losses(other.history)
    assert all(np.isfinite(v) for row in losses(first.history) for v in row)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("task", ["cvae", "nvae", "classifier"])
def test_resumed_run_ends_bit_identical_to_uninterrupted_run(task, data64, data16, tmp_path):
    data = data_for(task, data64, data16)
    config = tiny(task, epochs=3)
    whole = fit(config, data, run_dir=tmp_path / "whole")

    def crash_after_first_epoch(metrics, checkpoint_dir):
        if metrics["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(config, data, on_epoch_end=crash_after_first_epoch, run_dir=tmp_path / "resumed")
    checkpoint = tmp_path / "resumed" / "checkpoints" / "epoch_001"
    torch.manual_seed(12345)  # the resumed run must not depend on the state the process is in
    np.random.seed(999)
    resumed = fit(config, data, state=checkpoint, run_dir=tmp_path / "resumed")

    assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
    assert losses(resumed.history) == losses(whole.history)
    expected, got = whole.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_checkpoint_holds_everything_and_loads_weights_only(data64, tmp_path):
    result = fit(tiny("cvae", epochs=2, early_stopping_metric="val/mse"), data64, run_dir=tmp_path)
    state = load_checkpoint(result.last_checkpoint)  # torch.load(weights_only=True) inside
    assert state["epoch"] == 2 and state["step"] == result.history[-1]["step"]
    assert {"model", "optimizer", "scheduler", "scaler", "config", "metrics", "rng_state", "loop_state"} <= set(state)
    assert state["config"]["cvae"]["width"] == 4
    assert state["loop_state"]["best"]["epoch"] == result.best_epoch
    assert len(state["metrics"]["val/kl_per_dim"]) == 4
    meta = json.loads((result.last_checkpoint / "meta.json").read_text())
    assert meta["epoch"] == 2 and meta["code"]["version"] and meta["metrics"]["val/loss"] == result.metrics["val/loss"]
    assert set(list_checkpoints(tmp_path / "checkpoints")) <= {result.last_checkpoint, result.best_checkpoint}


def test_a_checkpoint_is_sealed_and_one_cut_short_is_refused(data64, tmp_path):
    from celeb.training import sealed

    result = fit(tiny("cvae", epochs=1), data64, run_dir=tmp_path)
    assert sealed.check(result.last_checkpoint) == {"epoch": 1, "step": result.history[-1]["step"]}
    state = result.last_checkpoint / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # killed mid-copy
    with pytest.raises(sealed.IncompleteFolderError, match=rf"checkpoint {result.last_checkpoint} is incomplete: "
                                                           r"state\.pt has .* bytes, its manifest says"):
        load_checkpoint(result.last_checkpoint)


def test_rng_state_round_trip():
    generator = torch.Generator().manual_seed(5)
    state = capture_rng_state({"noise": generator})
    draws = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=generator))
    random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=generator)  # move on
    restore_rng_state(state, {"noise": generator})
    again = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=generator))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2]) and torch.equal(draws[3], again[3])


# ----------------------------------------------------------------------------- failures, stopping


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(data64, tmp_path, monkeypatch):
    real_loss = CVAETask.loss

    def loss_that_breaks(self, model, x, y, at, noise):
        loss, parts = real_loss(self, model, x, y, at, noise)
        return (loss * float("nan") if (at.epoch, at.step_in_epoch) == (1, 2) else loss), parts

    monkeypatch.setattr(CVAETask, "loss", loss_that_breaks)
    expected = r"nan during training at epoch 2, step 3 \(global step 7\).*Lower the learning rate"
    with pytest.raises(NonFiniteLossError, match=expected):
        fit(tiny("cvae", epochs=3), data64, run_dir=tmp_path)
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["epoch_001"]
    state = load_checkpoint(kept[0])
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_huge_learning_rate_is_caught(data64, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"the loss became (nan|inf).*epoch 1") as caught:
        fit(tiny("cvae", lr=1e6, epochs=2), data64, run_dir=tmp_path)
    assert caught.value.last_checkpoint is None  # nothing written before the first epoch ended
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_early_stopping_keeps_last_and_best_checkpoints(data64, tmp_path, monkeypatch):
    scores = iter([3.0, 2.0, 2.5, 2.1, 2.2, 1.0])  # best at epoch 2, then three evaluations without gain
    real_evaluate = CVAETask.evaluate

    def evaluate(self, model, loader, at, final):
        evaluation = real_evaluate(self, model, loader, at, final)
        evaluation.metrics["val/loss"] = next(scores)
        return evaluation

    monkeypatch.setattr(CVAETask, "evaluate", evaluate)
    result = fit(tiny("cvae", epochs=6, early_stopping_patience=3, max_train_batches=1), data64, run_dir=tmp_path)
    assert result.stopped_early and len(result.history) == 5
    assert result.best_epoch == 2 and result.best_metric == 2.0
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["epoch_002", "epoch_005"]
    assert result.history[-1]["step"] == 5  # max_train_batches=1 per epoch


def test_eval_every_skips_val_between_evaluations(data16):
    result = fit(tiny("classifier", epochs=3, eval_every=2, max_train_batches=2), data16)
    assert ["val/loss" in m for m in result.history] == [False, True, True]  # the last epoch always evaluates
    assert {"val/balanced_accuracy", "val/auroc", "val/baseline_balanced_accuracy", "val/bacc/Male"} <= set(
        result.metrics)


def test_unknown_early_stopping_metric_names_the_choices(data16):
    with pytest.raises(ConfigError, match=r"'early_stopping_metric': 'val/bogus'.*val/balanced_accuracy"):
        fit(tiny("classifier", epochs=1, max_train_batches=1, early_stopping_metric="val/bogus"), data16)


def test_empty_val_split_is_a_clear_error(data16):
    no_val = CelebData(data16.images, data16.labels, np.where(data16.split == "val", "test", data16.split))
    with pytest.raises(ValueError, match="no val rows"):
        fit(tiny("classifier", epochs=1), no_val)


# ----------------------------------------------------------------------------- tracking


def test_local_tracker_writes_jsonl_csv_and_pngs(tmp_path):
    tracker = LocalTracker(tmp_path)
    tracker.log({"epoch": 1, "train/loss": np.float32(2.5), "val/kl_per_dim": [0.1, 0.2]}, step=10)
    tracker.log({"epoch": 2, "train/loss": 2.0, "val/loss": 1.5}, step=20)
    tracker.log_images({"reconstructions": torch.rand(6, 3, 8, 8), "one": np.zeros((5, 7, 3), np.uint8)}, step=20)
    LocalTracker(tmp_path).log({"epoch": 3, "train/loss": 1.0}, step=30)  # a resumed run appends

    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30] and rows[0]["val/kl_per_dim"] == [0.1, 0.2]
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "step,epoch,train/loss,val/loss"  # list values stay in the JSON lines
    assert csv_lines[1:] == ["10,1,2.5,", "20,2,2.0,1.5", "30,3,1.0,"]
    assert Image.open(tmp_path / "one.png").size == (7, 5)
    grid = Image.open(tmp_path / "images" / "reconstructions_step0000020.png")
    assert grid.size == (2 + 6 * 10, 2 + 10)  # make_grid: 6 images of 8 px + 2 px padding in one row


# ----------------------------------------------------------------------------- the local run, end to end


@pytest.mark.slow
def test_celeb_train_cvae_beats_the_mean_image_baseline(synthetic_data, tmp_path):
    from celeb.cli import main

    run_dir = tmp_path / "run"
    code = main(["train", "cvae", str(REPO / "configs" / "cvae_debug.yaml"), "--run-dir", str(run_dir),
                 "--set", f"data.data_dir={synthetic_data}", "--set", "epochs=6", "--set", "batch_size=16",
                 "--set", "lr=3e-3", "--set", "data.augment=none", "--set", "max_train_batches=null",
                 "--set", "device=cpu"])
    assert code == 0
    summary = json.loads((run_dir / "metrics.json").read_text())
    first, last = summary["history"][0], summary["final"]
    assert last["val/mse"] < 0.8 * last["val/baseline_mse"]
    assert last["val/loss"] < first["val/loss"]
    assert last["val/active_dims"] >= 1
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "reconstructions.png"):
        assert (run_dir / name).exists(), name
    assert 1 <= len(list_checkpoints(run_dir / "checkpoints")) <= 2
    width, height = Image.open(run_dir / "reconstructions.png").size
    assert height == 2 + 2 * (64 + 2)  # originals above reconstructions


@pytest.mark.slow
def test_celeb_train_classifier_beats_the_majority_baseline(synthetic_data, tmp_path):
    from celeb.cli import main

    run_dir = tmp_path / "run"
    code = main(["train", "classifier", str(REPO / "configs" / "classifier_debug.yaml"), "--run-dir", str(run_dir),
                 "--set", f"data.data_dir={synthetic_data}", "--set", "data.image_size=32",
                 "--set", "epochs=8", "--set", "batch_size=32", "--set", "lr=1e-2", "--set", "classifier.augment=none",
                 "--set", "classifier.dropout=0.0", "--set", "max_train_batches=null", "--set", "device=cpu"])
    assert code == 0
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert final["val/balanced_accuracy"] > final["val/baseline_balanced_accuracy"] + 0.05
    assert (run_dir / "balanced_accuracy.png").exists()


def test_celeb_train_with_wandb_records_every_epoch_and_panel_from_its_run_folder(synthetic_data, tmp_path,
                                                                                   monkeypatch):
    from celeb.cli import main
    from celeb.records import audit

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    run_dir = tmp_path / "run"
    assert main(["train", "cvae", str(REPO / "configs" / "cvae_debug.yaml"), "--run-dir", str(run_dir),
                 "--set", f"data.data_dir={synthetic_data}", "--set", "epochs=2", "--set", "device=cpu",
                 "--wandb", "celeb-test"]) == 0
    result = audit(run_dir)
    assert result.epochs == 2 and result.missing_epochs == [] and result.panels >= 2 and result.missing_panels == []
    (segment,) = result.recorded.segments
    assert segment["state"] == "finished" and segment["run"]["project"] == "celeb-test"
    assert segment["run"]["run_id"] == "run" and segment["run"]["run_group"] == "local"


def test_task_on_the_command_line_must_match_the_config(tmp_path):
    from celeb.training.local import run_local

    with pytest.raises(ConfigError, match=r"is a 'classifier' config but you asked for `celeb train cvae`"):
        run_local("cvae", REPO / "configs" / "classifier_debug.yaml", [], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="'data.data_dir' is empty"):
        run_local("cvae", REPO / "configs" / "cvae_debug.yaml", ["data.data_dir=''"], run_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="celeb prepare"):
        run_local("cvae", REPO / "configs" / "cvae_debug.yaml", [f"data.data_dir={tmp_path / 'nowhere'}"],
                  run_dir=tmp_path)


def test_classifier_uses_split_pos_weight_or_computes_it(data16):
    config = tiny("classifier")
    computed = ClassifierTask(config, data16, torch.device("cpu")).pos_weight
    train = data16.labels[data16.indices("train")]
    expected = (len(train) - train.sum(0)) / np.maximum(train.sum(0), 1)
    assert np.allclose(computed.numpy(), np.where(train.sum(0) > 0, np.minimum(expected, MAX_POS_WEIGHT), MAX_POS_WEIGHT))
    assert np.array_equal(computed.numpy(), positive_weight_array(train))  # the rule behind pos_weight.json
    given = CelebData(data16.images, data16.labels, data16.split, pos_weight=np.full(40, 3.0, np.float32))
    assert torch.equal(ClassifierTask(config, given, torch.device("cpu")).pos_weight, torch.full((40,), 3.0))


@pytest.mark.filterwarnings("ignore:.*(single label|classes not in y_true)")  # a one-batch val set
def test_each_task_reports_the_metrics_it_declares(data64, data16):
    # The sweep spec's metric check reads these declarations, so they must match what fit reports.
    cvae = fit(tiny("cvae", epochs=2, max_train_batches=1, **{"cvae.final_metrics": True}), data64).history
    assert set(CVAETask.epoch_metrics) <= set(cvae[0]) and set(CVAETask.epoch_metrics) <= set(cvae[-1])
    assert set(CVAETask.final_metrics) <= set(cvae[-1]) and not set(CVAETask.final_metrics) & set(cvae[0])
    nvae = fit(tiny("nvae", epochs=1, max_train_batches=1), data64).history
    assert set(NVAETask.epoch_metrics) <= set(nvae[-1])
    classifier = fit(tiny("classifier", epochs=1, max_train_batches=1), data16).history
    assert set(ClassifierTask.epoch_metrics + ClassifierTask.final_metrics) <= set(classifier[-1])


def test_streaming_the_cache_trains_exactly_as_serving_it_from_ram(synthetic_data):
    from celeb.data.dataset import load_data

    data = load_data(synthetic_data)
    histories = [fit(tiny("cvae", epochs=1, max_train_batches=3, **{"data.placement": placement}), data).history
                 for placement in ("ram", "stream")]
    for key in ("train/loss", "val/loss", "val/mse", "val/kl"):
        assert histories[0][-1][key] == histories[1][-1][key]


def test_inception_trains_from_a_299_px_cache_without_upscaling(synthetic_data, monkeypatch):
    from celeb.cli import main
    from celeb.data.dataset import load_data

    celeba = synthetic_data.parent / "celeba"
    assert main(["prepare", str(celeba), "--out", str(synthetic_data), "--size", "299", "--crop", "178",
                 "--workers", "1"]) == 0
    data = load_data(synthetic_data, image_size=299, crop=178)
    assert data.images.shape[1:] == (299, 299, 3)

    def no_upscaling(*args, **kwargs):
        raise AssertionError("the 299-px images were resized")

    monkeypatch.setattr(torch.nn.functional, "interpolate", no_upscaling)
    config = tiny("classifier", epochs=1, batch_size=2, eval_batch_size=32, max_train_batches=1,
                  **{"classifier.backbone": "inception_v3", "classifier.augment": "none",
                     "data.image_size": 299, "data.crop": 178})
    result = fit(config, data)
    assert math.isfinite(result.metrics["val/loss"]) and "val/balanced_accuracy" in result.metrics


def test_inception_on_small_images_warns_how_to_get_the_detail_back(data64):
    config = tiny("classifier", **{"classifier.backbone": "inception_v3"})
    with pytest.warns(UserWarning, match=r"upscaled to 299 px.*--size 299 --crop 178"):
        ClassifierTask(config, data64, torch.device("cpu"))
