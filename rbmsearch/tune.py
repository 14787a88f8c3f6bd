"""Search RNN-RBM hyperparameters with Ray Tune and Optuna; the search stage.

    python -m rbmsearch.tune [--data D] [--space NAME_OR_FILE] [--num-samples N] [--max-epochs E] [--max-concurrent M] [--time-budget MINUTES]
                             [--cpus-per-trial C] [--gpus-per-trial G] [--storage P] [--name X] [--resume] [--address A] [--single-trial] [--verbose]

Reads a dataset (`--data`: Parquet or any source `rbmsearch.data` imports; default: the built-in
Bach chorales) and a search space (`rbmsearch.space`; default: the shipped `default`). Writes the
experiment directory STORAGE/NAME (a local path or a URI): search.json (all that --resume
reuses), Ray Tune's trial_<id>/ directories with their checkpoints (run directories),
diverged/<id>.json for trials that produced NaN, and what `rbmsearch.report` leaves.
Each trial is `rbmsearch.train.train` behind a thin adapter (`run_trial`); Optuna's TPE
proposes configurations, a ConcurrencyLimiter bounds them, ASHA stops weak ones early.
`--single-trial` runs the same trial code in-process, without Ray or Optuna.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rbmsearch.config import TrainConfig
from rbmsearch.console import cli, import_tensorflow
from rbmsearch.data import Dataset, open_data
from rbmsearch.errors import DivergenceError, RenderError, SearchError, SearchSpaceError
from rbmsearch.report import TrialSummary, optuna_distributions, report_search, report_single
from rbmsearch.space import DEFAULT_SPACE, SearchSettings, SearchSpace, load_space
from rbmsearch.storage import is_uri, read_text, remove_partial_files, storage_filesystem, storage_root, store_text
from rbmsearch.train import train
from rbmsearch.workers import SMALL_OP_THREADS, configure_process, ray_session, set_small_op_threads

__all__ = ["check_shared_storage", "finish", "network_filesystem", "run_search", "run_trial", "single_trial"]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "runs"
# Gibbs steps per predicted frame for the per-epoch valid_acc: generation's 25, cheap but
# not mixed, so it reads below `evaluate`'s accuracy (docs/evaluation.md, "Sampled").
ACC_GIBBS_K = 25
SEARCH_FILE = "search.json"
STUDY_FILE = "optuna.db"  # the Optuna study, live during a search on local storage


# ---------------------------------------------------------------------------- one trial


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a search shares; sent to the workers once, with the dataset."""

    space: SearchSpace
    data_path: str  # provenance, written into each run's config.json
    marker_dir: str = ""  # where diverged trials leave a note (a path or URI); "" for none


