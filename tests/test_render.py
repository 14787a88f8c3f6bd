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
from rbmsearch.render import PEAK_LEVEL, PNG_SIZE, RenderError, default_program, find_fluidsynth, note_name, render_run, roll_stats


@pytest.fixture(scope="module")
def rendered(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, render_run(tiny_run, out, num=3, steps=40, seed=5, synth="builtin", references=2, continuations=2)


def every_piece(result) -> list[dict]:
    return result["samples"] + result["references"] + result["continuations"]


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
    for sample in every_piece(result):
        with wave.open(str(out / sample["wav"])) as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 22050)
            seconds = f.getnframes() / f.getframerate()
            frames = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        assert seconds == pytest.approx(sample["steps"] * 60 / 100 / 4, abs=1 / 22050)  # steps x a 16th at 100 qpm
        assert abs(int(np.abs(frames).max()) - PEAK_LEVEL * 32767) <= 1  # sound, at the level every file peaks at


def test_pngs_are_real_images_of_the_expected_size(rendered, png_size):
    out, result = rendered
    for sample in every_piece(result):
        assert png_size(out / sample["png"]) == PNG_SIZE


def test_stats_json_compares_samples_with_the_training_data(rendered, tiny_run):
    out, result = rendered
    stats = json.loads((out / "stats.json").read_text())
    assert stats["synth"] == "builtin" and stats["settings"]["seed"] == 5 and stats["settings"]["qpm"] == 100.0
    train_rolls = read_dataset(json.loads((tiny_run / "config.json").read_text())["data"]["path"]).rolls("train")
    assert stats["stats"]["training_data"] == roll_stats(train_rolls)  # JSON keeps floats exactly
    assert stats["stats"]["samples"] == roll_stats(list(result["rolls"]))
    pieces = {p.name: p for p in read_dataset(json.loads((tiny_run / "config.json").read_text())["data"]["path"]).pieces}
    assert len({r["piece"] for r in stats["references"]}) == 2  # two different training pieces
    for ref in stats["references"]:
        assert ref["split"] == pieces[ref["piece"]].split == "train" and ref["steps"] == min(40, len(pieces[ref["piece"]].roll))
    assert stats["program"] == 0 and stats["sound"] == "the built-in synthesizer (sine harmonics, mono)"


def test_continuations_start_with_the_test_piece_then_the_model(rendered, tiny_run):
    out, result = rendered
    pieces = {p.name: p for p in read_dataset(json.loads((tiny_run / "config.json").read_text())["data"]["path"]).pieces}
    assert len(result["continuations"]) == 2 and len({c["piece"] for c in result["continuations"]}) == 2
    for c in result["continuations"]:
        piece = pieces[c["piece"]]
        assert c["split"] == piece.split == "test" and c["primer_steps"] == 10 and c["steps"] == 40
        back = read_midi(out / c["midi"], steps_per_quarter=4).roll
        np.testing.assert_array_equal(back[:10], piece.roll[:10])  # the piece's first quarter, as it is


def test_note_names_and_default_programs():
    assert [note_name(p) for p in (21, 60, 61, 69, 108)] == ["A0", "C4", "C#4", "A4", "C8"]
    assert default_program({"source": "bach-chorales"}) == 19 and default_program({"path": "/d/JSB Chorales.pickle"}) == 19
    assert default_program({"source": "/music/folk", "path": "/d/nottingham.parquet"}) == 0


def test_the_program_reaches_the_midi_file(tiny_run, tmp_path):
    import mido

    result = render_run(tiny_run, tmp_path / "organ", num=1, steps=8, synth="builtin", program=52, references=0)
    programs = [m.program for m in mido.MidiFile(tmp_path / "organ" / result["samples"][0]["midi"]).tracks[0] if m.type == "program_change"]
    assert programs == [52] and result["program"] == 52


