"""launch/: the SLURM batch script (its dry run, and its real path with stand-ins for srun, ray and the
driver) and the KubeRay RayJob manifest (field names from KubeRay's CRD, token auth, no public Service).

Offline and fast: nothing here needs SLURM, Kubernetes, Ray or a network.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "launch" / "slurm" / "sweep.sbatch"
RAYJOB = REPO / "launch" / "k8s" / "rayjob.yaml"
SPEC = "sweeps/cvae_beta_k.yaml"
BASH = shutil.which("bash") or "/bin/bash"


# ============================================================================ the SLURM batch script


def make_bin(folder: Path, programs: dict[str, str]) -> Path:
    """Executables on a PATH of their own: each a small bash script."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in programs.items():
        path = folder / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return folder


def slurm_env(tmp_path: Path, programs: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a job, faked: no SLURM here, so srun/ray/python/scontrol are stand-ins
    that only record that they were called (the dry run must call none of them but scontrol)."""
    calls = tmp_path / "calls.log"
    record = f'echo "$(basename "$0") $*" >> {shlex.quote(str(calls))}\n'
    fake = make_bin(tmp_path / "bin", {
        "srun": record, "ray": record, "python": record, "sbatch": record,
        "scontrol": "exit 1\n",  # like a node without a SLURM config: the script splits the commas itself
        **(programs or {}),
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "RAY_", "DRY_RUN", "HEAD_IP"))}
    env.update(PATH=f"{fake}{os.pathsep}{env['PATH']}", SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="n1,n2,n3",
               HEAD_IP="10.0.0.11", CELEB_RAY_JOB_DIR=str(tmp_path / "job"), CELEB_REPO=str(REPO))
    env.update(extra)
    return env


def dry_run(tmp_path: Path, *args: str, check: bool = True, programs: dict[str, str] | None = None,
            **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([BASH, str(SBATCH), "--dry-run", *args], env=slurm_env(tmp_path, programs, **env),
                            capture_output=True, text=True, timeout=30)
    if check:
        assert result.returncode == 0, result.stderr
        assert not (tmp_path / "calls.log").exists(), (tmp_path / "calls.log").read_text()  # ran nothing
        assert not (tmp_path / "job").exists()  # not even the token dir
    return result


def commands(output: str) -> list[list[str]]:
    """The printed commands ("+ ..." lines), split as a shell would, without a trailing "&"."""
    out = []
    for line in output.splitlines():
        if line.startswith("+ "):
            words = shlex.split(line[2:])
            out.append(words[:-1] if words[-1:] == ["&"] else words)
    return out


def flag(words: list[str], name: str) -> str:
    values = [w.split("=", 1)[1] for w in words if w.startswith(f"{name}=")]
    assert len(values) == 1, (name, words)
    return values[0]


def ray_starts(cmds: list[list[str]]) -> list[tuple[str, list[str]]]:
    """(node, ray start words) of each `srun ... -w NODE ray start ...`."""
    starts = []
    for words in cmds:
        if words[0] == "srun" and "ray" in words and words[words.index("ray") + 1] == "start":
            starts.append((words[words.index("-w") + 1], words[words.index("ray"):]))
    return starts


def position(cmds: list[list[str]], predicate) -> int:
    matches = [i for i, words in enumerate(cmds) if predicate(words)]
    assert len(matches) == 1, matches
    return matches[0]


def test_the_script_is_valid_bash():
    result = subprocess.run([BASH, "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_lines_allocate_gpu_nodes_one_ray_node_each():
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", SBATCH.read_text(), flags=re.M))
    assert int(directives["nodes"]) >= 2 and directives["ntasks-per-node"] == "1"
    assert int(directives["gpus-per-node"]) >= 1 and int(directives["cpus-per-task"]) >= 2
    assert {"time", "output", "job-name"} <= directives.keys()


def test_dry_run_of_three_nodes(tmp_path):
    result = dry_run(tmp_path, SPEC, "--set", "data_dir=/shared/celeba/data",
                     "--set", "storage_path=/shared/celeb sweeps", "--resume")
    assert "0.0.0.0" not in result.stdout + result.stderr
    cmds = commands(result.stdout)
    token = str(tmp_path / "job" / "auth_token")

    # Token auth: a new token in the job's private dir, in the environment of everything after it.
    i_token = position(cmds, lambda w: w[0] == "python" and w[-1] == token and "secrets.token_hex" in w[2])
    i_export = position(cmds, lambda w: w[0] == "export")
    assert set(cmds[i_export][1:]) == {"RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={token}"}
    assert ["mkdir", "-p", "-m", "700", str(tmp_path / "job")] in cmds
    unset = next(w for w in cmds if w[0] == "unset")
    assert "RAY_AUTH_TOKEN" in unset  # it would win over the token file

    # The head on the first node, bound to its address; the dashboard on loopback only.
    starts = ray_starts(cmds)
    assert [node for node, _ in starts] == ["n1", "n2", "n3"]
    head = starts[0][1]
    assert "--head" in head and "--block" in head
    assert flag(head, "--node-ip-address") == "10.0.0.11"
    assert flag(head, "--dashboard-host") == "127.0.0.1"
    port = int(flag(head, "--port"))
    i_head = position(cmds, lambda w: "--head" in w)
    assert i_token < i_export < i_head

    # Two workers join the head's address, with the same per-job ports; none is a head.
    for node, words in starts[1:]:
        assert "--head" not in words and "--block" in words
        assert flag(words, "--address") == f"10.0.0.11:{port}"
        assert flag(words, "--temp-dir") == flag(head, "--temp-dir") == "/tmp/ray-job4242"
        for name in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port"):
            assert flag(words, name) == flag(head, name)
    assert all("--cpus-per-task=32" in w and "--export=ALL" in w for w in cmds if w[0] == "srun")
    assert flag(head, "--num-gpus") == "4" and flag(head, "--num-cpus") == "32"  # the #SBATCH defaults

    # The driver on the head's address, with the spec and every override passed through, then the
    # shutdown: each node's Ray, then the token.
    i_driver = position(cmds, lambda w: w[:4] == ["python", "-u", "-m", "jobs.sweep"])
    assert cmds[i_driver][4:] == [SPEC, "--address", f"10.0.0.11:{port}", "--resume",
                                  "--set", "data_dir=/shared/celeba/data", "--set", "storage_path=/shared/celeb sweeps"]
    assert i_driver > max(i for i, w in enumerate(cmds) if w[0] == "srun")
    stops = [w for w in cmds[i_driver + 1:] if w[:2] == ["kill", "-TERM"]]
    assert [re.search(r"on-(\w+)>$", w[2]).group(1) for w in stops] == ["n1", "n2", "n3"]
    assert cmds[-2:] == [["rm", "-f", "--", token], ["rmdir", "--", str(tmp_path / "job")]]


def test_without_resume_or_overrides_the_driver_gets_the_spec_alone(tmp_path):
    cmds = commands(dry_run(tmp_path, SPEC).stdout)
    driver = next(w for w in cmds if "jobs.sweep" in w)
    assert driver[4:6] == [SPEC, "--address"] and len(driver) == 7


def test_one_node_is_a_head_without_workers(tmp_path):
    starts = ray_starts(commands(dry_run(tmp_path, SPEC, SLURM_JOB_NODELIST="solo").stdout))
    assert [(node, "--head" in words) for node, words in starts] == [("solo", True)]


def test_scontrol_expands_a_bracketed_node_list(tmp_path):
    scontrol = '[[ "$1 $2 $3" == "show hostnames gpu[01-02]" ]] && printf "gpu01\\ngpu02\\n"\n'
    result = subprocess.run([BASH, str(SBATCH), SPEC], capture_output=True, text=True, timeout=30,
                            env=slurm_env(tmp_path, {"scontrol": scontrol}, SLURM_JOB_NODELIST="gpu[01-02]", DRY_RUN="1"))
    assert result.returncode == 0, result.stderr
    assert [node for node, _ in ray_starts(commands(result.stdout))] == ["gpu01", "gpu02"]
    assert not (tmp_path / "calls.log").exists()


def test_the_port_block_follows_the_job_id(tmp_path):
    def ports(job_id: str) -> list[int]:
        head = ray_starts(commands(dry_run(tmp_path, SPEC, SLURM_JOB_ID=job_id).stdout))[0][1]
        return [int(w.split("=")[1]) for w in head if re.match(r"--[\w-]*port=", w) and not w.endswith("=0")]

    a, before, after = ports("4242"), ports("4241"), ports("4243")
    assert ports("4242") == a  # the same job, the same ports (workers and driver can compute them)
    for block in (a, before, after):
        assert len(set(block)) == len(block) >= 9 and all(20000 <= p < 32768 for p in block)
        assert {6379, 8265, 10001, 52365}.isdisjoint(block)  # none of Ray's fixed defaults
    assert not set(a) & set(before) and not set(a) & set(after)  # neighbouring jobs never share a port
    assert ports(str(4242 + 1200)) == a  # 1200 blocks, then they repeat (as the script says)
    head = ray_starts(commands(dry_run(tmp_path, SPEC, RAY_PORT_BASE="30000").stdout))[0][1]
    assert flag(head, "--port") == "30000"


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "missing the sweep spec"),
    (["--set", "data_dir=/x"], {}, "missing the sweep spec"),
    ([SPEC, "--set", "no_equals_sign"], {}, "--set expects KEY=VALUE"),
    ([SPEC, "--sett", "a=b"], {}, "unknown option '--sett'"),
    ([SPEC, "sweeps/demo.yaml"], {}, "one spec only"),
    (["sweeps/no_such_spec.yaml"], {}, "no sweep spec 'sweeps/no_such_spec.yaml'"),
    ([SPEC], {"SLURM_JOB_NODELIST": "gpu[01-03]"}, "plain comma list"),
    ([SPEC], {"SLURM_JOB_ID": "12x"}, "SLURM_JOB_ID must be a number"),
    ([SPEC], {"CELEB_REPO": "/"}, "not the repository root"),
])
def test_mistakes_fail_with_a_clear_message(tmp_path, args, env, message):
    result = dry_run(tmp_path, *args, check=False, **env)
    assert result.returncode == 2
    assert message in result.stderr
    if "missing" in message:
        assert "usage: sbatch launch/slurm/sweep.sbatch SPEC.yaml" in result.stderr
    assert not (tmp_path / "calls.log").exists()


def test_outside_a_job_it_refuses_to_run(tmp_path):
    env = slurm_env(tmp_path)
    del env["SLURM_JOB_ID"]
    result = subprocess.run([BASH, str(SBATCH), SPEC], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not inside a SLURM job" in result.stderr
    assert not (tmp_path / "calls.log").exists()


# The real path, with stand-ins: srun runs its command's stand-in on this machine (a `ray start
# --block` is a sleep), `ray status` answers, the driver is a script that records its environment.
FAKE_SRUN = """echo "srun $*" >> "$CALLS"
env > "$WORK/env.srun.$$"
exec sleep 60
"""
FAKE_RAY = 'echo "ray $*" >> "$CALLS"\n'
FAKE_PYTHON = """if [[ $1 == -c ]]; then exec "$REAL_PYTHON" "$@"; fi   # the token, the grpc probe
echo "driver $*" >> "$CALLS"
env > "$WORK/env.driver"
stat -c %a "$RAY_AUTH_TOKEN_PATH" > "$WORK/token.mode"
trap 'kill $! 2>/dev/null; echo usr1 >> "$WORK/driver.signals"; exit 0' USR1   # Tune: save, return
trap 'kill $! 2>/dev/null; echo term >> "$WORK/driver.signals"; exit 143' TERM
if [[ -n ${DRIVER_SLEEP:-} ]]; then sleep "$DRIVER_SLEEP" & wait $!; fi
exit "${DRIVER_RC:-0}"
"""


def real_run(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen, dict[str, str]]:
    repo = tmp_path / "repo"  # a checkout without .venv, so the stand-ins stay first on PATH
    (repo / "jobs").mkdir(parents=True)
    (repo / "jobs" / "sweep.py").write_text("")
    (repo / "sweeps").mkdir()
    shutil.copy(REPO / SPEC, repo / SPEC)
    programs = {"srun": FAKE_SRUN, "ray": FAKE_RAY, "python": FAKE_PYTHON, "scontrol": 'printf "n1\\nn2\\nn3\\n"\n'}
    env = slurm_env(tmp_path, programs, CELEB_REPO=str(repo), CALLS=str(tmp_path / "calls.log"), WORK=str(tmp_path),
                    REAL_PYTHON=sys.executable, PYTHON=str(tmp_path / "bin" / "python"), RAY_AUTH_TOKEN="stray", **extra)
    process = subprocess.Popen([BASH, str(SBATCH), SPEC, "--set", "data_dir=/shared/data"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, env


def srun_pids(tmp_path: Path) -> list[int]:
    return [int(p.name.rsplit(".", 1)[1]) for p in tmp_path.glob("env.srun.*")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_a_run_starts_every_node_passes_the_drivers_exit_code_and_cleans_up(tmp_path):
    process, _ = real_run(tmp_path, DRIVER_RC="3")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err  # the driver's exit code is the job's
    calls = (tmp_path / "calls.log").read_text().splitlines()
    sruns = {re.search(r" -w (\S+)", c).group(1): c for c in calls if c.startswith("srun")}
    assert sorted(sruns) == ["n1", "n2", "n3"] and "ray start --head" in sruns["n1"]
    assert not any("--head" in sruns[n] for n in ("n2", "n3"))
    status = next(i for i, c in enumerate(calls) if c.startswith("ray status --address=10.0.0.11:"))
    assert all(status < calls.index(sruns[n]) for n in ("n2", "n3"))  # workers only once the head answers
    driver = next(c for c in calls if c.startswith("driver"))
    assert driver.split()[1:5] == ["-u", "-m", "jobs.sweep", SPEC] and "--set data_dir=/shared/data" in driver
    token = tmp_path / "job" / "auth_token"
    for env in [read_env(tmp_path / "env.driver")] + [read_env(p) for p in tmp_path.glob("env.srun.*")]:
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(token)
        assert "RAY_AUTH_TOKEN" not in env  # the stray one is gone
    assert (tmp_path / "token.mode").read_text().strip() == "600"  # only the user can read it
    assert not token.exists() and not (tmp_path / "job").exists()  # removed at the end
    pids = srun_pids(tmp_path)
    assert len(pids) == 3 and not any(alive(p) for p in pids)  # every node's Ray step stopped
    assert "(--ray-client-server-port" not in out  # (a dry-run note only)


def test_a_signal_stops_the_driver_gracefully_then_ray_then_removes_the_token(tmp_path):
    process, _ = real_run(tmp_path, DRIVER_SLEEP="30")
    deadline = time.monotonic() + 30
    while not (tmp_path / "env.driver").exists():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    assert (tmp_path / "job" / "auth_token").exists()
    process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 sends before the time limit
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGUSR1, err
    assert (tmp_path / "driver.signals").read_text().split() == ["usr1"]  # Tune's graceful stop
    assert "received SIGUSR1" in out
    assert not (tmp_path / "job").exists()
    assert len(srun_pids(tmp_path)) == 3 and not any(alive(p) for p in srun_pids(tmp_path))


# ============================================================================ the KubeRay RayJob manifest
# Field names of KubeRay v1.6.2's ray.io/v1 CRD (ray-operator/apis/ray/v1/{rayjob,raycluster}_types.go
# and config/crd/bases/ray.io_rayjobs.yaml); authOptions.secretName is new in v1.6.0.
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
               "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy", "metadata",
               "preRunningDeadlineSeconds", "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes",
               "submissionMode", "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
RAYCLUSTER_SPEC = {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                   "headGroupSpec", "headServiceAnnotations", "managedBy", "rayVersion", "suspend",
                   "upgradeStrategy", "workerGroupSpecs"}
AUTH_OPTIONS = {"enableK8sTokenAuth", "mode", "secretName"}
HEAD_GROUP = {"enableIngress", "headService", "labels", "rayStartParams", "resources", "serviceType", "template"}
WORKER_GROUP = {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts",
                "rayStartParams", "replicas", "resources", "scaleStrategy", "suspend", "template"}
WORKER_GROUP_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "template"}
# Kubernetes core/v1, the parts the manifest uses.
POD_SPEC = {"containers", "initContainers", "volumes", "serviceAccountName", "tolerations", "nodeSelector",
            "affinity", "securityContext", "imagePullSecrets", "priorityClassName"}
CONTAINER = {"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports", "resources",
             "volumeMounts", "workingDir", "securityContext", "lifecycle"}
ENV_VAR = {"name", "value", "valueFrom"}
SECRET_KEY_REF = {"name", "key", "optional"}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    documents = list(yaml.safe_load_all(RAYJOB.read_text()))
    assert len(documents) == 1  # no Secret (or anything else) with values in it alongside
    return documents[0]


def groups(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def field_errors(job: dict) -> list[str]:
    """Every key the manifest uses that KubeRay's (or Kubernetes') schema does not have."""
    errors = []

    def check(where: str, mapping: dict, allowed: set[str], required: set[str] = frozenset()):
        errors.extend(f"{where}.{key}: not a field" for key in sorted(set(mapping) - allowed))
        errors.extend(f"{where}.{key}: missing" for key in sorted(required - set(mapping)))

    check("(top)", job, {"apiVersion", "kind", "metadata", "spec"}, {"apiVersion", "kind", "metadata", "spec"})
    spec = job.get("spec", {})
    check("spec", spec, RAYJOB_SPEC)
    if spec.get("submissionMode", "K8sJobMode") not in SUBMISSION_MODES:
        errors.append(f"spec.submissionMode: {spec['submissionMode']!r} is not one of {sorted(SUBMISSION_MODES)}")
    cluster = spec.get("rayClusterSpec", {})
    check("spec.rayClusterSpec", cluster, RAYCLUSTER_SPEC, {"headGroupSpec"})
    check("spec.rayClusterSpec.authOptions", cluster.get("authOptions", {}), AUTH_OPTIONS)
    check("headGroupSpec", cluster.get("headGroupSpec", {}), HEAD_GROUP, {"template"})
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        check(f"workerGroupSpecs[{i}]", group, WORKER_GROUP, WORKER_GROUP_REQUIRED)
    for where, group in [("headGroupSpec", cluster.get("headGroupSpec", {})),
                         *[(f"workerGroupSpecs[{i}]", g) for i, g in enumerate(cluster.get("workerGroupSpecs", []))]]:
        pod = group.get("template", {}).get("spec", {})
        check(f"{where}.template.spec", pod, POD_SPEC, {"containers"})
        for kind in ("containers", "initContainers"):
            for container in pod.get(kind, []):
                name = f"{where}.{kind}[{container.get('name')}]"
                check(name, container, CONTAINER, {"name", "image"})
                for env in container.get("env", []):
                    check(f"{name}.env[{env.get('name')}]", env, ENV_VAR, {"name"})
                    if "secretKeyRef" in env.get("valueFrom", {}):
                        check(f"{name}.env[{env['name']}].secretKeyRef", env["valueFrom"]["secretKeyRef"],
                              SECRET_KEY_REF, {"name", "key"})
    return errors


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_manifest_is_a_rayjob_whose_fields_kuberay_knows(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert field_errors(rayjob) == []


@pytest.mark.parametrize("break_it, error", [
    (lambda j: j["spec"].update(shutdownAfterJobFinish=True), "spec.shutdownAfterJobFinish: not a field"),
    (lambda j: j["spec"].update(submissionMode="K8sJob"), "spec.submissionMode: 'K8sJob'"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"), "maxReplicas: missing"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"].update(serviceTyp="ClusterIP"), "serviceTyp: not a field"),
    (lambda j: j["spec"]["rayClusterSpec"]["authOptions"].update(secret="x"), "authOptions.secret: not a field"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     .update(resource={}), "resource: not a field"),
])
def test_the_field_check_catches_typos(rayjob, break_it, error):
    broken = yaml.safe_load(RAYJOB.read_text())
    break_it(broken)
    assert any(error in e for e in field_errors(broken)), field_errors(broken)


def test_the_entrypoint_runs_a_sweep_spec_of_this_repository(rayjob):
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "jobs.sweep"]
    spec = REPO / words[3]
    assert words[3].startswith("sweeps/") and spec.is_file()
    assert words[words.index("--address") + 1] == "auto"
    overrides = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--set")
    assert set(overrides) == {"data_dir", "storage_path"} <= set(yaml.safe_load(spec.read_text()))  # real spec keys
    assert re.match(r"(s3|gs)://[\w.-]+/", overrides["storage_path"])  # checkpoints outlive the pods
    assert not {"&&", "||", ";", "|", "&"} & set(words)  # the submitter runs it through a shell
    # The driver runs in the project's tree inside the image (relative paths such as sweeps/...).
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"].startswith("/")
    # The data dir the trials read is mounted in every Ray pod.
    for group in groups(rayjob):
        mounts = [m["mountPath"] for m in group["template"]["spec"]["containers"][0]["volumeMounts"]]
        assert overrides["data_dir"] in mounts


def test_the_cluster_goes_when_the_sweep_ends(rayjob):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and 0 < spec["ttlSecondsAfterFinished"] <= 3600
    assert spec.get("backoffLimit", 0) == 0  # a retry would start the sweep afresh (not --resume)


def test_a_cpu_head_and_gpu_workers(rayjob):
    head, *workers = groups(rayjob)
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver only; trials go to the GPU workers
    assert all("nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}) for c in head["template"]["spec"]["containers"])
    assert workers
    for group in workers:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert group["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_one_image_of_the_pinned_ray_everywhere(rayjob):
    images = {c["image"] for g in groups(rayjob) for kind in ("containers", "initContainers")
              for c in g["template"]["spec"].get(kind, [])}
    assert len(images) == 1  # the project's image (which the header says how to build)
    pinned = re.search(r'"ray\[tune\]>=(\d+\.\d+),<', (REPO / "pyproject.toml").read_text()).group(1)
    ray_version = rayjob["spec"]["rayClusterSpec"]["rayVersion"]
    assert ray_version.startswith(pinned + ".") and version("ray").startswith(pinned + ".")
    assert tuple(map(int, ray_version.split(".")[:2])) >= (2, 52)  # token auth


def test_token_auth_from_a_secret_on_every_ray_container(rayjob):
    auth = rayjob["spec"]["rayClusterSpec"]["authOptions"]
    assert auth["mode"] == "token"
    secret = auth["secretName"]
    for group in groups(rayjob):
        ray_container = group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first
        env = env_of(ray_container)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}


def test_the_wandb_key_comes_from_a_secret_and_no_secret_is_written_here(rayjob):
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    key = env_of(head)["WANDB_API_KEY"]
    assert set(key) == {"name", "valueFrom"} and key["valueFrom"]["secretKeyRef"]["key"] == "api_key"
    for group in groups(rayjob):
        for kind in ("containers", "initContainers"):
            for container in group["template"]["spec"].get(kind, []):
                for env in container.get("env", []):
                    if re.search(r"TOKEN|KEY|SECRET|PASSWORD", env["name"]):
                        assert "value" not in env, env["name"]
    text = RAYJOB.read_text()
    assert not re.search(r"\b[0-9a-f]{32,}\b", text)  # no token or W&B key (40 hex) pasted in
    assert "stringData" not in yaml.safe_dump(rayjob) and "kind: Secret" not in text


def test_no_service_outside_the_cluster(rayjob):
    def values(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == key:
                    yield v
                yield from values(v, key)
        elif isinstance(node, list):
            for item in node:
                yield from values(item, key)

    assert set(values(rayjob, "serviceType")) == {"ClusterIP"}
    assert not {"LoadBalancer", "NodePort"} & set(map(str, values(rayjob, "type")))
    assert "headService" not in rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert not rayjob["spec"]["rayClusterSpec"]["headGroupSpec"].get("enableIngress", False)


def test_every_mount_names_a_volume_and_the_pvc_alternative_is_shown(rayjob):
    for group in groups(rayjob):
        pod = group["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for kind in ("containers", "initContainers"):
            for container in pod.get(kind, []):
                assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, container["name"]
    text = RAYJOB.read_text()
    assert re.search(r"persistentVolumeClaim: \{claimName: [\w-]+\}", text)
    assert re.search(r"volumeMounts: +- \{name: shared, mountPath: /shared\}", text)


def test_the_readme_commands_name_files_that_exist():
    readme = (REPO / "README.md").read_text()
    paths = set(re.findall(r"\blaunch/[\w./-]+\.(?:sbatch|yaml)\b", readme))
    assert {"launch/slurm/sweep.sbatch", "launch/k8s/rayjob.yaml"} <= paths
    assert all((REPO / p).is_file() for p in paths)
    for spec in re.findall(r"sbatch launch/slurm/sweep\.sbatch (\S+\.yaml)", readme):
        assert (REPO / spec).is_file()
