"""rbmsearch.tune: CLI errors, the single trial without Ray, and real Ray Tune + Optuna searches on
the toy dataset (search-space files: test_space.py; the report's pieces: test_report.py).

The searches share one local Ray instance (2 CPUs, a small object store); the CLI tests join
it with --address. The several-node test builds its own `ray.cluster_utils.Cluster` in a
subprocess (this file run as a script), so the two clusters never meet in one process.
Every test that starts Ray is marked `slow`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rbmsearch.midi import NUM_PITCHES, read_midi
from rbmsearch.space import load_space, shipped_spaces

SMOKE = shipped_spaces()["smoke"]
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}  # a throwaway test cluster needs no token
# The most lines a 6-trial search may print: a line per trial, status lines, the final table and summary.
CONSOLE_LINES_BOUND = 40


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module; yields its address for CLI subprocesses to join."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        import ray

        ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- the CLI


def test_cli_errors(tmp_path, capsys):
    """Bad spaces and flags end the command with `error: ...` before Ray starts."""
    from rbmsearch.errors import SearchError
    from rbmsearch.tune import check_soundfont
    from rbmsearch.tune import main as tune_main

    font = write_space(tmp_path / "font.yaml", SMOKE.read_text().replace("  samples: 2\n", f"  samples: 2\n  soundfont: {tmp_path / 'gone.sf2'}\n"))
    with pytest.raises(SearchError, match=f"search.soundfont: soundfont {tmp_path / 'gone.sf2'}: cannot be read"):
        check_soundfont(load_space(font).settings)  # run_search and single_trial call it before any trial runs
    bad = write_space(tmp_path / "bad.yaml", "params: {cd_k: {type: int, low: 3, high: 1}}")
    # In this process (the command's own `main`, as `python -m` calls it): no interpreter and TensorFlow to start per case.
    cases = [
        (["--space", str(bad)], f"error: {bad}: params.cd_k.low: a value below high"),
        (["--resume", "--space", str(SMOKE)], "drop --space"),
        (["--resume", "--time-budget", "5", "--max-epochs", "3"], "drop --max-epochs, --time-budget."),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            tune_main([*argv, "--storage", str(tmp_path)])
        assert str(info.value.code).startswith("error: ") and message in str(info.value.code), (argv, info.value.code)
    with pytest.raises(SystemExit) as info:
        tune_main(["--time-budget", "-1", "--space", str(SMOKE), "--storage", str(tmp_path)])
    assert info.value.code == 2 and "--time-budget is a positive number of minutes, but got -1" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/search.json"))  # no experiment was started


def test_budget_bar_shows_the_time_used_and_left():
    from rbmsearch.progress import budget_bar

    assert budget_bar(18 * 60, 60 * 60) == "[######--------------] 30% of 60 min, 42 min left"
    assert budget_bar(0, 600) == "[--------------------] 0% of 10 min, 10 min left"
    assert budget_bar(700, 600) == "[####################] 100% of 10 min, 0 min left"  # the last trials run past it


def test_a_state_copy_that_missed_a_renamed_file_is_one_warning_and_other_failures_stay_whole(tmp_path):
    """Tune reports a failed copy of its state with a traceback (seen once in the CLI search's
    console): when the file it missed was a hidden one that Tune's next save had just renamed, one
    line says so, while a search runs and only then."""
    import inspect
    import logging
    import traceback

    import pyarrow.fs
    import ray.train._internal.syncer
    import ray.tune.execution.experiment_state

    from rbmsearch.progress import STATE_LOGGERS, state_copy_races_in_a_line

    # The records as Tune writes them: if Tune's modules stop writing them, the filter has nothing to do.
    waited, started = (inspect.getsource(m) for m in (ray.tune.execution.experiment_state, ray.train._internal.syncer))
    assert '"Saving experiment state to storage at "' in waited and "exc_info=True" in waited
    assert '"Last sync command failed with the following error:' in started and "traceback.format_exc()" in started
    assert STATE_LOGGERS == (ray.tune.execution.experiment_state.logger.name, ray.train._internal.syncer.logger.name)

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(logging.Formatter("%(levelname)s %(message)s").format(record))
    waiting, starting = (logging.getLogger(name) for name in STATE_LOGGERS)

    def copy_fails(path: Path) -> None:  # Tune's two reports of one failed copy, on pyarrow's own error
        try:
            pyarrow.fs.LocalFileSystem().open_input_stream(str(path))
        except OSError:
            waiting.error(f"Saving experiment state to storage at '{tmp_path}/k' failed with exception: ", exc_info=True)
            starting.warning(f"Last sync command failed with the following error:\n{traceback.format_exc()}")

    for logger in (waiting, starting):
        logger.addHandler(handler)
    try:
        with state_copy_races_in_a_line():
            copy_fails(tmp_path / "driver_artifacts" / ".0f3a-tmp-searcher-state-2026.pkl")
            copy_fails(tmp_path / "driver_artifacts" / "experiment_state-2026.json")  # a file of the state itself: not the race
        copy_fails(tmp_path / "driver_artifacts" / ".0f3a-tmp-searcher-state-2027.pkl")  # after the search: Tune's records
    finally:
        for logger in (waiting, starting):
            logger.removeHandler(handler)
    one_line = "WARNING one copy of the search's state to storage missed .0f3a-tmp-searcher-state-2026.pkl, renamed while it was copied; the next copy carries the state"
    assert lines[:2] == [one_line, one_line]
    assert lines[2].startswith(f"ERROR Saving experiment state to storage at '{tmp_path}/k' failed") and "Traceback" in lines[2] and "experiment_state-2026.json" in lines[2]
    assert lines[3].startswith("WARNING Last sync command failed") and "Traceback" in lines[3] and "experiment_state-2026.json" in lines[3]
    assert lines[4].startswith("ERROR Saving experiment state") and "Traceback" in lines[4] and "2027.pkl" in lines[4]
    assert len(lines) == 6 and not waiting.filters and not starting.filters


# ---------------------------------------------------------------------------- single trial


@pytest.mark.slow
def test_single_trial_runs_without_ray(tmp_path, toy_parquet, lean_smoke):
    code = (
        "import json, sys\n"
        "from rbmsearch.tune import main\n"
        "main(sys.argv[1:])\n"
        "print(json.dumps({'ray': 'ray' in sys.modules, 'optuna': 'optuna' in sys.modules}))\n"
    )
    args = ["--single-trial", "--data", str(toy_parquet), "--space", str(lean_smoke), "--storage", str(tmp_path), "--name", "one", "--max-epochs", "2"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert json.loads(lines[-1]) == {"ray": False, "optuna": False}
    epochs = [json.loads(line) for line in lines if line.startswith('{"epoch"')]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(0 <= e["valid_acc"] <= 1 for e in epochs)
    best = json.loads((tmp_path / "one/best.json").read_text())
    assert best["params"] == load_space(lean_smoke).center()
    assert math.isfinite(best["metrics"]["test_nll"]) and 0 <= best["metrics"]["test_acc"] <= 1
    assert f"best.json: {tmp_path / 'one/best.json'}" in out.stdout
    run = tmp_path / "one/run"
    assert sorted(p.name for p in (run / "samples").glob("sample_*")) == [f"sample_0.{e}" for e in ("mid", "png", "wav")]  # the lean space: 1 sample
    assert (run / "index.html").is_file() and f"view them: python -m rbmsearch.gallery {run}" in out.stdout


# ---------------------------------------------------------------------------- searches on Ray


def optuna_trials(db: Path) -> list[tuple[str, float | None]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT t.state, v.value FROM trials t LEFT JOIN trial_values v USING (trial_id) ORDER BY t.number").fetchall()


@pytest.mark.slow
def test_nan_trial_errors_with_its_parameters_and_the_search_goes_on(ray_address, tmp_path, toy_parquet):
    from rbmsearch.tune import run_search

    text = """
