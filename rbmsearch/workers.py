"""Where the heavy work runs: Ray for the length of a with-block, and a worker process's setup.

`ray_session` joins a running cluster (`--address`, or $RAY_ADDRESS) or starts a local Ray that
listens on the loopback only. `configure_process` fits TensorFlow to what Ray gave a task: its
threads follow the task's CPUs, and a task without GPUs never claims one. Search trials
(`rbmsearch.tune`) and scoring shards (`rbmsearch.scoring`) both use them.

Training and generation give each op one thread (`SMALL_OP_THREADS`): a CD-k step or a
generated frame is many small ops, and the independent ones (the next Gibbs step's noise, the
two free energies, the gradients) then run side by side on the process's threads, where
splitting each small op over every core cost more than it gained (docs/results.md, 10.4).
Scoring shards, whose products are large, split their ops over all the task's cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rbmsearch.console import import_tensorflow

__all__ = ["SMALL_OP_THREADS", "Resources", "cluster_gpus", "configure_process", "quiet_stops_in_callbacks", "ray_running", "ray_session", "set_small_op_threads", "set_tf_threads"]

log = logging.getLogger(__name__)

# Ray 2.60 has no public switch for the address a local instance binds. On macOS and Windows
# it binds the loopback, because this flag is off there; off here too, a laptop's search is
# not reachable from its network. It is read when Ray's processes start.
_LOOPBACK_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class Resources:
    """What one trial or one scoring shard asks Ray for."""

    cpus: float = 1
    gpus: float = 0
    custom: dict = field(default_factory=dict)  # e.g. {"big_node": 1}

    def ray_options(self) -> dict:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "resources": dict(self.custom)}


@contextlib.contextmanager
def _loopback_only():
    """A local Ray started inside this block binds 127.0.0.1 (its GCS, raylet, workers, agents)."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_LOOPBACK_FLAG), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_FLAG] = "0"  # for the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # for this one, which has read it already
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOOPBACK_FLAG, None)
        else:
            os.environ[_LOOPBACK_FLAG] = saved_env


def _reap_orphaned_agents() -> int:
    """Kill this user's Ray processes whose raylet is gone; returns how many.

    When a driver that started a local Ray is killed (SIGKILL, OOM), its raylet dies with it,
    but the dashboard and runtime-env agents then wait 60 s on a report to the dead GCS
    before they exit. Linux only (it reads /proc); elsewhere it does nothing.
    """
    reaped = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid != os.getuid() or not (proc / "comm").read_text().startswith("ray::"):
                continue
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
            raylet = env.get(b"RAY_RAYLET_PID", b"").decode()
            # A raylet's children are its workers and agents; one handed to init has lost its raylet.
            if parent == "1" or (raylet.isdigit() and not Path(f"/proc/{raylet}").exists()):
                os.kill(int(proc.name), signal.SIGKILL)  # SIGTERM too would wait on the dead GCS
                reaped += 1
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    if reaped:
        log.info("stopped %d Ray agent process(es) left behind by an earlier Ray that was killed", reaped)
    return reaped


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_options):
    """Ray for the duration of a with-block: joins `address` (or $RAY_ADDRESS), else starts a
    local Ray on the loopback (also for address "local"); shuts down only a Ray that it started."""
    import ray

    started = not ray.is_initialized()
    init_options.setdefault("logging_level", logging.WARNING)  # not Ray's "Connecting to..." INFO lines
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        if address and address != "local":
            ray.init(address=address, **init_options)
        else:
            _reap_orphaned_agents()
            with _loopback_only():
                ray.init(address="local", **init_options)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def ray_running() -> bool:
    """Whether this process is connected to a Ray (without importing Ray when it is not)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def cluster_gpus() -> float:
    """GPUs in the Ray cluster this process is connected to."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


SMALL_OP_THREADS = 1  # threads per op in a process of many small ops (training, generation); its ops run side by side


def configure_process(cpus: float, gpus: float, op_threads: int | None = None) -> None:
    """Before TF starts in this process: its threads follow the task's CPUs (`op_threads` per op,
    default all of them; see `set_tf_threads`); no GPU if it has none."""
    if gpus == 0:
        # TF reads this when it initialises CUDA: a CPU task on a GPU node must not claim a GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import_tensorflow()  # without its start-up lines: one set per worker process is noise
    # Every trial and shard traces its own model's functions once: TF's retracing warning,
    # which counts traces across models, says nothing here.
    logging.getLogger("tensorflow").addFilter(lambda record: "triggered tf.function retracing" not in record.getMessage())

    set_tf_threads(max(1, int(cpus)), op_threads)
    quiet_stops_in_callbacks()


def quiet_stops_in_callbacks() -> None:
    """Ray stops a worker by SIGTERM, whose handler raises SystemExit; raised while a weakref
    callback runs, Python prints it as an ignored exception, 9 lines forwarded to the driver's
    console. After this call the process prints no ignored SystemExit; other ignored exceptions
    it still prints."""
    previous = sys.unraisablehook
    if getattr(previous, "quiet_stops", False):
        return

    def hook(unraisable) -> None:
        if not issubclass(unraisable.exc_type, SystemExit):
            previous(unraisable)

    hook.quiet_stops = True
    sys.unraisablehook = hook


def set_small_op_threads() -> None:
    """Before any TF op runs in this process of small ops (training, generation) on this machine:
    every core runs ops side by side, one thread each. A caller's TF that already ran keeps its own."""
    set_tf_threads(os.cpu_count() or 1, SMALL_OP_THREADS, warn=False)


def set_tf_threads(threads: int, op_threads: int | None = None, warn: bool = True) -> None:
    """Before any TF op runs in this process: `threads` run ops side by side (TF's inter-op
    threads), and each op splits over `op_threads` of them (intra-op; default `threads`).
    Afterwards TF keeps its threads, and this warns (`warn`) that the task may use more cores."""
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(min(threads, op_threads or threads))
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:  # TF already ran ops here with other settings
        if warn:
            warnings.warn(f"Could not set TensorFlow to {threads} thread(s) ({e}); the task may use more cores than it reserved.", stacklevel=2)
