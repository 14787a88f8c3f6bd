"""rbmsearch.scoring and the sharded `evaluate`: finished shards are stored and reused, an
interrupted evaluation resumes without recomputing them, a damaged shard is redone, the
subsample's interval covers the whole split, and Ray tasks give the in-process result.
The several-node and killed-worker cases run in a `ray.cluster_utils.Cluster` of their own,
in a subprocess (this file run as a script)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rbmsearch.evaluate import EvalSettings, evaluate, subsample
from rbmsearch.run import load_run

SETTINGS = EvalSettings(ais_runs=8, ais_betas=30, acc_samples=2, acc_gibbs_k=5, raise_runs=4)
FIGURES = ("nll", "nll_raise", "nll_ci95", "acc", "acc_frame_mean", "acc_annealed", "acc_decoded", "acc_decoded_annealed", "acc_repeat", "acc_mixing_gap")
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}


def figures(result: dict) -> dict:
    return {k: result[k] for k in FIGURES}


@pytest.fixture(scope="module")
def model_and_rolls(tiny_run, toy_dataset):
    return load_run(tiny_run).model, toy_dataset.rolls("test") + toy_dataset.rolls("valid")


def test_shards_are_stored_reused_and_a_damaged_one_is_redone(tmp_path, model_and_rolls, caplog):
    model, rolls = model_and_rolls
    first = evaluate(model, rolls, SETTINGS, store_root=tmp_path, shard_frames=40)
    shards = sorted(Path(first["store"]).glob("shard-*.npz"))
    assert first["shards"] == len(shards) >= 3 and first["shards_reused"] == 0
    # Every annealing a shard tried counts: at least one AIS and one RAISE pass at its final temperatures.
    final_ais, final_raise = min(first["betas_by_shard"])
    assert first["gibbs_sweeps_per_frame"] >= SETTINGS.ais_runs * (final_ais - 1) + SETTINGS.raise_runs * (final_raise - 1) + SETTINGS.acc_samples * SETTINGS.acc_gibbs_k
    assert json.loads((Path(first["store"]) / "plan.json").read_text())["settings"]["ais_betas"] == 30
    again = evaluate(model, rolls, SETTINGS, store_root=tmp_path, shard_frames=40)
    assert again["shards_reused"] == first["shards"] and figures(again) == figures(first)
    shards[1].write_bytes(shards[1].read_bytes()[:100])  # truncated
    shards[2].unlink()
    stamps = {p: p.stat().st_mtime_ns for p in shards if p.exists() and p not in shards[1:3]}
    redone = evaluate(model, rolls, SETTINGS, store_root=tmp_path, shard_frames=40)
    assert redone["shards_reused"] == first["shards"] - 2 and figures(redone) == figures(first)
    assert f"{shards[1]}: unreadable" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the others were not written again
    # Other settings never reuse these shards.
    other = evaluate(model, rolls, EvalSettings(**{**SETTINGS.__dict__, "seed": 1}), store_root=tmp_path, shard_frames=40)
    assert other["shards_reused"] == 0 and other["store"] != first["store"]


def test_the_best_guess_reads_the_chains_marginals_and_the_annealed_guess_aiss(tmp_path, model_and_rolls):
    """acc_decoded thresholds the marginals of the predictions' chains, acc_decoded_annealed
    those of AIS's weighted states: both as `accuracy.decoded_accuracy` gives them from the
    shards' stored arrays."""
    import numpy as np

    from rbmsearch import accuracy
    from rbmsearch.model import conditional_rbms

    model, rolls = model_and_rolls
    result = evaluate(model, rolls, SETTINGS, store_root=tmp_path, shard_frames=40)
    stored = [np.load(p) for p in sorted(Path(result["store"]).glob("shard-*.npz"))]
    chain, annealed = (np.concatenate([s[key] for s in stored]).astype(np.float64) for key in ("chain_marginals", "marginals"))
    v = conditional_rbms(model, rolls)[0]
    assert result["acc_decoded"] == accuracy.decoded_accuracy(v, chain)[0] and result["acc_decoded_annealed"] == accuracy.decoded_accuracy(v, annealed)[0]
    assert not np.allclose(chain, annealed)  # two estimates, not one stored twice