class _ValidationAcc:
    """Per-epoch ACC of the latest checkpoint: one prediction per frame on <= `frames` validation frames."""

    def __init__(self, dataset: Dataset, frames: int, config: TrainConfig):
        self.rolls = dataset.rolls("valid") or dataset.rolls("train")  # train's own fallback
        self.frames, self.config = frames, config
        self.model = self.checkpoint = self.chain = self.previous = None

    def __call__(self, run_dir: Path) -> float:
        import numpy as np
        import tensorflow as tf

        from rbmsearch.accuracy import expected_frame_accuracy, previous_frames
        from rbmsearch.model import ModelConfig, RnnRbm, conditional_rbms
        from rbmsearch.rbm import gibbs_chain

        if self.model is None:
            self.model = RnnRbm(ModelConfig.of(self.config), seed=self.config.seed)
            self.checkpoint = tf.train.Checkpoint(model=self.model)
            model = self.model
            # One trace for the whole trial: k Gibbs steps from the previous frame, as the test score's predictions.
            self.chain = tf.function(lambda v0, bv, bh, seed: gibbs_chain(v0, model.W, bv, bh, ACC_GIBBS_K, seed)[0])
            self.previous = previous_frames(self.rolls).astype(np.float32)
        self.checkpoint.restore(tf.train.latest_checkpoint(str(run_dir / "ckpt"))).expect_partial()
        v, bv, bh = conditional_rbms(self.model, self.rolls)  # (N, n_v), (N, n_v), (N, n_h)
        step = max(1, len(v) // self.frames)  # an even spread, the same frames every epoch
        seed = tf.constant([self.config.seed, 7], tf.int64)  # the same noise every epoch: less jitter
        sample = self.chain(tf.constant(self.previous[::step]), tf.constant(bv[::step]), tf.constant(bh[::step]), seed).numpy() > 0.5
        return expected_frame_accuracy(v[::step], sample[None])


def run_trial(params: dict, dataset: Dataset, spec: TrialSpec, session) -> dict:
    """Train one configuration and report every epoch to `session`: the trial, with or without Ray.

    session: `run_dir` (the run directory), `restore()` -> epochs already done (after putting
    the last checkpoint into run_dir), `report(metrics, run_dir)`, `writes_scalars` (whether
    train writes TensorBoard scalars, or the session's own logger does) and `judged_at` (the
    epochs at which a scheduler judges the trial: the monitor is read there too).
    """
    settings = spec.space.settings
    configure_process(settings.cpus_per_trial, settings.gpus_per_trial, SMALL_OP_THREADS)
    config = spec.space.train_config(params)
    restored = session.restore()
    acc = _ValidationAcc(dataset, settings.acc_frames, config) if settings.acc_frames else None
    start, reporting = time.perf_counter(), 0.0

    def report(epoch: int, record: dict, run_dir: Path) -> None:
        nonlocal reporting
        metrics = {**record, "restored_from_epoch": restored}
        if acc is not None:
            metrics["valid_acc"] = acc(run_dir)
        metrics["train_s"] = time.perf_counter() - start - reporting  # this attempt's own work so far
        before = time.perf_counter()
        session.report(metrics, run_dir)
        reporting += time.perf_counter() - before

    return train(config, dataset, session.run_dir, report=report, data_path=spec.data_path, evaluate_test=False,
                 tensorboard=session.writes_scalars, read_at=session.judged_at)  # fmt: skip


def _epochs_done(run_dir: Path) -> int:
    from rbmsearch.run import read_metrics

    return len(read_metrics(run_dir).get("history", []))


class _LocalSession:
    """Single-trial mode: the run directory is the only state; each report prints a JSON line."""

    writes_scalars = True  # train writes TensorBoard scalars into the run directory
    judged_at = ()  # no scheduler

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def restore(self) -> int:
        return _epochs_done(self.run_dir)  # train resumes from run_dir by itself

    def report(self, metrics: dict, run_dir: Path) -> None:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}), flush=True)


class _RaySession:
    """Inside a Tune trial: checkpoints are Tune's, copied into a scratch run directory."""

    writes_scalars = False  # Ray Tune's own logger writes every reported metric into the trial directory

    def __init__(self, run_dir: Path, judged_at: tuple[int, ...]):
        self.run_dir, self.judged_at = run_dir, judged_at  # judged_at: ASHA's rungs
        # Ray logs every checkpoint it persists, once per epoch per trial: noise in the driver's table.
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)

    def restore(self) -> int:
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as path:
            shutil.copytree(path, self.run_dir, dirs_exist_ok=True)
        return _epochs_done(self.run_dir)

    def report(self, metrics: dict, run_dir: Path) -> None:
        import ray
        import ray.tune

        context = ray.get_runtime_context()
        gpus = context.get_accelerator_ids().get("GPU", [])  # what Ray gave this trial (CUDA_VISIBLE_DEVICES)
        metrics = {**metrics, "node_id": context.get_node_id(), "gpu_ids": ",".join(map(str, gpus))}
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(run_dir)))


def _read_marker(marker_dir: str, trial_id: str) -> dict | None:
    """The note a diverged trial left in marker_dir, or None."""
    text = read_text(f"{marker_dir}/{trial_id}.json") if marker_dir else None
    return json.loads(text) if text is not None else None


