"""rbmsearch.space: the search-space file format. The shipped spaces load (by name too), every bad
file names the file and the key, a good space gives its center, and a missing file or an unknown
name says what to pass. YAML only: no Ray, no Optuna, no TensorFlow."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from rbmsearch.space import SearchSpaceError, load_space, shipped_spaces, space_path

SPACES_DIR = shipped_spaces()["default"].parent
SMOKE = SPACES_DIR / "smoke.yaml"


def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_spaces_load_and_say_how_to_run_them():
    for name in ("default", "paper", "smoke"):
        path = SPACES_DIR / f"{name}.yaml"
        assert path.read_text().startswith("# python -m rbmsearch.tune"), f"{path} must start with its command"
        space = load_space(path)
        assert space.name == name and space.params
        sized = space.for_data(13_807)  # JSB's training frames: `auto` settings become numbers
        config = sized.train_config(sized.center())  # a valid TrainConfig
        assert config.epochs == sized.settings.max_epochs and isinstance(config.epochs, int)
    smoke = load_space(SMOKE)
    lr = next(p for p in smoke.params if p.name == "learning_rate")
    assert (lr.low, lr.high, lr.log) == (1e-3, 1e-1, True)  # `1e-3` is a float, not YAML 1.1's string
    paper = load_space(SPACES_DIR / "paper.yaml").center()
    assert (paper["n_hidden"], paper["n_recurrent"], paper["cd_k"], paper["learning_rate"]) == (150, 100, 15, 1e-3)


GOOD = """
search: {num_samples: 2, max_epochs: 3, grace_period: 1}
fixed: {pretrain_epochs: 1}
params:
  n_hidden: {type: int, low: 8, high: 16}
  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  optimizer: {type: categorical, choices: [adam, sgd]}
