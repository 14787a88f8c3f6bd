"""rbmsearch.report, without Ray: the final table of hand-built TrialSummary rows, trials.json's
rows, the Optuna study (finished trials COMPLETE, errored ones FAIL, rebuilt on every call), its
plots, and the samples of the best trials (render_trials, the search's renderer)."""

from __future__ import annotations

import json
import logging

import pytest

from rbmsearch.report import TrialSummary, format_table, render_trials, save_plots, write_optuna_study
from rbmsearch.space import SearchSettings, SearchSpace

SPACE = {
    "search": {"num_samples": 4, "max_epochs": 3, "grace_period": 1},
    "params": {
        "n_hidden": {"type": "int", "low": 8, "high": 16},
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    },
}
PARAMS = ["n_hidden", "learning_rate"]


class Checkpoint:
    """What report needs of a Ray checkpoint: `.path`."""

    def __init__(self, path: str):
        self.path = path


def summaries() -> list[TrialSummary]:
    """Ranked best first: two finished trials, one that errored after 2 epochs, one that diverged at once."""
    return [
        TrialSummary("a1", "TERMINATED", {"n_hidden": 12, "learning_rate": 0.0123456}, 3, {"epoch": 3, "valid_monitor": 3.14159, "valid_acc": 0.5}, {1: 4.0, 2: 3.5, 3: 3.14159}, checkpoint=Checkpoint("/x/a1/checkpoint_2")),  # fmt: skip
        TrialSummary("d4", "ERROR", {"n_hidden": 9, "learning_rate": 0.002}, 2, {"epoch": 2, "valid_monitor": 3.9, "valid_acc": 0.3}, {1: 4.2, 2: 3.9}, error="node lost"),  # fmt: skip
        TrialSummary("b2", "TERMINATED", {"n_hidden": 8, "learning_rate": 0.1}, 1, {"epoch": 1, "valid_monitor": 4.0, "valid_acc": 0.25}, {1: 4.0}),  # fmt: skip
        TrialSummary("c3", "ERROR", {"n_hidden": 16, "learning_rate": 0.05}, 0, {}, {}, error="training diverged at epoch 1"),
    ]


def test_format_table_ranks_finished_trials_then_lists_the_errored(tmp_path):
    lines = format_table(summaries(), SearchSettings(), PARAMS).splitlines()
    table, notes = lines[:5], lines[5:]
    assert len({len(line) for line in table}) == 1  # right-aligned columns
    assert [line.split() for line in table] == [
        ["rank", "trial", "status", "epochs", "valid_monitor", "valid_acc", "n_hidden", "learning_rate"],
        ["1", "a1", "TERMINATED", "3", "3.142", "0.5", "12", "0.01235"],
        ["2", "d4", "ERROR", "2", "3.9", "0.3", "9", "0.002"],  # errored after reporting: it still ranks
        ["3", "b2", "TERMINATED", "1", "4", "0.25", "8", "0.1"],
        ["-", "c3", "ERROR", "0", "-", "-", "16", "0.05"],
    ]
    assert notes == ["trial d4 failed: node lost", "trial c3 failed: training diverged at epoch 1"]
    # `top` limits the ranked rows, never the errors.
    short = format_table(summaries(), SearchSettings(top=1), PARAMS).splitlines()
    assert [line.split()[1] for line in short[1:3]] == ["a1", "c3"] and short[3:] == notes
    # Another metric comes first, valid_acc is not repeated.
    header = format_table(summaries(), SearchSettings(metric="valid_acc", mode="max"), PARAMS).splitlines()[0].split()
    assert header[4:] == ["valid_acc", "n_hidden", "learning_rate"]


def test_trial_summary_json_holds_the_checkpoint_path():
    a, _, _, c = summaries()
    assert a.to_json() == {"trial_id": "a1", "status": "TERMINATED", "params": a.params, "epochs": 3, "best": a.best,
                           "history": a.history, "error": "", "checkpoint": "/x/a1/checkpoint_2"}  # fmt: skip
    assert c.to_json()["checkpoint"] is None and c.to_json()["error"] == "training diverged at epoch 1"
    json.dumps([s.to_json() for s in summaries()])  # trials.json: plain JSON