def _write_marker(marker_dir: str, trial_id: str, error: DivergenceError, params: dict) -> None:
    if marker_dir:
        note = {"trial_id": trial_id, "epoch": error.epoch, "what": error.what, "params": params, "error": str(error)}
        store_text(f"{marker_dir}/{trial_id}.json", json.dumps(note, indent=2, sort_keys=True) + "\n")


def rbmsearch_trial(params: dict, dataset: Dataset, spec: TrialSpec) -> None:
    """The Ray Tune trainable: `run_trial` in a scratch run directory, with Tune's checkpoints."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    earlier = _read_marker(spec.marker_dir, trial_id)
    if earlier is not None:  # NaN is deterministic: a retry would only diverge again
        config = spec.space.train_config(params)
        raise DivergenceError(earlier["epoch"], f"{earlier['what']} (in an earlier attempt of this trial; not retried)", config)
    with tempfile.TemporaryDirectory(prefix=f"rbmsearch-{trial_id}-") as scratch:
        try:
            run_trial(params, dataset, spec, _RaySession(Path(scratch) / "run", spec.space.settings.rungs()))
        except DivergenceError as e:
            _write_marker(spec.marker_dir, trial_id, e, params)
            raise


def _latest_experiment(storage: str) -> str:
    if is_uri(storage):
        raise SearchError(f"--resume with a URI storage ({storage}) needs --name: which experiment to continue.")
    found = sorted(Path(storage).glob(f"*/{SEARCH_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SearchError(f"--resume found no experiment in {storage}; give --storage and --name of the one to continue.")
    return found[-1].parent.name


# ---------------------------------------------------------------------------- search


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _path_exists(path: str) -> bool:
    return os.path.exists(path)


# Filesystem types (/proc/mounts) whose paths other machines can mount too.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "afs")


def network_filesystem(path: str) -> str | None:
    """The type of the network filesystem holding `path` (nfs, fuse.gcsfuse, ...), or None if local."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:  # not Linux: cannot tell
        return None
    resolved = str(Path(path).resolve())
    under = [(point, kind) for point, kind in mounts if resolved == point or resolved.startswith(point.rstrip("/") + "/")]
    if not under:
        return None
    _, kind = max(under, key=lambda m: len(m[0]))  # the innermost mount
    return kind if kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.") else None


