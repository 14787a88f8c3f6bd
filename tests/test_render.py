"""rbmsearch.render: a tiny trained run (conftest's tiny_run) rendered to MIDI, WAV, PNG and
stats.json, read back. (The search's use of it, report.render_trials: test_report.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from rbmsearch.data import read_dataset
from rbmsearch.errors import RunError
from rbmsearch.midi import MIN_MIDI_PITCH, NUM_PITCHES, read_midi
from rbmsearch.render import PNG_SIZE, RenderError, render_run, roll_stats


@pytest.fixture(scope="module")
def rendered(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, render_run(tiny_run, out, num=3, steps=40, seed=5, synth="builtin")


def test_midi_reads_back_into_the_same_roll(rendered):
    out, result = rendered
    assert [s["midi"] for s in result["samples"]] == ["sample_0.mid", "sample_1.mid", "sample_2.mid"]
    for sample, roll in zip(result["samples"], result["rolls"]):
        back = read_midi(out / sample["midi"], steps_per_quarter=4).roll
        assert back.shape[1] == NUM_PITCHES
        # The MIDI ends with its last note; the rest of the roll is silence.
        np.testing.assert_array_equal(back, roll[: len(back)])
        assert not roll[len(back) :].any()


def test_wav_header_and_duration_match_steps_and_tempo(rendered):
    out, result = rendered
    for sample in result["samples"] + [result["reference"]]:
        with wave.open(str(out / sample["wav"])) as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 22050)
            seconds = f.getnframes() / f.getframerate()
            frames = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        assert seconds == pytest.approx(sample["steps"] * 60 / 100 / 4, abs=1 / 22050)  # steps x a 16th at 100 qpm
        assert np.abs(frames).max() > 1000  # there is sound, not silence


def test_pngs_are_real_images_of_the_expected_size(rendered, png_size):
    out, result = rendered
    for sample in result["samples"] + [result["reference"]]:
        assert png_size(out / sample["png"]) == PNG_SIZE


def test_stats_json_compares_samples_with_the_training_data(rendered, tiny_run):
    out, result = rendered
    stats = json.loads((out / "stats.json").read_text())
    assert stats["synth"] == "builtin" and stats["settings"]["seed"] == 5 and stats["settings"]["qpm"] == 100.0
    train_rolls = read_dataset(json.loads((tiny_run / "config.json").read_text())["data"]["path"]).rolls("train")
    assert stats["stats"]["training_data"] == roll_stats(train_rolls)  # JSON keeps floats exactly
    assert stats["stats"]["samples"] == roll_stats(list(result["rolls"]))
    assert stats["reference"]["steps"] == min(40, max(len(r) for r in train_rolls))  # the piece that fills the most


def test_roll_stats_by_hand():
    roll = np.zeros((4, NUM_PITCHES), bool)
    c, e, g, f_sharp = (p - MIN_MIDI_PITCH for p in (60, 64, 67, 66))
    roll[0, [c, e, g]] = True  # C major triad
    roll[1, [c, e, g]] = True  # held: 3 repeats
    roll[3, [c, f_sharp]] = True  # after a silent step: C again (no repeat), F# outside C major
    s = roll_stats([roll])
    assert s["notes_per_frame"] == 2.0 and s["empty_frame_rate"] == 0.25
    assert s["pitch_range"] == [60, 67]
    assert s["repeat_rate"] == 3 / 5  # notes at t > 0: 3 + 2; of those, 3 sounded before
    assert s["scale_consistency"] == pytest.approx(8 / 8)  # G major holds C, E, G and F#
    p = np.array([3, 2, 2, 1]) / 8  # C, E, G, F#
    assert s["pitch_class_entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    assert roll_stats([np.zeros((2, NUM_PITCHES), bool)]) == {"frames": 2, "notes": 0, "notes_per_frame": 0.0, "empty_frame_rate": 1.0}


def test_primer_piece(tiny_run, tmp_path):
    result = render_run(tiny_run, tmp_path / "primed", num=2, steps=8, primer="p0", synth="builtin")
    assert result["reference"]["piece"] == "p0" and result["settings"]["primer"] == "p0"
    with pytest.raises(RenderError, match="no piece named 'nope'"):
        render_run(tiny_run, tmp_path / "bad", num=1, steps=8, primer="nope")


def test_bad_input_names_the_problem(tmp_path, tiny_run):
    # A run directory without its parameters: load_run's error, naming the file and the fix.
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/config.json").write_text((tiny_run / "config.json").read_text())
    with pytest.raises(RunError, match="params.npz: missing.*python -m rbmsearch.train"):
        render_run(tmp_path / "empty", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing was written
    with pytest.raises(RenderError, match="num must be a positive int"):
        render_run(tiny_run, tmp_path / "o", num=0)
    # A dataset that moved away: samples are still rendered, and the note says why there is no reference.
    result = render_run(tiny_run, tmp_path / "nodata", num=1, steps=8, data=str(tmp_path / "gone.parquet"), synth="builtin")
    assert result["reference"] is None and "unreadable" in result["note"]
    assert (tmp_path / "nodata/sample_0.wav").is_file()


@pytest.mark.slow
def test_render_cli(tiny_run, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.render", str(tiny_run), "--out", str(tmp_path / "cli"), "--num", "2", "--steps", "16", "--synth", "builtin"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "wrote 2 samples" in out.stdout and f"python -m rbmsearch.gallery {tmp_path / 'cli'}" in out.stdout
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(
        [f"sample_{i}.{ext}" for i in range(2) for ext in ("mid", "wav", "png")] + [f"reference.{ext}" for ext in ("mid", "wav", "png")] + ["stats.json"]
    )
    missing = subprocess.run([sys.executable, "-m", "rbmsearch.render", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 1 and "error: " in missing.stderr and "config.json: missing" in missing.stderr
