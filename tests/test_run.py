"""rbmsearch.run: the run directory. load_run names what is missing or broken (RunError, never a
raw numpy/JSON/zip error), object arrays are refused unread, write_run refuses another
configuration, runs saved before a field existed still load, and files are written 0644."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import asdict

import numpy as np
import pytest

from rbmsearch.config import TrainConfig
from rbmsearch.errors import ConfigError, RunError
from rbmsearch.run import load_run, read_config, read_metrics, write_metrics, write_params, write_run

DATA = {"path": "toy.parquet", "source": "toy", "steps_per_quarter": 4, "qpm": 100.0}


@pytest.fixture
def saved_run(tmp_path, tiny_config):
    """A run directory written through run.py's writers alone (an untrained model): config.json + params.npz."""
    from rbmsearch.model import ModelConfig, RnnRbm

    config = TrainConfig(**tiny_config)
    run_dir = tmp_path / "run"
    write_run(run_dir, config, DATA)
    write_params(run_dir, RnnRbm(ModelConfig.of(config), seed=config.seed).to_params())
    return run_dir


def test_load_run_names_what_is_missing(tmp_path, saved_run):
    with pytest.raises(RunError, match="config.json: missing.*python -m rbmsearch.train") as info:
        load_run(tmp_path)
    assert info.value.path == str(tmp_path / "config.json")
    (saved_run / "params.npz").unlink()
    with pytest.raises(RunError, match=r"params.npz: missing, so .* is not a finished run directory") as info:
        load_run(saved_run)
    assert info.value.path == str(saved_run / "params.npz")


def test_a_saved_run_loads_back_with_its_parameters(saved_run, tiny_config):
    from rbmsearch.model import ModelConfig, RnnRbm

    run = load_run(saved_run)
    assert run.config == TrainConfig(**tiny_config) and run.data == DATA and run.metrics == {} and run.path == saved_run
    expected = RnnRbm(ModelConfig.of(run.config), seed=run.config.seed).to_params()
    loaded = run.model.to_params()
    assert set(loaded) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(loaded[name], expected[name], err_msg=name)


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["half", "empty"])
def test_a_truncated_params_npz_is_a_run_error_naming_the_file(saved_run, keep):
    path = saved_run / "params.npz"
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(RunError, match=r"params.npz: is not a readable .npz file .*perhaps truncated; train it again") as info:
        load_run(saved_run)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"train": {"n_hidden": 12', r"is not valid JSON \(.* at line 1, column \d+\), perhaps truncated"),
        ("", r"is not valid JSON .*perhaps truncated"),
        ("[1, 2]", "must hold a JSON object with 'train' and 'data' objects"),
        ('{"train": {}}', "must hold a JSON object with 'train' and 'data' objects"),
        ('{"train": {"n_hiden": 3}, "data": {}}', r"holds an invalid configuration \(Unknown key\(s\) \['n_hiden'\]"),
        ('{"train": {"cd_k": 0}, "data": {}}', r"holds an invalid configuration \(.*cd_k"),
    ],
    ids=["truncated", "empty", "a-list", "no-data", "unknown-key", "bad-value"],
)
def test_a_truncated_or_invalid_config_json_is_a_run_error_naming_the_file(saved_run, text, message):
    path = saved_run / "config.json"
    path.write_text(text)
    for read in (load_run, read_config):
        with pytest.raises(RunError, match=message) as info:
            read(saved_run)
        assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
        assert "python -m rbmsearch.train" in str(info.value)  # and how to make a good one