def check_shared_storage(storage: str, settings: SearchSettings) -> None:
    """Fail fast if trials could write under a local `storage` path that the driver cannot see.

    Trials write their checkpoints under the storage path on whatever node they run, so on
    a cluster a node's own disk would strand them there. URIs (s3://, gs://, ...) and network
    filesystems are shared by nature. Otherwise: with several nodes alive, the driver writes
    a marker file and asks every node whether it sees it; with one node that cannot run a
    trial (a CPU-only head of an autoscaling cluster), trials will run on nodes that join
    later, which cannot be asked, so a local path is refused.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if is_uri(storage) or network_filesystem(storage):
        return
    fix = ("pass shared storage: --storage s3://BUCKET/runs, gs://BUCKET/runs, or an NFS path mounted at the "
           "same place on every node")  # fmt: skip
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) == 1:
        have = nodes[0]["Resources"]
        need = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial, **settings.resources}
        if all(have.get(k, 0) >= v for k, v in need.items() if v):
            return
        raise SearchError(
            f"no node of this cluster can run a trial yet (it has {json.dumps({k: have.get(k, 0) for k in need})}, a trial "
            f"needs {json.dumps(need)}), so trials will run on nodes that join later, which cannot see the local "
            f"--storage {storage}: {fix}. (On one machine, lower --cpus-per-trial or --gpus-per-trial instead.)"
        )
    marker = Path(storage) / f".rbmsearch-shared-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by the driver; every node must see it\n")
    try:
        probe = ray.remote(num_cpus=0)(_path_exists)
        answers = {
            f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes
        }  # fmt: skip
        blind = [name for name, answer in answers.items() if not ray.get(answer, timeout=300)]
    finally:
        marker.unlink()
    if blind:
        raise SearchError(
            f"--storage {storage} is a local path that {len(blind)} of the cluster's {len(nodes)} nodes cannot see "
            f"({', '.join(blind)}): their trials' checkpoints and results would be stranded on their own disks; {fix}."
        )


def check_soundfont(settings: SearchSettings) -> None:
    """Refuse a space whose `soundfont` cannot be used, before any trial runs."""
    if settings.soundfont is not None and settings.samples:
        from rbmsearch.render import find_fluidsynth

        try:
            usable = find_fluidsynth(settings.soundfont)
        except RenderError as e:
            raise SearchError(f"search.soundfont: {e}") from e
        if usable is None:
            raise SearchError(f"search.soundfont is {settings.soundfont}, but the fluidsynth program is not installed: apt-get install fluidsynth, or set soundfont to null.")


def run_search(
    space: SearchSpace | None,
    data: str | None,
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    finish_search: bool = True,
    verbose: bool = False,
):
    """Run (or with `resume`, continue) a search; returns (experiment path, ray.tune.ResultGrid).

    verbose: Ray Tune's own tables; otherwise a line per ended trial and a status line a minute.
    Raises SearchError when the experiment cannot start, or was interrupted (rerun with resume).
    """
    import ray
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from rbmsearch.progress import CompactProgress, state_copy_races_in_a_line

    # Every trial checkpoints every epoch, so Tune snapshots the experiment often by design;
    # its warning about that would repeat every few seconds for the whole search.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:  # the compact lines of rbmsearch.progress instead of Tune's tables and boxes
        import optuna

        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the output engine that honours verbose=0
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    storage = storage_root(storage)
    if resume:
        name = name or _latest_experiment(storage)
        experiment = f"{storage}/{name}"
        saved = _read_search_file(experiment)
        _check_tune_state(experiment)
        space = SearchSpace.from_dict(saved["space"], f"{experiment}/{SEARCH_FILE}", saved["space_name"])
        data = saved["data"]
    else:
        name = name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment = f"{storage}/{name}"
        if read_text(f"{experiment}/{SEARCH_FILE}") is not None:
            raise SearchError(f"{experiment} already holds an experiment; continue it with --resume, or choose another --name.")
    dataset, data_path = open_data(data, progress)
    space = space.for_data(_train_frames(dataset))  # `auto` epochs; a resumed space is already sized
    settings = space.settings
    check_soundfont(settings)  # now, not when the samples are rendered at the end
    with ray_session(address):
        check_shared_storage(storage, settings)  # before anything is written there
        if not resume:
            saved = {"space_name": space.name, "space_file": space.where, "space": space.to_dict(), "data": data_path, "created": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
            store_text(f"{experiment}/{SEARCH_FILE}", json.dumps(saved, indent=2) + "\n")
        spec = TrialSpec(space, data_path, marker_dir=f"{experiment}/diverged")
        trial = settings.trial_resources
        resources = {"cpu": trial.cpus, "gpu": trial.gpus, **trial.custom}
        trainable = ray.tune.with_resources(ray.tune.with_parameters(rbmsearch_trial, dataset=dataset, spec=spec), resources)
        if resume:
            tuner = ray.tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                           storage_filesystem=storage_filesystem(storage))  # fmt: skip
        else:
            options = dict(space=optuna_distributions(space), metric=settings.metric, mode=settings.mode,
                           sampler=_tpe_sampler(settings.seed), points_to_evaluate=space.first_trials() or None)  # fmt: skip
            if is_uri(experiment):  # SQLite needs a local file: the study is written when the search ends
                searcher = OptunaSearch(**options)
            else:  # written as the search runs, for optuna-dashboard
                from rbmsearch.study import LiveOptunaSearch, sqlite_storage

                storage_db = sqlite_storage(f"{experiment}/{STUDY_FILE}")
                searcher = LiveOptunaSearch(**options, storage=storage_db, study_name=name, max_epochs=settings.max_epochs)
            scheduler = ASHAScheduler(
                time_attr="epoch", metric=settings.metric, mode=settings.mode, max_t=settings.max_epochs,
                grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
            )  # fmt: skip
            tuner = ray.tune.Tuner(
                trainable,
                tune_config=ray.tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent),
                    scheduler=scheduler,
                    num_samples=settings.num_samples,
                    time_budget_s=settings.time_budget_s,
                    reuse_actors=settings.reuse_actors,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=ray.tune.RunConfig(
                    name=name,
                    storage_path=storage,
                    storage_filesystem=storage_filesystem(storage),  # whole files only, so a killed driver can resume
                    verbose=2 if verbose else 0,
                    callbacks=[] if verbose else [CompactProgress(settings.metric, settings.mode, settings.max_epochs, [p.name for p in space.params], budget_s=settings.time_budget_s)],
                    checkpoint_config=ray.tune.CheckpointConfig(
                        num_to_keep=settings.keep_checkpoints,
                        checkpoint_score_attribute=settings.metric,
                        checkpoint_score_order=settings.mode,
                    ),
                    failure_config=ray.tune.FailureConfig(max_failures=settings.max_failures),
                ),
            )
        with contextlib.nullcontext() if verbose else state_copy_races_in_a_line():
            results = tuner.fit()
        statuses = _saved_statuses(experiment)
        unfinished = sum(status not in ("TERMINATED", "ERROR") for status in statuses)
        # Fewer trials than asked for also means an interruption, unless a time budget ended the search.
        if unfinished or (len(statuses) < settings.num_samples and settings.time_budget_s is None):
            raise SearchError(
                f"the search was interrupted: {len(statuses) - unfinished} of {settings.num_samples} trials "
                f"done, {unfinished} unfinished; continue it with "
                f"`python -m rbmsearch.tune --resume --storage {storage} --name {name}`"
            )
        if finish_search:
            finish(experiment, results=results, dataset=dataset)
        return experiment, results


def _train_frames(dataset: Dataset) -> int:
    return sum(len(roll) for roll in dataset.rolls("train"))


def _saved_statuses(experiment: str) -> list[str]:
    """Trial statuses as the experiment state on storage has them.

    After Ctrl-C, Tune saves the state (interrupted trials still RUNNING, so that a restore
    continues them) and only then stops the trials, which the ResultGrid it returns then
    shows as TERMINATED; the saved state is the one that tells an interruption apart.
    """
    from ray.tune import ExperimentAnalysis

    return [trial.status for trial in ExperimentAnalysis(experiment).trials]


def _read_search_file(experiment: str) -> dict:
    """An experiment's search.json; missing or broken ones raise SearchError naming it."""
    path = f"{experiment}/{SEARCH_FILE}"
    text = read_text(path)
    if text is None:
        raise SearchError(f"{path}: missing, so {experiment} is not an rbmsearch experiment; give the --storage and --name of one that `python -m rbmsearch.tune` started.")
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        raise SearchError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); it is what --resume reuses, so restore it or start a new --name.") from e
    if not isinstance(saved, dict) or not {"space", "space_name", "data"} <= set(saved):
        raise SearchError(f"{path}: lacks 'space', 'space_name' or 'data'; restore it or start a new --name.")
    return saved


