"""TrainConfig: building from YAML / nested / flat dicts, overrides, and the errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from celeb.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    flatten,
    load_config,
    parse_override,
    valid_keys,
    validate_keys,
)

REPO = Path(__file__).resolve().parents[1]


def test_nested_flat_and_mixed_dicts_build_the_same_config():
    nested = config_from_dict({"task": "classifier", "lr": 0.01, "cvae": {"beta": 4.0, "width": 16},
                               "classifier": {"backbone": "resnet18"}})
    flat = config_from_dict({"task": "classifier", "lr": 0.01, "cvae.beta": 4.0, "cvae.width": 16,
                             "classifier.backbone": "resnet18"})
    mixed = config_from_dict({"task": "classifier", "lr": 0.01, "cvae.beta": 4.0, "cvae": {"width": 16},
                              "classifier": {"backbone": "resnet18"}})
    assert nested == flat == mixed
    assert nested.cvae.beta == 4.0 and nested.cvae.width == 16 and nested.classifier.backbone == "resnet18"
    assert nested.cvae.latent_dim == TrainConfig().cvae.latent_dim  # unset keys keep their defaults


def test_config_to_dict_round_trips_through_yaml_and_flatten():
    config = config_from_dict({"seed": 3, "cvae.conditions": ["Male", "Smiling"], "cvae.beta_norm": 0.5,
                               "classifier.pretrained": "weights.pt", "grad_clip": 1.0})
    as_dict = config_to_dict(config)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(as_dict))) == config
    flat = flatten(as_dict)
    assert flat["cvae.conditions"] == ["Male", "Smiling"] and flat["seed"] == 3
    assert set(flat) == set(valid_keys())
    assert config_from_dict(flat) == config


def test_unknown_key_names_key_section_and_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'cvae\.betta'.*cvae.*did you mean 'cvae\.beta'\?"):
        config_from_dict({"cvae.betta": 4.0})
    with pytest.raises(ConfigError, match=r"unknown config key 'cvae\.betta'.*did you mean 'cvae\.beta'"):
        config_from_dict({"cvae": {"betta": 4.0}})
    with pytest.raises(ConfigError, match=r"'lr_warmup'.*top level.*did you mean 'lr_warmup_epochs'"):
        config_from_dict({"lr_warmup": 1})
    with pytest.raises(ConfigError, match=r"'cvae' is a section"):
        config_from_dict({"cvae": 4})


def test_validate_keys_checks_a_search_space_without_building():
    validate_keys(["cvae.beta", "lr", "batch_size", "data.augment"])
    with pytest.raises(ConfigError, match=r"'classifier\.dropuot'.*did you mean 'classifier\.dropout'"):
        validate_keys(["lr", "classifier.dropuot"])


@pytest.mark.parametrize("key, value, expected", [
    ("cvae.beta", "four", "must be a number"),
    ("epochs", 2.5, "must be an integer"),
    ("epochs", True, "must be an integer"),  # YAML's `true` is no count
    ("compile", "yes", "must be true/false"),
    ("task", "vae", "must be one of 'cvae', 'nvae', 'classifier'"),
    ("cvae.conditions", [1, 2], "must be a list of strings"),
    ("classifier.pretrained", 3, "must be true/false or a string"),
    ("early_stopping_patience", "3", "must be an integer or null"),
])
def test_wrong_types_are_errors_naming_key_and_type(key, value, expected):
    with pytest.raises(ConfigError, match=rf"'{key}' {expected}"):
        config_from_dict({key: value})


def test_values_are_coerced_where_lossless():
    config = config_from_dict({"cvae.beta": 4, "lr": np.float64(0.01), "seed": np.int64(7),
                               "cvae.conditions": "Male", "channels_last": True})
    assert isinstance(config.cvae.beta, float) and config.cvae.beta == 4.0
    # Ray may pass numpy scalars
    assert type(config.lr) is float and type(config.seed) is int and config.seed == 7
    assert config.cvae.conditions == ["Male"]
    assert config.channels_last is True


@pytest.mark.parametrize("values, expected", [
    ({"epochs": 0}, "'epochs' must be at least 1"),
    ({"lr": 0.0}, "'lr' must be > 0"),
    ({"cvae.beta": -1.0}, "'cvae.beta' must be >= 0"),
    ({"classifier.dropout": 1.0}, "'classifier.dropout' must be in"),
    ({"cvae.conditions": ["Smilling"]}, "unknown attribute 'Smilling'; did you mean 'Smiling'"),
    ({"cvae.conditions": ["Male", "Male"]}, "lists an attribute twice"),
    ({"cvae.capacity": 25.0}, "'cvae.capacity_epochs' must be >= 1"),
])
def test_out_of_range_values_are_errors(values, expected):
    with pytest.raises(ConfigError, match=expected):
        config_from_dict(values)


def test_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: cvae\nepochs: 2\ncvae:\n  beta: 2.0\n  conditions: [Male]\nclassifier:  # all commented out\n")
    config = load_config(path, ["cvae.beta=4", "data.data_dir=/data/x", "cvae.conditions=[Smiling, Eyeglasses]",
                                "grad_clip=null", "seed=11"])
    assert config.epochs == 2 and config.cvae.beta == 4.0 and config.seed == 11
    assert config.data.data_dir == "/data/x" and config.grad_clip is None
    assert config.cvae.conditions == ["Smiling", "Eyeglasses"]


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: cvae\nepochs: 2\ncvae:\n  latent_dim: 8\n  betta: 2.0\n")
    with pytest.raises(ConfigError, match=rf"{path.name}, line 5: unknown config key 'cvae\.betta'.*'cvae\.beta'"):
        load_config(path)
    path.write_text("task: cvae\ncvae:\n  beta: lots\n")
    with pytest.raises(ConfigError, match=rf"{path.name}, line 3: config key 'cvae\.beta' must be a number"):
        load_config(path)
    path.write_text("task: [cvae\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="configs/"):
        load_config(tmp_path / "missing.yaml")


def test_bad_overrides_are_errors(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("task: cvae\n")
    with pytest.raises(ConfigError, match=r"--set cvae\.wdth=8: unknown config key 'cvae\.wdth'.*'cvae\.width'"):
        load_config(path, ["cvae.wdth=8"])
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_config(path, ["cvae.width"])
    with pytest.raises(ConfigError, match="'cvae.width' must be an integer"):
        load_config(path, ["cvae.width=wide"])
    assert parse_override("lr=1e-3") == ("lr", "1e-3")  # YAML 1.1 reads 1e-3 as a string ...
    assert load_config(path, ["lr=1e-3"]).lr == 1e-3  # ... which a float key accepts
    assert load_config(path, ["cvae.beta=2E+1"]).cvae.beta == 20.0
    with pytest.raises(ConfigError, match="'lr' must be a number"):
        load_config(path, ["lr=1e-3x"])


@pytest.mark.parametrize("name", ["cvae_debug.yaml", "classifier_debug.yaml"])
def test_example_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert config.task == name.split("_")[0]
    assert config.data.data_dir  # they point at the demo data dir


def test_a_renamed_key_is_migrated_in_saved_configs_and_explained_in_edited_ones(tmp_path):
    # Checkpoints and exports written before data.placement existed still load ...
    assert [config_from_dict({"data": {"on_device": v}}).data.placement for v in (True, False, None)] == \
        ["device", "ram", "auto"]
    # ... while a file someone edits is told how to migrate, with its line.
    path = tmp_path / "old.yaml"
    path.write_text("epochs: 2\ndata:\n  on_device: true\n")
    with pytest.raises(ConfigError, match=r"old\.yaml, line 3: config key 'data\.on_device' is now 'data\.placement'"):
        load_config(path)