class _Hostile:
    """Unpickling this would create a directory: proof that the file's pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_an_npz_holding_an_object_array_is_refused_unread(saved_run, tmp_path):
    marker = tmp_path / "unpickled"
    params = dict(np.load(saved_run / "params.npz"))
    params["W"] = np.array([_Hostile(marker)], dtype=object)
    np.savez(saved_run / "params.npz", **params)  # numpy pickles object arrays when saving
    with pytest.raises(RunError, match="params.npz: holds object arrays, which only a pickle can load, so it is refused") as info:
        load_run(saved_run)
    assert type(info.value) is RunError and info.value.path == str(saved_run / "params.npz")
    assert "allow_pickle=True" not in str(info.value)  # no advice to unpickle an untrusted file
    assert not marker.exists()  # nothing was unpickled


def test_params_of_the_wrong_shape_are_a_run_error(saved_run):
    params = dict(np.load(saved_run / "params.npz"))
    params["W"] = params["W"][:, :3]
    np.savez(saved_run / "params.npz", **params)
    with pytest.raises(RunError, match="params.npz: does not fit the model of config.json"):
        load_run(saved_run)


def test_write_run_refuses_a_different_configuration(saved_run, tiny_config):
    before = (saved_run / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"holds a run of another configuration \(differs in \['cd_k', 'learning_rate'\]") as info:
        write_run(saved_run, TrainConfig(**{**tiny_config, "cd_k": 5, "learning_rate": 0.5}), DATA)
    assert str(saved_run / "config.json") in str(info.value) and "choose a new --out" in str(info.value)
    assert (saved_run / "config.json").read_text() == before  # left as it was
    # The same configuration, or one that only trains for longer, is accepted.
    write_run(saved_run, TrainConfig(**tiny_config), DATA)
    write_run(saved_run, TrainConfig(**{**tiny_config, "epochs": 9}), DATA)
    assert read_config(saved_run)[0].epochs == 9


def test_a_run_saved_before_a_field_existed_takes_its_default(saved_run, tiny_config):
    saved = json.loads((saved_run / "config.json").read_text())
    del saved["train"]["eval_raise_runs"], saved["train"]["dropout"]
    (saved_run / "config.json").write_text(json.dumps(saved))
    config, data = read_config(saved_run)
    assert config == TrainConfig(**tiny_config) and data == DATA
    assert config.eval_raise_runs == TrainConfig().eval_raise_runs and config.dropout == 0.0
    assert load_run(saved_run).config == config


def test_metrics_round_trip_and_a_corrupt_metrics_json(saved_run):
    assert read_metrics(saved_run) == {}  # no epoch finished yet
    write_metrics(saved_run, {"best_epoch": 1, "history": [{"epoch": 1, "valid_monitor": 3.5}]})
    assert read_metrics(saved_run) == {"best_epoch": 1, "history": [{"epoch": 1, "valid_monitor": 3.5}]}
    (saved_run / "metrics.json").write_text('{"best_epoch": 1, "hist')
    with pytest.raises(RunError, match="metrics.json: is not valid JSON"):
        load_run(saved_run)
    (saved_run / "metrics.json").write_text("[]")
    with pytest.raises(RunError, match="metrics.json: must hold a JSON object"):
        read_metrics(saved_run)


def test_a_trained_run_writes_its_files_with_mode_0644(tiny_run, tmp_path):
    """0644, not mkstemp's 0600: the gallery's server and other users can read a run."""
    for name in ("config.json", "metrics.json", "params.npz"):
        path = tiny_run / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, f"{name}: {oct(stat.S_IMODE(os.stat(path).st_mode))}"
    assert not list(tiny_run.glob(".*.tmp*")), "a temporary file was left behind"
    # Under a strict umask too: the mode is set, not inherited.
    old = os.umask(0o077)
    try:
        run_dir = shutil.copytree(tiny_run, tmp_path / "copy")
        saved = load_run(run_dir)
        write_run(run_dir / "again", saved.config, saved.data)
        write_params(run_dir / "again", saved.model.to_params())
        write_metrics(run_dir / "again", saved.metrics)
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.json", "params.npz"):
        assert stat.S_IMODE(os.stat(run_dir / "again" / name).st_mode) == 0o644, name
    assert asdict(load_run(run_dir / "again").config) == asdict(saved.config)