TUNE_STATE_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "tuner.pkl", "trainable.pkl")


def _check_tune_state(experiment: str) -> None:
    """Refuse to resume from a truncated Ray Tune state file (one a driver killed mid-copy left
    before rbmsearch wrote them atomically), naming it; drop the hidden halves of files that a
    killed driver was writing."""
    if is_uri(experiment):
        return  # object stores replace whole objects
    import pickletools

    remove_partial_files(experiment)  # in the trials' checkpoints too
    for pattern in TUNE_STATE_FILES:
        for path in Path(experiment).glob(pattern):
            try:
                if path.name.startswith("experiment_state-"):
                    json.loads(path.read_text())
                else:  # a pickle (search_gen_state too): parse it to its end without running it
                    for _ in pickletools.genops(path.read_bytes()):
                        pass
            except (ValueError, UnicodeDecodeError, OSError) as e:
                raise SearchError(
                    f"{path}: Ray Tune's saved state is truncated or unreadable ({e}), so --resume cannot continue "
                    f"this experiment: restore the file from a backup, or start a new search with another --name (its finished trials stay in {experiment})."
                ) from e


def _tpe_sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


# ---------------------------------------------------------------------------- the end of a search


def _short_error(error, marker: dict | None) -> str:
    """One line for an errored trial: the divergence note if it left one, else the error's last line."""
    if marker is not None:
        return f"training diverged at epoch {marker['epoch']}: {marker['what']} is not finite."
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__