def test_an_interrupted_evaluation_resumes_without_recomputing_finished_shards(tmp_path, model_and_rolls):
    model, rolls = model_and_rolls
    whole = evaluate(model, rolls, SETTINGS, shard_frames=30)
    import rbmsearch.scoring as scoring

    real, calls = scoring.score_shard, []

    def interrupted(*args, **kwargs):  # the third shard is where the user presses Ctrl-C
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    scoring.score_shard = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            evaluate(model, rolls, SETTINGS, store_root=tmp_path, shard_frames=30)
    finally:
        scoring.score_shard = real
    stored = sorted(tmp_path.glob("*/shard-*.npz"))
    assert len(stored) == 2
    stamps = {p: p.stat().st_mtime_ns for p in stored}
    scored = []
    scoring.score_shard = lambda *a, **k: scored.append(1) or real(*a, **k)
    try:
        resumed = evaluate(model, rolls, SETTINGS, store_root=tmp_path, shard_frames=30)
    finally:
        scoring.score_shard = real
    assert resumed["shards_reused"] == 2 and len(scored) == resumed["shards"] - 2
    assert {p: p.stat().st_mtime_ns for p in stored} == stamps
    assert figures(resumed) == figures(whole)  # the same numbers as one uninterrupted run


def test_a_subsample_is_labelled_and_its_interval_covers_the_whole_split(model_and_rolls):
    model, rolls = model_and_rolls
    settings = EvalSettings(ais_runs=16, ais_betas=50, acc_samples=1, acc_gibbs_k=5, raise_runs=4)
    whole = evaluate(model, rolls, settings)
    assert whole["subsample"] is False and whole["frames"] == whole["frames_in_split"]
    assert 0 < whole["nll_ci95"] < 1
    for n in (40, 80):
        part = evaluate(model, rolls, settings, frames=n)
        assert part["subsample"] is True and part["frames"] == n and part["frames_in_split"] == whole["frames"]
        assert 0 < part["nll_ci95"] < 2
        assert abs(part["nll"] - whole["nll"]) <= part["nll_ci95"], (n, part["nll"], part["nll_ci95"], whole["nll"])
        assert abs(part["nll_raise"] - whole["nll_raise"]) <= part["nll_raise_ci95"]


def test_subsample_is_an_even_spread():
    assert list(subsample(10, None)) == list(range(10))
    assert list(subsample(10, 4)) == [0, 3, 6, 9]
    assert list(subsample(5, 50)) == list(range(5))
    with pytest.raises(ValueError, match="at least 2"):
        subsample(10, 1)


@pytest.fixture(scope="module")
def local_ray():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        from rbmsearch.workers import ray_session

        with ray_session(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False):
            yield


@pytest.mark.slow
def test_ray_tasks_give_the_in_process_result(local_ray, model_and_rolls, tmp_path):
    from rbmsearch.workers import Resources

    model, rolls = model_and_rolls
    alone = evaluate(model, rolls, SETTINGS, use_ray=False, shard_frames=40)
    tasks = evaluate(model, rolls, SETTINGS, use_ray=True, resources=Resources(cpus=1), shard_frames=40, store_root=tmp_path)
    assert tasks["workers"] == "ray" and alone["workers"] == "in-process"
    assert sum(tasks["shards_by_node"].values()) == tasks["shards"]
    for key in FIGURES:
        assert tasks[key] == pytest.approx(alone[key], abs=1e-4), key
    # A subsample's control of every frame runs as a Ray task too, with the same figures.
    alone = evaluate(model, rolls, SETTINGS, use_ray=False, shard_frames=40, frames=30, control_betas=20)
    tasks = evaluate(model, rolls, SETTINGS, use_ray=True, resources=Resources(cpus=1), shard_frames=40, frames=30, control_betas=20, store_root=tmp_path)
    assert tasks["control"]["frames"] == alone["control"]["frames"] > 30
    assert sorted(tmp_path.glob("test-control-*/shard-*.npz"))  # stored as the Ray task finished
    for key in ("nll_whole_split", "nll_whole_split_ci95", "nll_raise_whole_split"):
        assert tasks[key] == pytest.approx(alone[key], abs=1e-4), key


# ---------------------------------------------------------------------------- several nodes


