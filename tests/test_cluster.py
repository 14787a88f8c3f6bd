"""cluster/: launcher configs checked against Ray's own schema, and a search on a real
multi-process Ray cluster (a head and a worker node started with `ray start`). The tests that
start Ray are marked `slow`."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from rbmsearch.data import write_dataset
from rbmsearch.space import shipped_spaces

SPACES_DIR = shipped_spaces()["default"].parent

CLUSTER_DIR = Path(__file__).resolve().parent.parent / "cluster"
LAUNCHER_CONFIGS = sorted(p for p in CLUSTER_DIR.glob("*.yaml") if "provider" in yaml.safe_load(p.read_text()))
IMAGE = "rayproject/ray:2.60.0-py311-gpu"
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}


def prepared(path: Path) -> dict:
    """The config as `ray up` sees it: provider defaults filled in, then Ray's schema checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(yaml.safe_load(path.read_text())))
    validate_config(config)
    return config


def test_every_launcher_config_is_there():
    names = {p.name for p in CLUSTER_DIR.glob("*.yaml")}
    assert {"config.yaml", "gcp.yaml", "onprem.yaml", "kuberay-rayjob.yaml"} <= names
    assert {p.name for p in LAUNCHER_CONFIGS} == {"config.yaml", "gcp.yaml", "onprem.yaml"}


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=[p.name for p in LAUNCHER_CONFIGS])
def test_launcher_config_validates_against_rays_schema(path):
    config = prepared(path)
    assert config["docker"]["image"] == IMAGE
    assert "--shm-size=8g" in config["docker"]["run_options"]
    assert config["file_mounts"] == {"/home/ray/rbmsearch": "."}  # the project goes to every node
    assert any('pip install --quiet -e "/home/ray/rbmsearch[gpu]"' in c for c in config["setup_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("--object-store-memory=" in c for c in starts if "ray start" in c)
    types = config["available_node_types"]
    if config["provider"]["type"] == "local":
        assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])  # the head runs no trials
        assert "0.0.0.0" not in json.dumps(config)
        return
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0
    (worker_name,) = set(types) - {config["head_node_type"]}
    worker = types[worker_name]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    # The autoscaler starts a worker for a GPU trial only if the node type says it has a GPU.
    assert worker["resources"].get("GPU", 0) >= 1, f"{path.name}: the worker type declares no GPU"
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in json.dumps(config), "the dashboard must not listen on every interface"