def _summaries(results, settings: SearchSettings, param_names: list[str], marker_dir: str) -> list[TrialSummary]:
    """Ray's results as TrialSummary rows, ranked best first, then those with no result."""
    better = min if settings.mode == "min" else max
    out = []
    for result in results:
        frame = result.metrics_dataframe
        records = frame.to_dict("records") if frame is not None and settings.metric in frame else []
        records = [r for r in records if isinstance(r.get(settings.metric), float) and math.isfinite(r[settings.metric])]
        best = better(records, key=lambda r: r[settings.metric]) if records else {}
        keep = ("epoch", settings.metric, "valid_monitor", "valid_acc", "train_cost", "train_frames_per_s")
        trial_id = result.path.rstrip("/").rsplit("/", 1)[-1].removeprefix("trial_")
        checkpoint = result.get_best_checkpoint(settings.metric, settings.mode) if records else None
        error = _short_error(result.error, _read_marker(marker_dir, trial_id)) if result.error else ""
        out.append(
            TrialSummary(
                trial_id=trial_id,
                status="ERROR" if result.error else "TERMINATED",
                params={k: result.config[k] for k in param_names if k in result.config},
                epochs=int(max((r["epoch"] for r in records), default=0)),
                best={k: (int if k == "epoch" else float)(best[k]) for k in keep if k in best and best[k] == best[k]},
                history={int(r["epoch"]): float(r[settings.metric]) for r in records},
                error=error,
                checkpoint=checkpoint or (result.checkpoint if records else None),
            )
        )
    ranked = sorted((s for s in out if s.best), key=lambda s: s.best[settings.metric], reverse=settings.mode == "max")
    return ranked + [s for s in out if not s.best]


def finish(experiment_dir: str, results=None, dataset: Dataset | None = None) -> dict:
    """Summarise a search that has ended (`rbmsearch.report`) and print the result; returns best.json's content.

    `results` (a ResultGrid) and `dataset` are read from the experiment when not given.
    """
    experiment_dir = storage_root(experiment_dir)  # Ray reads experiments by absolute path or URI
    saved = _read_search_file(experiment_dir)
    space = SearchSpace.from_dict(saved["space"], f"{experiment_dir}/{SEARCH_FILE}", saved["space_name"])
    if results is None:
        from ray.tune import ExperimentAnalysis, ResultGrid

        results = ResultGrid(ExperimentAnalysis(experiment_dir))
    if dataset is None:
        dataset, _ = open_data(saved["data"], progress=False)
    summaries = _summaries(results, space.settings, [p.name for p in space.params], f"{experiment_dir}/diverged")
    report, lines = report_search(experiment_dir, summaries, space, saved["data"], dataset)
    print("\n".join(lines), flush=True)
    return report


# ---------------------------------------------------------------------------- single trial


