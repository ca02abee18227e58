"""Sweep specs without Ray: loading and checking sweeps/*.yaml, the seed policy, ranking trials."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from celeb.config import TrainConfig
from celeb.sweep.spec import (SweepSpecError, base_trial_config, load_spec,
                         train_config_from_trial)
from celeb.sweep.ranking import rank_trials, summarize_configs
from celeb.seeds import trial_seeds

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))

GOOD = """\
name: t
task: cvae
data_dir: data
metric: val/mse
mode: min
num_trials: 4
fixed:
  epochs: 3
  cvae: {latent_dim: 8}
search:
  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
  cvae.beta: {type: uniform, low: 0.5, high: 4}
  batch_size: {type: choice, values: [32, 64]}
asha: {grace_period: 1}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(text: str, **changes) -> str:
    """GOOD with top-level keys replaced (None removes the key)."""
    raw = yaml.safe_load(text)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return yaml.safe_dump(raw, sort_keys=False)


def test_shipped_specs_load_and_match_their_file_names():
    assert {p.stem for p in SWEEPS} >= {"smoke", "cvae_beta_k", "classifier", "cvae_disentangle"}
    for path in SWEEPS:
        spec = load_spec(path)
        assert spec.name == path.stem
        config = train_config_from_trial({**base_trial_config(spec), "seed": 1,
                                          **{p.name: p.corners()[0] for p in spec.search}})
        assert config.task == spec.task


def test_smoke_spec_is_small_and_cpu_only():
    spec = load_spec(REPO / "sweeps" / "smoke.yaml")
    assert spec.resources.gpu == 0 and spec.fixed["device"] == "cpu"
    assert spec.epochs <= 3 and spec.total_trials <= 6 and spec.fixed["data.image_size"] in (32, 64)
    assert spec.max_concurrent == 1  # Optuna is reproducible only one trial at a time


def test_fractional_gpu_specs_always_ask_for_cpus():
    for path in SWEEPS:
        spec = load_spec(path)
        assert spec.resources.cpu >= 1


def test_good_spec_fields_and_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), base_dir=tmp_path)
    assert spec.data_dir == str(tmp_path / "data")
    assert spec.storage_path == str(tmp_path / "runs" / "sweeps")
    assert spec.experiment_path == f"{tmp_path}/runs/sweeps/t"
    assert spec.fixed == {"epochs": 3, "cvae.latent_dim": 8}
    assert [p.name for p in spec.search] == ["lr", "cvae.beta", "batch_size"]
    assert spec.search[0].low == pytest.approx(1e-4) and spec.search[1].high == 4.0
    assert spec.asha.max_t == 3 and spec.asha.reduction_factor == 3  # max_t defaults to the epochs
    assert spec.search_seed == spec.seeds.sweep_seed == 0 and spec.total_trials == 4
    assert spec.searcher == "optuna" and spec.max_concurrent == 1 and spec.max_failures == 2


def test_uri_storage_is_kept_and_nested_search_keys_are_flattened(tmp_path):
    text = edit(GOOD, storage_path="s3://bucket/exp", search={"cvae": {"beta": {"type": "uniform", "low": 1, "high": 2}}})
    spec = load_spec(write(tmp_path, text))
    assert spec.storage_path == "s3://bucket/exp" and spec.experiment_path == "s3://bucket/exp/t"
    assert [p.name for p in spec.search] == ["cvae.beta"]


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    text = GOOD.replace("low: 1.0e-4", "low: 1e-4")
    assert yaml.safe_load(text)["search"]["lr"]["low"] == "1e-4"  # PyYAML's YAML 1.1 reading
    assert load_spec(write(tmp_path, text)).search[0].low == pytest.approx(1e-4)