@pytest.mark.slow
def test_shards_run_on_two_worker_nodes_and_a_killed_worker_redoes_only_its_shard(tmp_path, tiny_run, toy_parquet):
    out = subprocess.run([sys.executable, __file__, str(tiny_run), str(toy_parquet)], capture_output=True, text=True, timeout=400,
                         env={**os.environ, **RAY_ENV})  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    found = json.loads(out.stdout.splitlines()[-1])
    both, killed, alone = found["both"], found["killed"], found["alone"]
    assert len(both["shards_by_node"]) == 2 and set(both["shards_by_node"]) <= set(found["workers"]), found  # both worker nodes scored
    assert both["shards_resent"] == []
    assert found["killed_pid"] and len(killed["shards_resent"]) == 1, found  # one lost shard, sent again
    for result in (both, killed):
        for key in FIGURES:
            assert result[key] == pytest.approx(alone[key], abs=1e-4), key


def _cluster_scenario(run_dir: str, data: str) -> None:
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    from rbmsearch.data import read_dataset
    from rbmsearch.workers import Resources

    model = load_run(run_dir).model
    rolls = read_dataset(data).rolls("test") + read_dataset(data).rolls("valid")
    slow = EvalSettings(ais_runs=8, ais_betas=30, acc_samples=2, acc_gibbs_k=3000, raise_runs=4)  # about a second a shard
    alone = evaluate(model, rolls, slow, use_ray=False, shard_frames=20)
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20, "include_dashboard": False})  # fmt: skip
    workers = [cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2)]
    cluster.wait_for_nodes()
    ids = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    both = evaluate(model, rolls, slow, use_ray=True, resources=Resources(cpus=1), shard_frames=20)
    outcome, killed_pid = {}, None
    thread = threading.Thread(target=lambda: outcome.update(evaluate(model, rolls, slow, use_ray=True, resources=Resources(cpus=1), shard_frames=20)))
    thread.start()
    deadline = time.monotonic() + 120
    while killed_pid is None and thread.is_alive() and time.monotonic() < deadline:
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            if "_shard_task" in " ".join(proc.info["cmdline"] or []) or "_shard_task" in (proc.info["name"] or ""):
                time.sleep(0.3)  # well into its shard
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed_pid = proc.info["pid"]
                break
        time.sleep(0.02)
    thread.join()
    del workers
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"alone": alone, "both": both, "killed": outcome, "killed_pid": killed_pid, "workers": ids}))



def _sharp_rbms(frames: int = 120):
    """A small RBM with strong weights, whose AIS and RAISE need many temperatures to agree."""
    import numpy as np

    rng = np.random.default_rng(0)
    W = rng.normal(0, 1.5, (20, 12)).astype(np.float32)
    bv = np.tile(rng.normal(-2, 1, 20), (frames, 1)).astype(np.float32)
    bh = np.tile(rng.normal(-1, 1, 12), (frames, 1)).astype(np.float32)
    return W, rng.random((frames, 20)) < 0.2, bv, bh


def test_past_ais_betas_a_shard_doubles_on_with_fewer_ais_runs_until_ais_and_raise_agree():
    import numpy as np

    from rbmsearch.scoring import annealing_runs, score_shard

    W, v, bv, bh = _sharp_rbms()
    capped = EvalSettings(ais_runs=20, ais_betas=20, start_betas=5, acc_samples=2, acc_gibbs_k=20, raise_runs=4)
    short = score_shard(W, v, bv, bh, capped, seed=0)
    assert list(short["betas"]) == [20, 20] and abs(np.mean(short["ll_ais"] - short["ll_raise"])) > 0.2  # the cap stops it unpinned
    long = EvalSettings(**{**capped.__dict__, "max_betas": 640})
    result = score_shard(W, v, bv, bh, long, seed=0)
    betas_ais, betas_raise = result["betas"]
    assert betas_ais > 20 and betas_raise > 20 and max(betas_ais, betas_raise) <= 640
    assert abs(np.mean(result["ll_ais"] - result["ll_raise"])) <= 0.05
    # Each longer AIS pass costs about what one at ais_betas does, RAISE keeps its runs, and every pass is counted.
    assert annealing_runs(long, 20) == 20 and annealing_runs(long, 80) == 10 and annealing_runs(long, 640) == 10
    assert annealing_runs(long, 160, reverse=True) == 4
    final = annealing_runs(long, betas_ais) * (betas_ais - 1) + annealing_runs(long, betas_raise, reverse=True) * (betas_raise - 1)
    assert result["sweeps"] > final + long.acc_samples * long.acc_gibbs_k


