"""Every CLI's file inputs, table-driven (issue 19): corrupt, truncated, wrong-schema and hostile
inputs each end the command with one line, `error: PATH: problem; fix`, a non-zero exit, no
traceback, and existing outputs untouched. The commands run in-process (`main(argv)`)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rbmsearch import data, evaluate, gallery, render, train, tune

FIX_WORDS = ("rebuild", "build", "train it", "choose", "pass", "give", "point", "check", "fix", "restore", "remove", "raise", "use", "must", "convert", "expected", "refused")


# ---------------------------------------------------------------------------- bad datasets


def _table_with(path, good, **meta):
    table = pq.read_table(good)
    raw = meta.pop("_raw", None)
    value = raw if raw is not None else json.dumps({**json.loads(table.schema.metadata[b"rbmsearch"]), **meta}).encode()
    pq.write_table(table.replace_schema_metadata({b"rbmsearch": value}), path)


BAD_PARQUETS = {
    "missing": lambda p, good: None,
    "empty": lambda p, good: p.write_bytes(b""),
    "truncated": lambda p, good: p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2]),
    "random bytes": lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "a directory": lambda p, good: p.mkdir(),
    "no metadata": lambda p, good: pq.write_table(pq.read_table(good).replace_schema_metadata({}), p),
    "wrong columns": lambda p, good: pq.write_table(pa.table({"x": [1, 2]}), p),
    "metadata extra key": lambda p, good: _table_with(p, good, extra=1),
    "metadata a list": lambda p, good: _table_with(p, good, _raw=b"[1, 2]"),
    "metadata not json": lambda p, good: _table_with(p, good, _raw=b"{oops"),
    "steps_per_quarter 0": lambda p, good: _table_with(p, good, steps_per_quarter=0),
    "qpm -5": lambda p, good: _table_with(p, good, qpm=-5),
    "schema version 9": lambda p, good: _table_with(p, good, schema_version=9),
    "pitch range": lambda p, good: _table_with(p, good, min_pitch=0),
}


@pytest.fixture
def bad_parquet(request, tmp_path, toy_parquet):
    path = tmp_path / "bad.parquet"
    BAD_PARQUETS[request.param](path, toy_parquet)
    return path


# ---------------------------------------------------------------------------- bad run directories


def _edit_json(name, change):
    def edit(run):
        path = run / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return edit


def _object_npz(run):
    params = dict(np.load(run / "params.npz"))
    params["W"] = np.array([object()], dtype=object)
    np.savez(run / "params.npz", **params)


BAD_RUNS = {
    "config.json missing": lambda run: (run / "config.json").unlink(),
    "config.json truncated": lambda run: (run / "config.json").write_text((run / "config.json").read_text()[:40]),
    "config.json empty": lambda run: (run / "config.json").write_text(""),
    "config.json a list": lambda run: (run / "config.json").write_text("[1]"),
    "config.json without data": _edit_json("config.json", lambda c: {k: v for k, v in c.items() if k != "data"}),
    "config.json unknown key": _edit_json("config.json", lambda c: {**c, "train": {**c["train"], "n_hiden": 3}}),
    "config.json bad value": _edit_json("config.json", lambda c: {**c, "train": {**c["train"], "cd_k": -1}}),
    "params.npz missing": lambda run: (run / "params.npz").unlink(),
    "params.npz truncated": lambda run: (run / "params.npz").write_bytes((run / "params.npz").read_bytes()[:100]),
    "params.npz random bytes": lambda run: (run / "params.npz").write_bytes(np.random.default_rng(1).bytes(2000)),
    "params.npz object array": _object_npz,
    "params.npz wrong shapes": lambda run: np.savez(run / "params.npz", **{k: v[..., :1] for k, v in np.load(run / "params.npz").items()}),
    "metrics.json truncated": lambda run: (run / "metrics.json").write_text('{"history": ['),
}


@pytest.fixture
def bad_run(request, tmp_path, tiny_run):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    BAD_RUNS[request.param](run)
    return run


def check_one_line_error(capsys, call, path, keep=None):
    """`call()` must exit with `error: ...` naming `path`, in one line; `keep` (a file) stays as it was."""
    before = keep.read_bytes() if keep is not None else None
    with pytest.raises(SystemExit) as info:
        call()
    message = str(info.value.code) if not isinstance(info.value.code, int) else capsys.readouterr().err.strip()
    assert info.value.code != 0
    assert message.startswith("error: ") and "\n" not in message.strip(), message
    assert str(path) in message, message
    assert "Traceback" not in message and any(w in message for w in FIX_WORDS), message
    if keep is not None:
        assert keep.read_bytes() == before


# ---------------------------------------------------------------------------- the table


@pytest.mark.parametrize("bad_parquet", list(BAD_PARQUETS), indirect=True)
def test_data_info(capsys, bad_parquet):
    check_one_line_error(capsys, lambda: data.main(["info", str(bad_parquet)]), bad_parquet)


@pytest.mark.parametrize("bad_parquet", list(BAD_PARQUETS), indirect=True)
def test_train_data(capsys, bad_parquet, tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("an earlier output")
    check_one_line_error(capsys, lambda: train.main(["--data", str(bad_parquet), "--out", str(tmp_path / "out"), "--epochs", "1"]), bad_parquet, keep)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad_parquet", list(BAD_PARQUETS), indirect=True)
def test_evaluate_data(capsys, bad_parquet, tiny_run):
    check_one_line_error(capsys, lambda: evaluate.main([str(tiny_run), "--data", str(bad_parquet)]), bad_parquet, tiny_run / "metrics.json")


@pytest.mark.parametrize("bad_parquet", list(BAD_PARQUETS), indirect=True)
def test_tune_data(capsys, bad_parquet, tmp_path):
    args = ["--single-trial", "--space", "smoke", "--data", str(bad_parquet), "--storage", str(tmp_path / "runs")]
    check_one_line_error(capsys, lambda: tune.main(args), bad_parquet)


@pytest.mark.parametrize("bad_run", list(BAD_RUNS), indirect=True)
def test_evaluate_run(capsys, bad_run, toy_parquet):
    path = next((bad_run / n for n in ("config.json", "params.npz", "metrics.json") if not _intact(bad_run / n)), bad_run)
    check_one_line_error(capsys, lambda: evaluate.main([str(bad_run), "--data", str(toy_parquet)]), path)


@pytest.mark.parametrize("bad_run", list(BAD_RUNS), indirect=True)
def test_render_run(capsys, bad_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sample_0.mid").write_bytes(b"an earlier sample")
    path = next((bad_run / n for n in ("config.json", "params.npz", "metrics.json") if not _intact(bad_run / n)), bad_run)
    check_one_line_error(capsys, lambda: render.main([str(bad_run), "--out", str(out)]), path, out / "sample_0.mid")


@pytest.mark.parametrize("bad_run", list(BAD_RUNS), indirect=True)
def test_gallery_run(capsys, bad_run):
    path = next((bad_run / n for n in ("config.json", "params.npz", "metrics.json") if not _intact(bad_run / n)), bad_run)
    if not path.exists():  # a directory without its config.json or params.npz is no run: the page names the directory
        path = bad_run
    check_one_line_error(capsys, lambda: gallery.main([str(bad_run), "--no-serve"]), path)


def _intact(path) -> bool:
    """Whether a run file is still the one `tiny_run` wrote (the BAD_RUNS edit broke another)."""
    if not path.is_file():
        return False
    try:
        if path.suffix == ".json":
            value = json.loads(path.read_text())
            return isinstance(value, dict) and (path.name != "config.json" or (set(value) >= {"train", "data"} and "n_hiden" not in value["train"] and value["train"].get("cd_k", 1) > 0))
        with np.load(path) as params:
            return all(params[k].dtype != object and params[k].ndim >= 1 and params[k].shape[-1] != 1 for k in params.files)
    except Exception:  # what a broken file raises when read by hand; the table tests the package's reading
        return False


BAD_SOURCES = {
    "missing folder": lambda p: p,
    "empty folder": lambda p: (p.mkdir(), p)[1],
    "only bad files": lambda p: (p.mkdir(), (p / "a.mid").write_bytes(b"MThd junk"), (p / "b.mid").write_bytes(b""), p)[3],
    "truncated pickle": lambda p: ((p.with_suffix(".pickle")).write_bytes(pickle.dumps({"train": [[(60,)]] * 50})[:30]), p.with_suffix(".pickle"))[1],
    "hostile pickle": lambda p: ((p.with_suffix(".pickle")).write_bytes(b"cos\nsystem\n(S'touch /tmp/rbmsearch-pwned'\ntR."), p.with_suffix(".pickle"))[1],
    "pickle of a list": lambda p: ((p.with_suffix(".pickle")).write_bytes(pickle.dumps([1, 2])), p.with_suffix(".pickle"))[1],
    "pickle pitch 200": lambda p: ((p.with_suffix(".pickle")).write_bytes(pickle.dumps({"train": [[(200,)]], "valid": [], "test": []})), p.with_suffix(".pickle"))[1],
    "a text file": lambda p: ((p.with_suffix(".txt")).write_text("hello"), p.with_suffix(".txt"))[1],
}


@pytest.mark.parametrize("kind", list(BAD_SOURCES))
def test_data_build_sources(capsys, kind, tmp_path, toy_parquet):
    source = BAD_SOURCES[kind](tmp_path / "src")
    out = tmp_path / "out.parquet"
    shutil.copy(toy_parquet, out)  # an existing dataset that a failed build must not replace
    check_one_line_error(capsys, lambda: data.main(["build", "--source", str(source), "--out", str(out), "--no-progress", "--workers", "1"]), source, out)


BAD_SPACES = {
    "missing": None,
    "empty": "",
    "not yaml": "search: [1,\n",
    "a list": "- 1\n- 2\n",
    "unknown key": "serch: {}\nparams: {cd_k: {type: int, low: 1, high: 3}}\n",
    "python tag": "params: !!python/object/apply:os.system ['true']\n",
    "bad range": "params: {cd_k: {type: int, low: 5, high: 3}}\n",
    "unknown field": "params: {cd_kk: {type: int, low: 1, high: 3}}\n",
    "bad fixed": "fixed: {window: -3}\nparams: {cd_k: {type: int, low: 1, high: 3}}\n",
    "duplicate key": "params: {cd_k: {type: int, low: 1, high: 3}}\nparams: {}\n",
}


@pytest.mark.parametrize("kind", list(BAD_SPACES))
def test_tune_space(capsys, kind, tmp_path, toy_parquet):
    path = tmp_path / "space.yaml"
    if BAD_SPACES[kind] is not None:
        path.write_text(BAD_SPACES[kind])
    args = ["--single-trial", "--space", str(path), "--data", str(toy_parquet), "--storage", str(tmp_path / "runs")]
    check_one_line_error(capsys, lambda: tune.main(args), path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [None, "", "{oops", "[1]", '{"space": {}}'])
def test_tune_resume_search_file(capsys, content, tmp_path):
    experiment = tmp_path / "runs" / "exp"
    experiment.mkdir(parents=True)
    if content is not None:
        (experiment / "search.json").write_text(content)
    check_one_line_error(capsys, lambda: tune.main(["--resume", "--storage", str(tmp_path / "runs"), "--name", "exp"]), experiment / "search.json")


@pytest.mark.parametrize("state", ["search_gen_state-2026-12-02_03-27-00.json", "experiment_state-2026-12-02_03-27-00.json", "tuner.pkl"])
def test_tune_resume_truncated_tune_state(capsys, state, tmp_path):
    """A state file that a killed driver left half-copied is named, not a Ray traceback."""
    experiment = tmp_path / "runs" / "exp"
    experiment.mkdir(parents=True)
    (experiment / "search.json").write_text(json.dumps({"space": {}, "space_name": "x", "data": "d.parquet"}))
    whole = json.dumps({"trials": []}).encode() if state.endswith(".json") and "experiment" in state else pickle.dumps({"counter": 2})
    (experiment / state).write_bytes(whole[: len(whole) // 2])
    (experiment / ".tuner.pkl.abc.partial").write_bytes(b"half")  # the hidden half of an atomic write goes
    checkpoint = experiment / "trial_x" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / ".params.npz.def.partial").write_bytes(b"half")  # in a trial's checkpoint too
    check_one_line_error(capsys, lambda: tune.main(["--resume", "--storage", str(tmp_path / "runs"), "--name", "exp"]), experiment / state)
    assert not (experiment / ".tuner.pkl.abc.partial").exists() and not list(checkpoint.iterdir())
    assert len((experiment / state).read_bytes()) == len(whole) // 2  # the file is left as it was


def test_the_table_has_at_least_100_cases():
    cases = 4 * len(BAD_PARQUETS) + 3 * len(BAD_RUNS) + len(BAD_SOURCES) + len(BAD_SPACES) + 5
    assert cases >= 100, cases


def test_debug_shows_the_traceback_instead_of_one_line(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "missing.parquet"
    quiet = subprocess.run([sys.executable, "-m", "rbmsearch.data", "info", str(missing)], capture_output=True, text=True, timeout=120)
    loud = subprocess.run([sys.executable, "-m", "rbmsearch.data", "info", str(missing), "--debug"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr and quiet.stderr.startswith(f"error: {missing}: no such file")
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr and "rbmsearch.errors.DatasetError" in loud.stderr