@pytest.mark.parametrize("text, key, line", [
    (GOOD + "num_trails: 3\n", "num_trails", 15),
    (GOOD.replace("asha: {grace_period: 1}", "asha: {grace: 1}"), "asha.grace", 14),
])
def test_unknown_spec_keys_name_the_key_file_and_line(tmp_path, text, key, line):
    path = write(tmp_path, text)
    with pytest.raises(SweepSpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert f"'{key}'" in message and str(path) in message and f"line {line}" in message
    assert "did you mean" in message


@pytest.mark.parametrize("section, text, bad", [
    ("fixed", GOOD.replace("latent_dim: 8", "latent_dm: 8"), "cvae.latent_dm"),
    ("search", GOOD.replace("cvae.beta:", "cvae.bta:"), "cvae.bta"),
])
def test_unknown_trainer_keys_fail_once_with_their_name(tmp_path, section, text, bad):
    path = write(tmp_path, text)
    with pytest.raises(SweepSpecError, match=re.escape(f"'{bad}'")) as error:
        load_spec(path)
    assert str(path) in str(error.value) and f"{section}:" in str(error.value)


@pytest.mark.parametrize("key, owner", [("seed", "seeds.sweep_seed"), ("task", "task"),
                                        ("data.data_dir", "data_dir")])
def test_keys_the_sweep_owns_cannot_be_set_in_fixed(tmp_path, key, owner):
    text = edit(GOOD, fixed={"epochs": 3, key: "x" if key != "seed" else 3})
    with pytest.raises(SweepSpecError, match=re.escape(f"'{owner}'")):
        load_spec(write(tmp_path, text))


@pytest.mark.parametrize("param, message", [
    ({"type": "loguniform", "low": 0, "high": 1}, "low > 0"),
    ({"type": "uniform", "low": 2, "high": 1}, "low < high"),
    ({"type": "normal", "low": 0, "high": 1}, "unknown type"),
    ({"type": "choice", "values": []}, "non-empty list"),
    ({"type": "int", "low": 1.5, "high": 3}, "must be an integer"),
    ({"type": "uniform", "low": 0, "high": 1, "values": [1]}, "unknown field 'values'"),
    (0.5, "must be a mapping"),
])
def test_bad_search_params_are_explained(tmp_path, param, message):
    text = edit(GOOD, search={"cvae.beta": param})
    with pytest.raises(SweepSpecError, match=re.escape(message)):
        load_spec(write(tmp_path, text))


def test_values_at_the_corners_of_the_space_are_type_checked(tmp_path):
    text = edit(GOOD, search={"batch_size": {"type": "choice", "values": [32, 64.5]}})
    with pytest.raises(SweepSpecError, match=r"'batch_size' value 64\.5"):
        load_spec(write(tmp_path, text))
    text = edit(GOOD, search={"cvae.width": {"type": "int", "low": 0, "high": 4}})
    with pytest.raises(SweepSpecError, match=r"cvae\.width.*at least 1"):
        load_spec(write(tmp_path, text))


def test_points_to_evaluate_must_lie_in_the_space(tmp_path):
    point = {"lr": 1e-3, "cvae.beta": 1.0, "batch_size": 32}
    assert load_spec(write(tmp_path, edit(GOOD, optuna={"points_to_evaluate": [point]}))).optuna.points_to_evaluate
    for bad, message in [({**point, "lr": 1.0}, "outside the space"), ({**point, "batch_size": 48}, "outside"),
                         ({"lr": 1e-3, "cvae.beta": 1.0}, "lacks 'batch_size'"),
                         ({**point, "seed": 3}, "'seed' is not a searched key")]:
        with pytest.raises(SweepSpecError, match=re.escape(message)):
            load_spec(write(tmp_path, edit(GOOD, optuna={"points_to_evaluate": [bad]})))


@pytest.mark.parametrize("changes, message", [
    ({"metric": "val/los"}, "did you mean 'val/loss'"),
    ({"metric": "val/balanced_accuracy"}, "does not report"),
    ({"mode": "minimize"}, "one of 'min', 'max'"),
    ({"task": "gan"}, "one of 'cvae', 'nvae', 'classifier'"),
    ({"num_trials": 0}, "integer >= 1"),
    ({"num_trials": None}, "'num_trials' is missing"),
    ({"name": "a/b"}, "names a folder"),
    ({"resources": {"cpu": 0, "gpu": 0.25}}, "'resources.cpu' must be a number > 0"),
    ({"resources": {"cpu": 1, "gpu": 1.5}}, "whole number"),
    ({"asha": {"max_t": 5}}, "asha.max_t (5) is more than the trials' epochs (3)"),
    ({"fixed": {"epochs": 3, "eval_every": 2}}, "eval_every: 1"),
    ({"searcher": "grid"}, "one of 'optuna', 'random'"),
    ({"seeds": {"repeats": 0}}, "'seeds.repeats' must be an integer >= 1"),
    ({"wandb": {"mode": "cloud"}}, "'wandb.mode' must be one of 'auto', 'online', 'offline', 'disabled'"),
    ({"metric": "val/sap_fixed", "mode": "max"}, "only with 'cvae.final_metrics: true'"),
    ({"metric": "val/sap_fixed", "mode": "max", "fixed": {"epochs": 3, "cvae": {"final_metrics": True}}},
     "ASHA cannot stop on it"),
    ({"asha": {"promotion": "greedy"}}, "'asha.promotion' must be one of 'pause', 'percentile'"),
    ({"wandb": {"api_key": "abc"}}, "never put the W&B key in a spec"),
    ({"wandb": {"projekt": "x"}}, "did you mean 'wandb.project'"),
    ({"wandb": {"tags": "demo"}}, "'wandb.tags' must be a list of strings"),
    ({"wandb": {"upload_every_s": 0}}, "'wandb.upload_every_s' must be a number > 0"),
])
def test_bad_values_are_explained(tmp_path, changes, message):
    with pytest.raises(SweepSpecError, match=re.escape(message)):
        load_spec(write(tmp_path, edit(GOOD, **changes)))


@pytest.mark.parametrize("metric", ["val/loss", "val/neg_elbo", "val/kl", "val/recon"])
@pytest.mark.parametrize("searched", [{"cvae.beta": {"type": "uniform", "low": 0.5, "high": 4}},
                                      {"cvae.beta_norm": {"type": "loguniform", "low": 0.001, "high": 0.1}},
                                      {"cvae.capacity": {"type": "uniform", "low": 0.0, "high": 25.0}}])
def test_a_kl_weight_search_ranked_by_a_kl_weighted_metric_is_refused(tmp_path, metric, searched):
    search = {"lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2}, **searched}
    path = write(tmp_path, edit(GOOD, metric=metric, search=search))
    with pytest.raises(SweepSpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert f"'{metric}' depends on the KL weight" in message and f"searches '{next(iter(searched))}'" in message
    assert "val/mse" in message and "val/mig_fixed" in message  # what to rank by instead
    assert str(path) in message and "line 4" in message  # the spec's file and the metric's line


def test_a_kl_weighted_metric_is_fine_when_the_kl_weight_is_fixed(tmp_path):
    search = {"lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2}}
    spec = load_spec(write(tmp_path, edit(GOOD, metric="val/loss", search=search,
                                          fixed={"epochs": 3, "cvae": {"latent_dim": 8, "beta": 4.0}})))
    assert spec.metric == "val/loss"


def test_wandb_settings_default_to_auto_and_parse(tmp_path):
    assert load_spec(write(tmp_path, GOOD)).wandb.mode == "auto"
    assert load_spec(write(tmp_path, GOOD)).wandb.upload_every_s == 300.0
    spec = load_spec(write(tmp_path, edit(GOOD, wandb={"project": "p", "mode": "offline", "log_checkpoint": True,
                                                        "tags": ["a"], "upload_every_s": 60})))
    assert (spec.wandb.project, spec.wandb.mode, spec.wandb.log_checkpoint, spec.wandb.tags) == ("p", "offline", True, ("a",))
    assert spec.wandb.upload_every_s == 60.0


def test_disentanglement_metric_is_accepted_for_cvae_only(tmp_path):
    assert load_spec(write(tmp_path, edit(GOOD, metric="val/mig_fixed", mode="max"))).metric == "val/mig_fixed"
    classifier = edit(GOOD, task="classifier", metric="val/mig_fixed", fixed={"epochs": 3},
                      search={"lr": {"type": "uniform", "low": 0.1, "high": 0.2}})
    with pytest.raises(SweepSpecError, match="does not report"):
        load_spec(write(tmp_path, classifier))


def test_overrides_replace_top_level_keys(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), overrides={"data_dir": "/elsewhere", "num_trials": 2,
                                                       "seeds": {"sweep_seed": 5, "repeats": 3}})
    assert (spec.data_dir, spec.num_trials, spec.seeds.repeats, spec.total_trials) == ("/elsewhere", 2, 3, 6)
    assert spec.search_seed == 5  # the searcher's seed follows the sweep seed unless optuna.seed is set


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweeps/"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SweepSpecError, match="not valid YAML"):
        load_spec(write(tmp_path, "name: [unclosed\n"))


def test_trial_seeds_are_fixed_distinct_and_nested():
    seeds = trial_seeds(0, 3)
    assert seeds == trial_seeds(0, 3)  # a pure function of (sweep_seed, repeat)
    assert len(set(seeds)) == 3 and all(0 <= s < 2**31 for s in seeds)
    assert trial_seeds(0, 2) == seeds[:2]  # more repeats add seeds, never change the first ones
    assert trial_seeds(1, 3) != seeds


def test_train_config_from_trial_keeps_the_seed_and_checks_keys():
    config = train_config_from_trial({"task": "cvae", "seed": 123, "lr": 0.01, "cvae.beta": 2.0})
    assert isinstance(config, TrainConfig) and config.seed == 123 and config.cvae.beta == 2.0
    with pytest.raises(ValueError, match="cvae.bta"):
        train_config_from_trial({"task": "cvae", "seed": 1, "cvae.bta": 2.0})


def rows():
    return [
        {"trial_id": "a", "status": "complete", "params": {"lr": 0.1}, "seed": 7, "repeat": 0, "best": 0.5,
         "best_epoch": 3, "epochs_run": 3, "checkpoint": "/x/a"},
        {"trial_id": "b", "status": "stopped", "params": {"lr": 0.2}, "seed": 7, "repeat": 0, "best": 0.9,
         "best_epoch": 1, "epochs_run": 1},
        {"trial_id": "c", "status": "error", "params": {"lr": 0.3}, "seed": 7, "repeat": 0, "best": None,
         "epochs_run": 0, "error": "boom"},
        {"trial_id": "d", "status": "complete", "params": {"lr": 0.1}, "seed": 8, "repeat": 1, "best": 0.7,
         "best_epoch": 2, "epochs_run": 3},
    ]


def test_rank_trials_orders_by_mode_and_puts_missing_values_last():
    table = rank_trials(rows(), "val/loss", "min")
    assert list(table["trial_id"]) == ["a", "d", "b", "c"] and list(table["rank"]) == [1, 2, 3, 4]
    assert math.isnan(table["best"].iloc[-1]) and table["error"].iloc[-1] == "boom"
    assert table.loc[table.trial_id == "a", "config_id"].item() == table.loc[table.trial_id == "d", "config_id"].item()
    assert "lr" in table.columns and table["checkpoint"].iloc[0] == "/x/a"
    assert list(rank_trials(rows(), "val/auroc", "max")["trial_id"]) == ["b", "d", "a", "c"]
    with pytest.raises(ValueError, match="mode"):
        rank_trials(rows(), "val/loss", "lowest")


def test_summarize_configs_averages_repeats():
    summary = summarize_configs(rank_trials(rows(), "val/loss", "min"), "min")
    best = summary.iloc[0]
    assert best["lr"] == 0.1 and best["n"] == 2 and best["mean"] == pytest.approx(0.6)
    assert best["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["n"].tolist() == [2, 1, 0]


def test_the_celeb_library_never_imports_ray():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "celeb").rglob("*.py")
                 if re.search(r"^\s*(import ray|from ray\b)", p.read_text(encoding="utf-8"), re.MULTILINE)]
    assert offenders == []