# With a pilot, which puts the shard at the cap at once; without one, whose RAISE doubles to the cap.
@pytest.mark.parametrize(("frames", "cap", "tolerance"), [(100, 640, 0.05), (99, 320, 0.035)])
def test_past_the_cap_raise_goes_on_for_the_frames_that_disagree_most_until_the_shard_agrees(frames, cap, tolerance):
    """A sharp RBM's own samples, every 20th with three notes flipped: at the cap the shard is
    further apart than the tolerance. The tail anneals RAISE afresh on the 5% of the frames that an earlier
    RAISE pass put furthest above AIS, and the shard agrees; AIS and every other frame keep their figures."""
    import numpy as np

    from rbmsearch import scoring
    from test_ais import random_rbm

    W, bv, bh = random_rbm(3, 30, 12, 100, 3.0)
    W, bv, bh = W.astype(np.float32), bv[:frames].astype(np.float32), bh[:frames].astype(np.float32)
    v = scoring.sample_predictions(W, bv, bh, 1, 2000, seed=9)[0]
    rng = np.random.default_rng(1)
    for t in range(0, frames, 20):
        v[t, rng.choice(30, 3, replace=False)] ^= True
    capped = EvalSettings(ais_runs=20, ais_betas=20, start_betas=5, acc_samples=4, acc_gibbs_k=50, raise_runs=4, max_betas=cap, gap_tolerance=tolerance)
    before = scoring.score_shard(W, v, bv, bh, capped, seed=0)
    assert np.mean(before["ll_ais"] - before["ll_raise"]) > tolerance and list(before["tail"]) == [0, 0]

    tailed = EvalSettings(**{**capped.__dict__, "tail_betas": cap * 64})
    seen, calls, real = {}, [], scoring._anneal_the_tail

    def spy(backward, ll_ais, ll_raise, earlier, betas, settings):
        def recorded(betas, rows, draw=0):
            calls.append((betas, rows, draw, backward(betas, rows, draw)))
            return calls[-1][-1]

        seen.update(earlier=earlier, betas=betas)
        return real(recorded, ll_ais, ll_raise, earlier, betas, settings)

    scoring._anneal_the_tail = spy
    try:
        after = scoring.score_shard(W, v, bv, bh, tailed, seed=0)
    finally:
        scoring._anneal_the_tail = real
    tail_betas, tail_frames = after["tail"]
    assert seen["betas"] == cap and tail_frames == round(scoring.TAIL_SHARE * len(v)) and cap < tail_betas <= cap * 64
    assert np.mean(after["ll_ais"] - after["ll_raise"]) <= tolerance  # agreed
    np.testing.assert_array_equal(after["ll_ais"], before["ll_ais"])
    changed = np.flatnonzero(after["ll_raise"] != before["ll_raise"])
    assert len(changed) == tail_frames and np.mean(after["ll_raise"][changed]) > np.mean(before["ll_raise"][changed])
    # Chosen by an earlier pass, not by the figures reported at the cap: RAISE's pass before its
    # last, or, where the pilot put the shard at the cap at once, a choosing pass of the tail's own
    # at a quarter of the cap.
    if frames == 100:
        assert seen["earlier"] is None and (calls[0][0], calls[0][2], len(calls[0][1])) == (cap // 4, 1, len(v))
        earlier, tail_calls = calls[0][3], calls[1:]
    else:
        assert seen["earlier"] is not None
        earlier, tail_calls = seen["earlier"], calls
    apart = before["ll_ais"] - earlier
    assert set(changed) == set(np.argsort(-apart)[:tail_frames]) and np.all(apart[changed] > 0)
    assert [b for b, *_ in tail_calls] == [cap * 4, cap * 16, cap * 64][: len(tail_calls)] and all(list(r) == list(changed) for _, r, _, _ in tail_calls)
    # Every pass is counted: the choosing pass over the shard, the tail's on its frames.
    extra = sum(scoring.annealing_runs(tailed, b, reverse=True) * (b - 1) * len(r) / len(v) for b, r, _, _ in calls)
    assert after["sweeps"] == pytest.approx(before["sweeps"] + extra)
    with pytest.raises(ValueError, match="tail_betas to be 0 or above the cap"):
        EvalSettings(ais_betas=100, max_betas=400, tail_betas=400)
    with pytest.raises(ValueError, match="tail_betas 0 with gap_tolerance 0"):
        EvalSettings(gap_tolerance=0, tail_betas=10**6)


def test_a_pilot_starts_a_large_shard_near_the_temperatures_it_needs():
    from rbmsearch import scoring

    W, v, bv, bh = _sharp_rbms(200)
    settings = EvalSettings(ais_runs=20, ais_betas=20, start_betas=5, acc_samples=2, acc_gibbs_k=20, raise_runs=4, max_betas=640)
    calls = []
    real = scoring._anneal_until_agreed

    def spy(forward, backward, rows, start, s):
        out = real(forward, backward, rows, start, s)
        calls.append((len(rows), start, out[0]))
        return out

    scoring._anneal_until_agreed = spy
    try:
        scoring.score_shard(W, v, bv, bh, settings, seed=0)
    finally:
        scoring._anneal_until_agreed = real
    (pilot_rows, pilot_start, pilot_end), (rows, start, _) = calls
    assert (pilot_rows, rows) == (scoring.PILOT_FRAMES, 200)
    assert pilot_start == (5, 5) and start == pilot_end and start[0] > 5  # the whole shard starts where the pilot agreed


def test_max_betas_below_ais_betas_is_refused():
    from rbmsearch.config import ConfigError, TrainConfig

    with pytest.raises(ValueError, match="max_betas to be 0 or at least ais_betas"):
        EvalSettings(ais_betas=100, max_betas=50)
    with pytest.raises(ConfigError, match="eval_max_betas"):
        TrainConfig(eval_ais_betas=100, eval_max_betas=50)
    with pytest.raises(ConfigError, match="eval_tail_betas"):
        TrainConfig(eval_ais_betas=100, eval_max_betas=400, eval_tail_betas=400)
    assert TrainConfig(eval_ais_betas=100, eval_max_betas=400, eval_tail_betas=401).eval_tail_betas == 401


if __name__ == "__main__":
    _cluster_scenario(sys.argv[1], sys.argv[2])


def test_the_predictions_chains_start_at_the_previous_frame_or_at_silence():
    """acc_start: with "previous" the chains begin at the frame given as previous, with
    "silence" (or no previous frames) at zeros. Chains of 0 steps predict their start: the
    truth itself when it is given as the previous frame, silence otherwise."""
    import dataclasses

    import numpy as np

    from rbmsearch import accuracy
    from rbmsearch.scoring import score_shard

    W, v, bv, bh = _sharp_rbms(60)
    settings = EvalSettings(ais_runs=4, ais_betas=20, start_betas=5, acc_samples=2, acc_gibbs_k=0, raise_runs=2)
    silence = dataclasses.replace(settings, acc_start="silence")
    at_truth = score_shard(W, v, bv, bh, settings, seed=0, previous=v)
    from_silence = score_shard(W, v, bv, bh, silence, seed=0, previous=v)
    assert accuracy.sampled_accuracy(at_truth["acc_counts"]) == 1.0 and accuracy.sampled_accuracy(from_silence["acc_counts"]) == 0.0
    np.testing.assert_array_equal(score_shard(W, v, bv, bh, settings, seed=0)["acc_counts"], from_silence["acc_counts"])  # no previous frames: silence
    with pytest.raises(ValueError, match="acc_start"):
        EvalSettings(acc_start="truth")


def test_evaluate_starts_each_frames_chains_at_the_frame_before_it(model_and_rolls):
    """The previous frames reach the shards: a piece's first frame starts from silence, every
    other from its predecessor. Chains of 0 Gibbs steps predict their start, so `acc` is then
    the repeat floor itself."""
    model, rolls = model_and_rolls
    zero_steps = EvalSettings(ais_runs=4, ais_betas=10, start_betas=5, acc_samples=1, acc_gibbs_k=0, raise_runs=2)
    result = evaluate(model, rolls, zero_steps, shard_frames=40)
    assert result["acc_start"] == "previous"
    assert result["acc"] == pytest.approx(result["acc_repeat"], abs=1e-9)