def test_optuna_study_marks_finished_trials_complete_and_errored_ones_failed(tmp_path):
    import optuna

    space = SearchSpace.from_dict(SPACE, "test")
    db = tmp_path / "optuna.db"
    write_optuna_study(db, summaries(), space, "exp")
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{db}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.get_trials(deepcopy=False)
    # A trial that reported a metric (even one that errored later) is COMPLETE with its best value.
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert [t.value for t in trials] == [pytest.approx(3.14159), pytest.approx(3.9), pytest.approx(4.0), None]
    assert [t.user_attrs["ray_trial_id"] for t in trials] == ["a1", "d4", "b2", "c3"]
    assert trials[0].params == {"n_hidden": 12, "learning_rate": pytest.approx(0.0123456)}
    assert trials[0].intermediate_values == {1: 4.0, 2: 3.5, 3: pytest.approx(3.14159)}
    assert trials[0].user_attrs["valid_acc"] == 0.5 and trials[1].user_attrs["error"] == "node lost"
    assert trials[3].user_attrs["status"] == "ERROR" and trials[3].user_attrs["error"].startswith("training diverged")
    assert trials[3].params == {"n_hidden": 16, "learning_rate": pytest.approx(0.05)} and trials[3].intermediate_values == {}
    assert study.best_trial.user_attrs["ray_trial_id"] == "a1"
    # The file mirrors the experiment: written again, it is rebuilt, not appended to.
    write_optuna_study(db, summaries()[2:], space, "exp")
    again = optuna.load_study(study_name="exp", storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    assert [(t.user_attrs["ray_trial_id"], t.state.name) for t in again] == [("b2", "COMPLETE"), ("c3", "FAIL")]


def test_plots_of_the_study(tmp_path, caplog, png_size):
    space = SearchSpace.from_dict(SPACE, "test")
    study = write_optuna_study(tmp_path / "optuna.db", summaries(), space, "exp")
    made = save_plots(study, tmp_path)
    assert made == {name: str(tmp_path / name) for name in ("history.png", "importance.png")}
    assert png_size(tmp_path / "history.png") == png_size(tmp_path / "importance.png") == (800, 500)
    assert "importance.png" not in caplog.text
    # One finished trial: the importances are all equal, and a warning says so instead of failing the search.
    single = write_optuna_study(tmp_path / "one.db", summaries()[:1], space, "one")
    (tmp_path / "one").mkdir()
    caplog.set_level(logging.WARNING, logger="rbmsearch")
    made = save_plots(single, tmp_path / "one")
    assert set(made) == {"history.png", "importance.png"} and all((tmp_path / "one" / name).is_file() for name in made)
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "rbmsearch.report"] == ["importance.png"]
    assert "too small" in caplog.text


def test_render_trials_renders_each_trial_and_skips_one_that_fails(tiny_run, toy_parquet, tmp_path, caplog):
    settings = SearchSettings(samples=2, sample_quarters=3)  # 3 quarters = 12 steps at 4 steps per quarter
    out = tmp_path / "exp"
    done, sound = render_trials(out, [("7", tiny_run), ("gone", tmp_path / "no_run")], settings, str(toy_parquet), seed=0)
    assert done == {"7": ["samples/trial_7/sample_0.mid", "samples/trial_7/sample_1.mid"]}
    assert sound == json.loads((out / "samples/trial_7/stats.json").read_text())["sound"] and sound  # what the search's summary names
    assert all((out / p).is_file() for p in done["7"])
    assert json.loads((out / "samples/trial_7/stats.json").read_text())["settings"]["steps"] == 12
    assert "samples of trial gone skipped" in caplog.text and "config.json: missing" in caplog.text
    assert not (out / "samples/trial_gone").exists()
    # The single trial renders into samples/ itself; samples: 0 renders nothing.
    assert render_trials(tmp_path / "one", [("single", tiny_run)], SearchSettings(samples=1, sample_quarters=2), str(toy_parquet), seed=0)[0] == {
        "single": ["samples/sample_0.mid"]
    }
    assert render_trials(tmp_path / "none", [("7", tiny_run)], SearchSettings(samples=0), str(toy_parquet), seed=0) == ({}, "")
    assert not (tmp_path / "none").exists()