search: {num_samples: 3, max_epochs: 2, grace_period: 2, max_failures: 1, acc_frames: 50, samples: 1,
         sample_quarters: 4, references: 0, continuations: 0, render_top: 1, first_trial_at_defaults: true, seed: 3}
fixed: {pretrain_epochs: 0, optimizer: sgd, n_hidden: 8, n_recurrent: 4, cd_k: 1, window: 16, batch_size: 4,
        eval_ais_runs: 2, eval_ais_betas: 10, eval_acc_samples: 1}
params:
  learning_rate: {type: categorical, choices: [1.0e+30, 0.01], default: 1.0e+30}
"""
    space = load_space(write_space(tmp_path / "nan.yaml", text))
    experiment, results = run_search(space, str(toy_parquet), str(tmp_path), name="nan", progress=False)
    exp = Path(experiment)
    errored = [r for r in results if r.error]
    finished = [r for r in results if not r.error]
    assert errored and finished and len(results) == 3
    for r in errored:
        assert r.config == {"learning_rate": 1e30}
        assert "training diverged at epoch 1" in str(r.error) and '"learning_rate": 1e+30' in str(r.error)
        trial_id = Path(r.path).name.removeprefix("trial_")
        note = json.loads((exp / "diverged" / f"{trial_id}.json").read_text())
        assert note["params"] == {"learning_rate": 1e30} and note["epoch"] == 1
        # The retry that FailureConfig allows re-raised at once instead of training again.
        assert "(in an earlier attempt of this trial; not retried)" in str(r.error)
    assert all(r.config == {"learning_rate": 0.01} and r.metrics["epoch"] == 2 for r in finished)
    table = {t["trial_id"]: t for t in json.loads((exp / "trials.json").read_text())}
    assert sorted(t["status"] for t in table.values()) == sorted(["ERROR"] * len(errored) + ["TERMINATED"] * len(finished))
    assert all(t["params"] == {"learning_rate": 1e30} and "diverged" in t["error"] for t in table.values() if t["status"] == "ERROR")
    states = [state for state, _ in optuna_trials(exp / "optuna.db")]
    assert sorted(states) == sorted(["FAIL"] * len(errored) + ["COMPLETE"] * len(finished))
    assert json.loads((exp / "best.json").read_text())["params"] == {"learning_rate": 0.01}


@pytest.mark.slow
def test_enqueued_trials_run_first_and_auto_epochs_are_sized_from_the_data(ray_address, tmp_path, toy_parquet, toy_dataset, monkeypatch):
    """The center, then the enqueued trials, in order, before Optuna samples; `max_epochs: auto`
    is sized from the training frames (here a reference of 4 epochs at the toy's size), and search.json
    keeps the number that --resume reuses. The new options train in real trials."""
    from rbmsearch.tune import run_search

    frames = sum(len(r) for r in toy_dataset.rolls("train"))
    monkeypatch.setattr("rbmsearch.space.AUTO_REFERENCE", (frames, 4))  # the driver sizes the space
    monkeypatch.setattr("rbmsearch.space.AUTO_EPOCHS", (1, 400))
    text = """
search: {num_samples: 4, max_epochs: auto, grace_period: 4, max_concurrent: 1, acc_frames: 0, samples: 1,
         sample_quarters: 4, first_trial_at_defaults: true, seed: 5}
fixed: {pretrain_epochs: 0, n_hidden: 8, n_recurrent: 4, cd_k: 1, window: 16, batch_size: 4, monitor_frames: 20,
        monitor_ais_betas: 10, eval_ais_runs: 2, eval_ais_betas: 10, eval_acc_samples: 1}
params:
  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1, log: true, default: 0.01}
  optimizer: {type: categorical, choices: [adam, nesterov, nadam]}
  rnn_pretrain_epochs: {type: categorical, choices: [0, 1]}
  cd_k_late: {type: categorical, choices: [0, 2]}