def test_bad_sound_options_name_the_problem(tiny_run, tmp_path):
    text = tmp_path / "font.sf2"
    text.write_text("not a soundfont")
    cases = [
        ({"soundfont": tmp_path / "missing.sf2"}, "missing.sf2: cannot be read"),
        ({"soundfont": text}, "font.sf2: not a SoundFont 2 file"),
        ({"soundfont": text, "synth": "builtin"}, "a soundfont needs FluidSynth"),
        ({"program": 128}, "program must be a General MIDI program in 0..127"),
        ({"references": -1}, "references must be an int >= 0"),
    ]
    for options, message in cases:
        with pytest.raises(RenderError, match=message):
            render_run(tiny_run, tmp_path / "o", num=1, steps=8, **options)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_fluidsynth_renders_real_instrument_audio(tiny_run, tmp_path):
    assert find_fluidsynth(), "FluidSynth and a General MIDI soundfont are needed: apt-get install fluidsynth fluid-soundfont-gm (.ci/run installs them)"
    result = render_run(tiny_run, tmp_path / "fluid", num=2, steps=32, synth="fluidsynth", references=1)
    assert result["synth"] == "fluidsynth" and result["sound"].startswith("FluidSynth with ") and "program 0 (Acoustic Grand Piano)" in result["sound"]
    music_s = 32 * 60 / 100 / 4  # 32 sixteenths at 100 qpm
    for piece in result["samples"] + result["references"]:
        with wave.open(str(tmp_path / "fluid" / piece["wav"])) as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (2, 2, 44100)
            seconds = f.getnframes() / f.getframerate()
            pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2).astype(np.float64) / 32767
        roll = read_midi(tmp_path / "fluid" / piece["midi"], steps_per_quarter=4).roll  # ends with the last note
        assert len(roll) * 60 / 100 / 4 - 0.01 <= seconds <= music_s + 5  # the notes, then at most the instrument's release
        assert np.abs(pcm).max() == pytest.approx(PEAK_LEVEL, abs=1e-4)  # normalised, never clipped
        start = int((np.flatnonzero(roll.any(axis=1))[0] * 60 / 100 / 4 + 0.05) * 44100)
        assert np.sqrt((pcm[start : start + 22050] ** 2).mean()) > 0.01  # sound while the first notes play


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
    assert result["references"][0]["piece"] == "p0" and result["settings"]["primer"] == "p0"
    with pytest.raises(RenderError, match="no piece named 'nope'"):
        render_run(tiny_run, tmp_path / "bad", num=1, steps=8, primer="nope")


def test_bad_input_names_the_problem(tmp_path, tiny_run):
    # A run directory without its parameters: load_run's error, naming the file and the fix.
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/config.json").write_text((tiny_run / "config.json").read_text())
    with pytest.raises(RunError, match="params.npz: missing.*python -m rbmsearch.train"):
        render_run(tmp_path / "empty", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing was written
    with pytest.raises(RenderError, match="num must be an int >= 1"):
        render_run(tiny_run, tmp_path / "o", num=0)
    # A dataset that moved away: samples are still rendered, and the note says why nothing is compared.
    result = render_run(tiny_run, tmp_path / "nodata", num=1, steps=8, data=str(tmp_path / "gone.parquet"), synth="builtin")
    assert result["references"] == result["continuations"] == [] and "unreadable" in result["note"]
    assert (tmp_path / "nodata/sample_0.wav").is_file()


@pytest.mark.slow
def test_render_cli(tiny_run, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.render", str(tiny_run), "--out", str(tmp_path / "cli"), "--num", "2", "--steps", "16", "--synth", "builtin"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "wrote 2 samples, 1 training pieces and 0 continuations" in out.stdout and f"python -m rbmsearch.gallery {tmp_path / 'cli'}" in out.stdout
    assert "audio: the built-in synthesizer" in out.stdout  # which synthesizer made the audio
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(
        [f"sample_{i}.{ext}" for i in range(2) for ext in ("mid", "wav", "png")] + [f"reference_0.{ext}" for ext in ("mid", "wav", "png")] + ["stats.json"]
    )
    from rbmsearch.render import main as render_main  # the refusal in this process: no TensorFlow to start again

    with pytest.raises(SystemExit, match="^error: .*config.json: missing"):
        render_main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