"""

BAD_SPACES = [
    ("serach: {}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "serach", "unknown top-level key"),
    ("search: {num_sample: 3}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.num_sample", "unknown search setting"),
    ("search: {num_samples: ten}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.num_samples", "a positive int must be specified, but got 'ten' (str)"),
    ("search: {max_epochs: 2.5}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.max_epochs", "a positive int"),
    ("search: {max_epochs: 2, grace_period: 3}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.grace_period", "at most max_epochs (2)"),
    ("search: {mode: max}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.mode", "mode must be 'min'"),
    ("search: {resources: {CPU: 1}}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.resources", "use cpus_per_trial"),
    ("params: {cd_k: {type: int, low: 5, high: 5}}", "params.cd_k.low", "a value below high (5) must be specified, but got 5"),
    ("params: {learning_rate: {type: float, low: 0, high: 0.1, log: true}}", "params.learning_rate.low", "a positive value must be specified for a log-scaled parameter"),
    ("params: {n_hiden: {type: int, low: 8, high: 16}}", "params.n_hiden", "not a TrainConfig field"),
    ("params: {n_hidden: {type: float, low: 8, high: 16}}", "params.n_hidden.type", "so type must be 'int'"),
    ("params: {n_hidden: {type: int, low: 8.5, high: 16}}", "params.n_hidden.low", "an int must be specified, but got 8.5"),
    ("params: {n_hidden: {type: int, low: 8, hgh: 16}}", "params.n_hidden.hgh", "unknown key for an int parameter"),
    ("params: {n_hidden: {type: int, low: 8}}", "params.n_hidden.high", "missing"),
    ("params: {n_hidden: {type: range, low: 8, high: 9}}", "params.n_hidden.type", "one of 'int', 'float', 'categorical'"),
    ("params: {cd_k: {type: int, low: 0, high: 3}}", "params.cd_k", "A positive int must be specified for cd_k, but got 0"),
    ("params: {optimizer: {type: categorical, choices: [adam, adagrad]}}", "params.optimizer", "'adagrad' is refused by TrainConfig"),
    ("params: {optimizer: {type: categorical, choices: []}}", "params.optimizer.choices", "a non-empty list"),
    ("params: {optimizer: {type: categorical, choices: [adam, adam]}}", "params.optimizer.choices", "each choice must appear once"),
    ("params: {optimizer: {type: int, low: 1, high: 2}}", "params.optimizer.type", "use type: categorical"),
    ("params: {learning_rate: {type: float, low: 0.1, high: 0.5, log: true, step: 0.1}}", "params.learning_rate.step", "step and log cannot be combined"),
    ("params: {learning_rate: {type: float, low: 0.1, high: 0.5, default: 0.7}}", "params.learning_rate.default", "a value in [0.1, 0.5]"),
    ("params: {epochs: {type: int, low: 1, high: 5}}", "params.epochs", "set that instead"),
    ("params: {monitor_ais_betas: {type: int, low: 10, high: 500}}", "params.monitor_ais_betas", "set it in `fixed`"),
    ("fixed: {cd_k: 3}\nparams: {cd_k: {type: int, low: 1, high: 5}}", "params.cd_k", "also given in `fixed`"),
    ("fixed: {n_hidden: big}\nparams: {cd_k: {type: int, low: 1, high: 5}}", "fixed.n_hidden", "an int must be specified, but got 'big' (str)"),
    ("fixed: {cd_kk: 3}\nparams: {cd_k: {type: int, low: 1, high: 5}}", "fixed.cd_kk", "not a TrainConfig field"),
    ("params: {}", "params", "a non-empty mapping"),
    ("params: {cd_k: {type: int, low: 1, high: 2}}\nparams: {cd_k: {type: int, low: 1, high: 3}}", "(file)", "duplicate key 'params'"),
    ("params: {cd_k: {type: int, low: 1, high: 2}", "(file)", "is not valid YAML"),
    ("- just\n- a list", "(top level)", "a mapping with keys"),
    ("search: {max_epochs: some}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.max_epochs", "a positive int or 'auto'"),
    ("params: {cd_k: {type: int, low: 1, high: 5}}\nenqueue: {cd_k: 2}", "enqueue", "a list of {param: value} mappings"),
    ("params: {cd_k: {type: int, low: 1, high: 5}}\nenqueue: [3]", "enqueue[0]", "a mapping of searched params"),
    ("params: {cd_k: {type: int, low: 1, high: 5}}\nenqueue: [{cd_k: 2}, {n_hidden: 20}]", "enqueue[1].n_hidden", "not a searched param"),
    ("params: {cd_k: {type: int, low: 1, high: 5}}\nenqueue: [{cd_k: 9}]", "enqueue[0].cd_k", "a value in [1, 5]"),
    ("params: {cd_k: {type: int, low: 1, high: 5}}\nenqueue: [{cd_k: 2.5}]", "enqueue[0].cd_k", "an int must be specified"),
    ("params: {optimizer: {type: categorical, choices: [adam, sgd]}}\nenqueue: [{optimizer: nadam}]", "enqueue[0].optimizer", "one of the choices ['adam', 'sgd']"),
    ("search: {program: 128}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.program", "a General MIDI program in 0..127, or null"),
    ("search: {soundfont: 3}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.soundfont", "the path of a .sf2 file, or null"),
    ("search: {continuations: -1}\nparams: {cd_k: {type: int, low: 1, high: 2}}", "search.continuations", "a non-negative int"),
]


@pytest.mark.parametrize("text, key, message", BAD_SPACES, ids=[key for _, key, _ in BAD_SPACES])
def test_bad_space_files_name_the_file_and_the_key(tmp_path, text, key, message):
    path = write_space(tmp_path / "bad.yaml", text)
    with pytest.raises(SearchSpaceError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}: {key}: "), str(info.value)
    assert message in str(info.value)
    assert info.value.path == str(path) and info.value.key == key


def test_a_good_space_and_its_center(tmp_path):
    space = load_space(write_space(tmp_path / "good.yaml", GOOD))
    assert space.center() == {"n_hidden": 12, "learning_rate": pytest.approx(1e-2), "optimizer": "adam"}
    assert space.settings.num_samples == 2 and space.fixed == {"pretrain_epochs": 1}
    shorter = space.with_settings(max_epochs=1)  # the CLI's --max-epochs keeps ASHA valid
    assert (shorter.settings.max_epochs, shorter.settings.grace_period) == (1, 1)
    with pytest.raises(SearchSpaceError, match="search.num_samples"):
        space.with_settings(num_samples=0)


def test_missing_space_file(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"nope.yaml: \(file\): cannot be read") as info:
        load_space(tmp_path / "nope.yaml")
    assert info.value.path == str(tmp_path / "nope.yaml") and info.value.key == "(file)"
    assert "or one of the shipped spaces ['default', 'paper', 'smoke']" in str(info.value)


def test_shipped_spaces_by_name_and_an_unknown_name():
    assert {"default", "paper", "smoke"} <= set(shipped_spaces())
    assert all(path.is_file() and path.suffix == ".yaml" for path in shipped_spaces().values())
    assert space_path("smoke") == SMOKE and load_space("smoke") == load_space(SMOKE)
    with pytest.raises(SearchSpaceError, match=r"nosuch: \(file\): neither a file nor a shipped space; the shipped spaces are \[.*'smoke'\]"):
        load_space("nosuch")


def test_importing_space_loads_no_ray_optuna_or_tensorflow():
    code = "import sys, rbmsearch.space; print(sorted(m for m in ('tensorflow', 'ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_auto_epochs_follow_the_training_frames_and_keep_three_rungs(tmp_path):
    """`max_epochs: auto` falls with the square root of the training frames from AUTO_REFERENCE:
    200 epochs of JSB, 56 of Nottingham, within AUTO_EPOCHS; `grace_period: auto` puts 3 ASHA
    rungs below it."""
    from rbmsearch.space import AUTO_EPOCHS, AUTO_REFERENCE

    space = load_space(write_space(tmp_path / "auto.yaml", "search: {max_epochs: auto, grace_period: auto}\nparams: {cd_k: {type: int, low: 1, high: 5}}"))
    assert space.settings.max_epochs == "auto" and space.train_config({"cd_k": 2}).epochs == 1
    for frames, epochs, grace in ((13_807, 200, 7), (176_561, 56, 2), (4 * 13_807, 100, 4), (10, AUTO_EPOCHS[1], 15), (10**9, AUTO_EPOCHS[0], 1)):
        sized = space.for_data(frames)
        assert (sized.settings.max_epochs, sized.settings.grace_period) == (epochs, grace), frames
        assert sized.train_config({"cd_k": 2}).epochs == epochs
    assert AUTO_REFERENCE == (13_807, 200)
    fixed = space.with_settings(max_epochs=30)  # --max-epochs: the grace follows it
    assert fixed.for_data(13_807).settings.grace_period == 1
    assert space.for_data(500).to_dict()["search"]["max_epochs"] == 400  # what search.json keeps


def test_the_rungs_are_the_epochs_where_rays_asha_judges_trials():
    """SearchSettings.rungs (where trials read the monitor besides monitor_every) against the
    milestones of Ray's own ASHAScheduler: JSB's and Nottingham's auto sizes, an exact power."""
    from ray.tune.schedulers import ASHAScheduler

    from rbmsearch.space import SearchSettings

    for max_epochs, grace, factor in ((200, 7, 3), (56, 2, 3), (54, 2, 3), (27, 1, 3), (10, 3, 2), (5, 5, 3), (100, 4, 2.5)):
        asha = ASHAScheduler(time_attr="epoch", metric="m", mode="min", max_t=max_epochs, grace_period=grace, reduction_factor=factor)
        milestones = sorted(math.ceil(m) for m, _ in asha._brackets[0]._rungs)
        ours = SearchSettings(max_epochs=max_epochs, grace_period=grace, reduction_factor=factor).rungs()
        assert list(ours) == milestones, (max_epochs, grace, factor)
    assert SearchSettings(max_epochs=200, grace_period=7).rungs() == (7, 21, 63, 189)
    assert SearchSettings(max_epochs="auto", grace_period="auto").rungs() == ()


def test_enqueued_trials_run_first_after_the_center_without_repeats(tmp_path):
    text = GOOD + "enqueue:\n  - {}\n  - {optimizer: sgd}\n  - {n_hidden: 16, learning_rate: 0.05}\n"
    space = load_space(write_space(tmp_path / "enqueue.yaml", text))
    center = space.center()
    assert space.first_trials() == [center, {**center, "optimizer": "sgd"}, {**center, "n_hidden": 16, "learning_rate": 0.05}]
    with_center = space.with_settings(first_trial_at_defaults=True)
    assert with_center.first_trials() == space.first_trials()  # {} is the center: not run twice
    assert load_space(write_space(tmp_path / "good.yaml", GOOD)).first_trials() == []
    again = type(space).from_dict(space.to_dict(), "search.json")  # survives search.json (--resume)
    assert again.enqueue == space.enqueue