def test_the_schema_check_is_real(tmp_path):
    """A typo in a config fails the same validation the shipped configs pass."""
    import jsonschema

    config = yaml.safe_load((CLUSTER_DIR / "config.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["min_worker"] = 0  # typo of min_workers
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        prepared(broken)


def test_kuberay_rayjob_manifest():
    job = yaml.safe_load((CLUSTER_DIR / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m rbmsearch.tune --address auto")
    assert "--storage gs://" in spec["entrypoint"] or "--storage s3://" in spec["entrypoint"]  # shared storage
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"] == IMAGE
    (workers,) = cluster["workerGroupSpecs"]
    container = workers["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] >= 1
    for group in (head, workers):  # /dev/shm in memory for the object store and TensorFlow
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in group["template"]["spec"]["volumes"])


CREDENTIALS = [
    (r"AKIA[0-9A-Z]{16}", "an AWS access key id"),
    (r"(?i)aws_secret_access_key|secret_access_key\s*[:=]", "an AWS secret key"),
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
    (r'"type":\s*"service_account"|private_key_id', "a GCP service-account key"),
    (r"(?i)(password|token)\s*[:=]\s*\S{8,}", "a password or token"),
]


@pytest.mark.parametrize("path", sorted(CLUSTER_DIR.iterdir()), ids=lambda p: p.name)
def test_no_credentials_in_cluster_files(path):
    text = path.read_text()
    for pattern, what in CREDENTIALS:
        assert not re.search(pattern, text), f"{path.name} contains what looks like {what}"
    for key_path in re.findall(r"ssh_private_key:\s*(\S+)", text):
        assert key_path.startswith("~/"), f"{path.name}: ssh_private_key must be a path on the user's machine"


# ---------------------------------------------------------------------------- a real cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def ray_cluster():
    """`ray start --head` (no CPUs: it runs no trials) + `ray start --address` (a worker node
    with 2 CPUs, one GPU as far as Ray's scheduler knows, and a `worker` resource), as
    separate process trees owned by this test."""
    temp = tempfile.mkdtemp(prefix="rbmc-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    env = {**os.environ, **RAY_ENV}
    common = ["--block", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
    procs = []

    def start(args: list[str]) -> None:
        procs.append(subprocess.Popen([ray_cli(), "start", *args, *common], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))  # fmt: skip

    def nodes() -> list[dict]:
        code = f"import json, ray; ray.init(address='127.0.0.1:{port}', logging_level='ERROR'); print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        return json.loads(out.stdout.splitlines()[-1]) if out.returncode == 0 else []

    try:
        # Every port of our own, so that the test never meets another Ray on this machine.
        own = lambda: ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]  # noqa: E731
        start(["--head", "--port", str(port), "--num-cpus", "0", "--temp-dir", temp, "--include-dashboard", "false",
               "--ray-client-server-port", str(free_port()), *own()])  # fmt: skip
        deadline = time.monotonic() + 90
        while not nodes():
            assert time.monotonic() < deadline, "the head node did not come up"
            time.sleep(1)
        start(["--address", f"127.0.0.1:{port}", "--num-cpus", "2", "--num-gpus", "1", "--resources", json.dumps({"worker": 1}), *own()])
        while len(found := nodes()) < 2:
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield f"127.0.0.1:{port}", found
    finally:
        for p in reversed(procs):  # each node's process group: `ray start --block` and what it started
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(timeout=wait)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_local_storage_on_a_head_that_runs_no_trials_fails_fast(tmp_path):
    """An autoscaling cluster before its workers join: one node, no CPUs. A local --storage is
    refused before anything is written; a URI or a trial-sized node is accepted."""
    code = f"""
import ray
from rbmsearch.errors import SearchError
from rbmsearch.space import SearchSettings
from rbmsearch.tune import check_shared_storage
ray.init(num_cpus=0, object_store_memory=80 * 2**20, include_dashboard=False, logging_level="ERROR")
try:
    check_shared_storage({str(tmp_path / "runs")!r}, SearchSettings())
except SearchError as e:
    print("refused:", e)
check_shared_storage("s3://bucket/runs", SearchSettings())
print("uri ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **RAY_ENV})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused: no node of this cluster can run a trial yet" in out.stdout and "s3://BUCKET/runs" in out.stdout
    assert "uri ok" in out.stdout and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_search_on_a_real_cluster_runs_trials_on_the_worker(ray_cluster, tmp_path, toy_dataset):
    address, nodes = ray_cluster
    (worker,) = [n["NodeID"] for n in nodes if "worker" in n["Resources"]]
    data = write_dataset(toy_dataset, tmp_path / "toy.parquet")
    storage = tmp_path / "shared"
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.tune", "--address", address, "--space", str(SPACES_DIR / "smoke.yaml"),
         "--data", data.as_uri(), "--num-samples", "2", "--max-epochs", "1", "--gpus-per-trial", "0.5", "--storage", str(storage), "--name", "onc"],
        capture_output=True, text=True, timeout=600, env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    exp = storage / "onc"
    results = [json.loads(line) for p in exp.glob("trial_*/result.json") for line in p.read_text().splitlines()]
    assert len({r["trial_id"] for r in results}) == 2
    assert {r["node_id"] for r in results} == {worker}  # the head has no CPUs: every trial ran on the worker
    # The GPU path without a GPU: Ray handed both trials half of GPU 0 (CUDA_VISIBLE_DEVICES=0),
    # TensorFlow found no CUDA driver behind it and trained on the CPU.
    assert {r["gpu_ids"] for r in results} == {"0"}
    assert len(list(exp.glob("trial_*/checkpoint_*/params.npz"))) >= 2  # checkpoints arrived in the storage
    best = json.loads((exp / "best.json").read_text())
    assert best["samples"] and all(Path(p).is_file() for p in best["samples"])
    assert Path(best["checkpoint"]).is_relative_to(exp)
    assert "2 trials: 2 finished, 0 errored" in out.stdout
    assert best["data"]["path"] == data.as_uri()  # --data as a URI, read through pyarrow.fs
