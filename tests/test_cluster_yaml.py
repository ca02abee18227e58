"""cluster.yaml: it passes the Ray launcher's own offline validation and keeps the cluster private."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from celeb.sweep.spec import load_spec

jsonschema = pytest.importorskip("jsonschema")  # the autoscaler's validation uses it
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"


@pytest.fixture
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def validate(config: dict) -> dict:
    """What `ray up` does before it touches the cloud: fill in the provider defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_the_launchers_validation(config):
    prepared = validate(config)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c["available_node_types"]["gpu_spot"].update(min_worker=1), "'min_worker' was unexpected"),
    (lambda c: c.update(head_node_type="missing"), "head_node_type"),
    (lambda c: c["available_node_types"]["gpu_spot"].update(max_workers="eight"), "'eight' is not of type"),
])
def test_the_validation_catches_mistakes(config, break_it, message):
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=message):
        validate(config)


def test_gpu_workers_come_on_demand_and_on_spot_with_bounds(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # a CPU head
    spot = [t for t in workers.values() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    on_demand = [t for t in workers.values() if "InstanceMarketOptions" not in t["node_config"]]
    assert spot and on_demand
    for t in workers.values():
        assert t["node_config"]["InstanceType"].startswith(("g", "p"))  # GPU instances
        assert 0 <= t["min_workers"] <= t["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_nothing_listens_on_the_internet(config):
    assert "0.0.0.0" not in yaml.safe_dump(config)  # (the comments explain why, and may say it)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    # The launcher's own security group opens SSH to 0.0.0.0/0, so every node type names a group
    # made beforehand (SSH from a chosen CIDR only).
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["SecurityGroupIds"]
    assert "--cidr $SSH_CIDR" in CLUSTER.read_text()


def test_token_auth_on_head_and_workers(config):
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = [c for c in commands if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start)
    assert "~/.ray/auth_token" in config["file_mounts"]  # the same token on every node


def test_nodes_install_the_project_and_sync_the_data(config):
    setup = "\n".join(config["setup_commands"])
    assert "git clone" in setup and re.search(r"pip install .*-e", setup)
    local_specs = ("smoke", "demo")  # laptop-sized specs that run on the data `bash dev.sh demo` makes
    data_dirs = {load_spec(p).data_dir for p in (REPO / "sweeps").glob("*.yaml") if p.stem not in local_specs}
    for data_dir in data_dirs:
        assert re.search(rf"s3 sync s3://\S+ {re.escape(data_dir)}/?", setup), data_dir


def test_sweeps_for_the_cluster_keep_checkpoints_in_s3(config):
    for path in (REPO / "sweeps").glob("*.yaml"):
        spec = load_spec(path)
        if spec.resources.gpu > 0:
            assert spec.storage_path.startswith("s3://"), path
            assert spec.resources.cpu >= 1  # a fractional GPU alone would ask for no CPU


def test_the_readme_commands_name_files_that_exist():
    text = CLUSTER.read_text()
    for command in ("ray up cluster.yaml", "ray dashboard cluster.yaml", "ray down cluster.yaml",
                    "ray job submit --address http://127.0.0.1:8265 --working-dir ."):
        assert command in text
    for spec in re.findall(r"python -m jobs\.sweep (\S+\.yaml)", text):
        assert (REPO / spec).exists()
    assert (REPO / "jobs" / "sweep.py").exists()