enqueue:
  - {optimizer: nesterov, learning_rate: 0.05, cd_k_late: 2}
  - {optimizer: nadam, rnn_pretrain_epochs: 1}
"""
    space = load_space(write_space(tmp_path / "enqueue.yaml", text))
    experiment, results = run_search(space, str(toy_parquet), str(tmp_path), name="enq", progress=False, finish_search=False)
    saved = json.loads((Path(experiment) / "search.json").read_text())
    assert (saved["space"]["search"]["max_epochs"], saved["space"]["search"]["grace_period"]) == (4, 4)
    assert saved["space"]["enqueue"] == [dict(e) for e in space.enqueue]
    ordered = sorted(results, key=lambda r: r.metrics_dataframe["timestamp"].min())
    center = {"learning_rate": 0.01, "optimizer": "adam", "rnn_pretrain_epochs": 0, "cd_k_late": 0}
    assert [r.config for r in ordered][:3] == [
        center, {**center, "optimizer": "nesterov", "learning_rate": 0.05, "cd_k_late": 2}, {**center, "optimizer": "nadam", "rnn_pretrain_epochs": 1}
    ]
    assert len(results) == 4 and not any(r.error for r in results)
    assert all(r.metrics["epoch"] == 4 for r in results)  # grace 4: no trial stopped early
    assert list(ordered[1].metrics_dataframe["cd_k"]) == [1, 1, 1, 2]  # CD-2 for the last quarter


@pytest.mark.slow
def test_tiny_search_on_local_ray_from_the_command_line(ray_address, tmp_path, toy_parquet):
    """One real search of 6 trials (one process runs it, this one watches), and all it leaves:

    - optuna.db is written as trials end, readable mid-search; ASHA-stopped trials are PRUNED,
      full-length ones COMPLETE with their best epoch's value, per-epoch values, real start and
      end times and the Ray trial id;
    - best.json, the best run and its test score (as Ray tasks, with its interval and shards);
    - TensorBoard events, trials.json with every epoch's metric, the plots;
    - the samples of the best 2 trials (smoke: render_top 2), the comparisons once, the page
      with the music first;
    - a console without TensorFlow's start-up lines, a line per ended trial, few lines in all.
    """
    import optuna
    from ray.tune import ExperimentAnalysis, ResultGrid

    args = ["--data", str(toy_parquet), "--space", str(SMOKE), "--storage", str(tmp_path), "--name", "live",
            "--num-samples", "6", "--max-epochs", "3", "--address", ray_address]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "rbmsearch.tune", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **RAY_ENV})  # fmt: skip
    exp = tmp_path / "live"
    db = exp / "optuna.db"
    seen_mid_search, deadline = [], time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if db.is_file():
            with contextlib.suppress(Exception):  # the study may not exist in it yet, or the search holds its lock
                study = optuna.load_study(study_name="live", storage=f"sqlite:///{db}")
                ended = [t for t in study.trials if t.state.is_finished()]
                if ended and proc.poll() is None:
                    seen_mid_search = ended
                    break
        time.sleep(0.5)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    assert seen_mid_search, "no finished trial could be read from optuna.db while the search ran"

    # The study.
    trials = optuna.load_study(study_name="live", storage=f"sqlite:///{db}").trials
    states = [t.state.name for t in trials]
    assert len(trials) == 6 and "PRUNED" in states and "COMPLETE" in states and set(states) <= {"PRUNED", "COMPLETE"}, states
    table = {t["trial_id"]: t for t in json.loads((exp / "trials.json").read_text())}
    for t in trials:
        row = table[t.user_attrs["ray_trial_id"]]
        assert t.user_attrs["epochs"] == row["epochs"] and (t.state.name == "COMPLETE") == (row["epochs"] == 3)
        assert sorted(t.intermediate_values) == list(range(1, row["epochs"] + 1))  # one value per epoch
        assert t.datetime_complete > t.datetime_start and math.isfinite(t.value)
        if t.state.name == "COMPLETE":  # the best epoch's value, as the table has it
            assert t.value == pytest.approx(min(t.intermediate_values.values())) == pytest.approx(row["best"]["valid_monitor"])

    # The results: best.json, the best run, its test score.
    results = ResultGrid(ExperimentAnalysis(str(exp)))
    assert len(results) == 6 and results.num_errors == 0
    best = json.loads((exp / "best.json").read_text())
    valid = [r.metrics_dataframe["valid_monitor"].min() for r in results]
    assert best["metrics"]["valid_monitor"] == pytest.approx(min(valid))
    assert math.isfinite(best["metrics"]["test_nll"]) and 0 <= best["metrics"]["test_acc"] <= 1
    assert best["config"]["eval_ais_runs"] == 4 and best["config"]["epochs"] == 3
    assert set(best["params"]) == {"n_hidden", "n_recurrent", "cd_k", "learning_rate", "optimizer"}
    assert Path(best["checkpoint"]).is_dir() and (exp / "best_run/params.npz").is_file()
    assert json.loads((exp / "best_run/metrics.json").read_text())["test_nll"] == best["metrics"]["test_nll"]
    # The final score ran as Ray tasks (not in the driver), with its interval, and left its shards.
    assert best["test_eval"]["workers"] == "ray" and sum(best["test_eval"]["shards_by_node"].values()) == best["test_eval"]["shards"]
    assert 0 < best["metrics"]["test_nll_ci95"] < 5
    assert len(list((exp / "eval").glob("test-*/shard-*.npz"))) == best["test_eval"]["shards"]
    # TensorBoard: Ray's logger writes each trial's events; train's own writer stays off in trials,
    # so checkpoints carry no second copy.
    assert len(list(exp.glob("trial_*/events.out.tfevents.*"))) == 6
    assert not list(exp.glob("trial_*/checkpoint_*/tensorboard"))
    assert [t["status"] for t in table.values()] == ["TERMINATED"] * 6
    assert all(set(t["params"]) == set(best["params"]) for t in table.values())
    by_trial = {Path(r.path).name.removeprefix("trial_"): r for r in results}
    for t in table.values():  # learning curves for the gallery: the metric of every reported epoch
        frame = by_trial[t["trial_id"]].metrics_dataframe
        assert t["history"] == {str(int(e)): pytest.approx(m) for e, m in zip(frame["epoch"], frame["valid_monitor"])}
    for png in ("history.png", "importance.png"):
        assert (exp / png).read_bytes()[:4] == b"\x89PNG"

    # The samples and the page.
    best_samples = exp / "samples" / f"trial_{best['trial_id']}"
    assert best["samples"] == [f"{exp}/samples/trial_{best['trial_id']}/sample_{i}.mid" for i in range(2)]
    for path in best["samples"]:
        roll = read_midi(path, steps_per_quarter=4).roll
        assert roll.shape[1] == NUM_PITCHES and len(roll) <= 8 * 4
    rendered = sorted(p.name for p in (exp / "samples").iterdir())
    assert len(rendered) == 2 and best_samples.name in rendered
    page = (exp / "index.html").read_text()
    for folder in rendered:
        assert all(f"samples/{folder}/sample_{i}.wav" in page for i in range(2))
        stats = json.loads((exp / "samples" / folder / "stats.json").read_text())
        compared = (len(stats["references"]), len(stats["continuations"]))
        assert compared == ((1, 1) if folder == best_samples.name else (0, 0))  # the training piece and a continuation, once
    assert page.index(f"samples/{best_samples.name}/sample_0.wav") < page.index('<table class="sortable">')  # the music first
    assert "history.png" in page and "learning_curves.png" in page

    # The console: no TensorFlow start-up lines from the driver or the 6 trials' workers, one
    # line per ended trial, and the whole search in few lines (Ray's tables are for --verbose).
    assert "curves:    tensorboard --logdir" in log
    from rbmsearch.console import TF_STARTUP_NOISE

    lines = log.splitlines()
    (tmp_path / "console.txt").write_text(log)
    assert not [line for line in lines if any(n in line for n in TF_STARTUP_NOISE)], log
    ended = [line for line in lines if " after " in line and "epochs: best valid_monitor" in line]
    assert len(ended) == 6, log
    assert len(lines) <= CONSOLE_LINES_BOUND, f"{len(lines)} lines:\n{log}"


@pytest.mark.slow
def test_worker_node_lost_mid_trial_resumes_from_its_checkpoint(tmp_path, toy_parquet):
    """A Cluster of its own, in a subprocess: head + a worker node that the trials need; see _cluster_scenario."""
    out = subprocess.run(
        [sys.executable, __file__, "cluster", str(tmp_path), str(toy_parquet)], capture_output=True, text=True, timeout=420,
        env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["errors"] == 0 and summary["terminated"] == 2
    assert not list(tmp_path.glob(".rbmsearch-shared-*"))  # the shared-storage probe ran on 2 nodes and cleaned up
    for trial in summary["trials"]:
        assert trial["epochs"][-1] == 6, trial  # every trial finished
    moved = [t for t in summary["trials"] if 2 <= t["removed_after_epoch"] < 6]  # running, with a registered checkpoint
    assert moved, summary
    for t in moved:
        # After the node was lost, the trial came back on another node from its checkpoint:
        # the new attempt started after that checkpoint's epoch instead of at epoch 1.
        assert len(set(t["nodes"])) == 2, t
        assert t["epochs"].count(1) == 1, t
        restored = [e for e, r in zip(t["epochs"], t["restored_from_epoch"]) if r > 0]
        assert restored and restored[0] == min(r for r in t["restored_from_epoch"] if r > 0) + 1, t
        assert min(r for r in t["restored_from_epoch"] if r > 0) >= max(1, t["removed_after_epoch"] - 1), t


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Ray's Cluster.remove_node leaves worker processes to notice on their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            child, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _cluster_scenario(tmp: Path, data: str) -> None:
    """Head node (the driver) + a worker node holding the only `trainer` resources. Once a
    trial has a checkpoint, the worker node is removed and a new one added; prints a JSON summary."""
    import ray
    from ray.cluster_utils import Cluster

    from rbmsearch.tune import run_search

    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False})  # fmt: skip
    node_args = {"num_cpus": 2, "resources": {"trainer": 2}, "object_store_memory": 80 * 2**20}
    worker = cluster.add_node(**node_args)
    space = load_space(SMOKE).with_settings(
        num_samples=2, max_epochs=6, grace_period=6, max_concurrent=2, resources={"trainer": 1}, max_failures=3, reuse_actors=False
    )
    exp = tmp / "cluster"
    outcome = {}

    def search():  # Tune runs beside the main thread: Ray adds nodes only from the main thread
        try:
            outcome["results"] = run_search(space, data, str(tmp), name="cluster", progress=False, finish_search=False)[1]
        except BaseException as e:  # re-raised below, in the main thread
            outcome["error"] = e

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    removed = {}
    while thread.is_alive() and not removed:
        # Once the driver has logged a trial's 2nd epoch, it has registered that trial's checkpoint of
        # epoch 1 at least (a checkpoint merely written to storage may not be known to Tune yet): lose the worker.
        logged = {path.parent.name: len(path.read_text().splitlines()) for path in exp.glob("trial_*/result.json")}
        if max(logged.values(), default=0) >= 2:
            removed = logged
            # A lost machine takes its processes with it: the trial's worker too.
            doomed = _descendants(worker.all_processes["raylet"][0].process.pid)
            cluster.remove_node(worker, allow_graceful=False)
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            cluster.add_node(**node_args)
        time.sleep(0.05)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    results = outcome["results"]
    trials = []
    for r in results:
        frame = r.metrics_dataframe
        trials.append({
            "trial": Path(r.path).name,
            "epochs": [int(e) for e in frame["epoch"]],
            "restored_from_epoch": [int(e) for e in frame["restored_from_epoch"]],
            "nodes": list(dict.fromkeys(frame["node_id"])),
            "removed_after_epoch": removed.get(Path(r.path).name, 0),
        })  # fmt: skip
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"errors": results.num_errors, "terminated": results.num_terminated, "trials": trials}))


if __name__ == "__main__":
    if sys.argv[1] == "cluster":
        _cluster_scenario(Path(sys.argv[2]), sys.argv[3])