def single_trial(space: SearchSpace, data: str | None, out_dir: str | os.PathLike, cpus: float | None = None) -> dict:
    """One configuration (fixed values + each param's default or midpoint) through the trial code, without Ray.

    Writes out_dir/run (a run directory), then best.json and samples as a search would.
    Returns best.json's content.
    """
    out_dir = Path(out_dir)
    dataset, data_path = open_data(data)
    space = space.for_data(_train_frames(dataset)).with_settings(cpus_per_trial=cpus or float(os.cpu_count() or 1))
    check_soundfont(space.settings)
    params = space.center()
    log.info("single trial: %s", json.dumps(params))
    run_dir = out_dir / "run"
    metrics = run_trial(params, dataset, TrialSpec(space, data_path), _LocalSession(run_dir))
    report, lines = report_single(out_dir, run_dir, params, space, data_path, dataset, metrics["history"])
    print("\n".join(lines), flush=True)
    return report


# ---------------------------------------------------------------------------- CLI


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.tune", description="Search RNN-RBM hyperparameters with Ray Tune and Optuna.")
    parser.add_argument("--data", help="a Parquet file or URI, a MIDI folder, a .pickle, or bach-chorales (default: the built-in Bach chorales)")
    parser.add_argument("--space", default=DEFAULT_SPACE, help="a shipped space (default, paper, smoke) or a YAML file (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, help="trials in all (overrides search.num_samples)")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial (overrides search.max_epochs)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (overrides search.max_concurrent; e.g. 2 per GPU on a cluster)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop starting and running trials after this long (overrides search.time_budget_s)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial, also TF's threads (overrides search.cpus_per_trial)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (overrides search.gpus_per_trial)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="where experiments go: a local path or a URI (default: ./runs)")
    parser.add_argument("--name", help="the experiment's name (default: SPACE-DATE-TIME; with --resume: the latest)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment, with its own settings")
    parser.add_argument("--address", help="join a running Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--single-trial", action="store_true", help="run one configuration in-process without Ray, for debugging")
    parser.add_argument("--verbose", action="store_true", help="Ray Tune's full tables instead of a line per ended trial and a status line a minute")
    args = parser.parse_args(argv)
    import_tensorflow()  # here, without its start-up lines, before any stage loads it
    set_small_op_threads()  # the driver's own TF renders the samples; trials and shards set their own

    minutes = args.time_budget
    if minutes is not None and not 0 < minutes < math.inf:
        parser.error(f"--time-budget is a positive number of minutes, but got {minutes:g}")
    by_flag = {  # flag: (search setting, value or None)
        "--num-samples": ("num_samples", args.num_samples),
        "--max-epochs": ("max_epochs", args.max_epochs),
        "--max-concurrent": ("max_concurrent", args.max_concurrent),
        "--time-budget": ("time_budget_s", None if minutes is None else minutes * 60),
        "--cpus-per-trial": ("cpus_per_trial", args.cpus_per_trial),
        "--gpus-per-trial": ("gpus_per_trial", args.gpus_per_trial),
    }
    overrides = {key: value for key, value in by_flag.values() if value is not None}
    if args.resume:
        given = [flag for flag, (_, value) in by_flag.items() if value is not None] + [f for f, v in (("--space", args.space != DEFAULT_SPACE), ("--data", args.data), ("--single-trial", args.single_trial)) if v]  # fmt: skip
        if given:
            raise SearchError(f"--resume continues the experiment as it was started (its search.json); drop {', '.join(given)}.")
        run_search(None, None, args.storage, args.name, resume=True, address=args.address, verbose=args.verbose)
        return
    space = load_space(args.space)
    if overrides:
        try:
            space = space.with_settings(**overrides)
        except SearchSpaceError as e:
            raise SearchError(f"a command-line override is invalid: {e.reason} ({e.key})") from e
    if args.single_trial:
        storage = storage_root(args.storage)
        if is_uri(storage):
            raise SearchError(f"--single-trial writes to a local directory, but --storage is {storage}.")
        name = args.name or f"single-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        single_trial(space, args.data, Path(storage) / name, cpus=args.cpus_per_trial)
        return
    run_search(space, args.data, args.storage, args.name, address=args.address, verbose=args.verbose)

if __name__ == "__main__":
    main()
