"""Hostile and broken input (issue 19): each defect found by the robustness pass, as a test
that failed before its fix. The files are built here, byte by byte where it matters."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pyarrow.parquet as pq
import pytest

from rbmsearch.config import TrainConfig
from rbmsearch.data import BuildOptions, DatasetMeta, load_source, read_dataset, write_dataset
from rbmsearch.errors import ConfigError, DatasetError, GalleryError, MIDIConversionError, OutputError, SearchSpaceError
from rbmsearch.files import atomic_write, write_json
from rbmsearch.midi import MAX_STEPS, read_midi
from rbmsearch.run import read_config, write_run


def smf(track: bytes, ticks_per_beat: int = 96, midi_type: int = 1, header_division: int | None = None) -> bytes:
    """A one-track standard MIDI file from raw track bytes."""
    division = ticks_per_beat if header_division is None else header_division
    return b"MThd" + struct.pack(">IHHH", 6, midi_type, 1, division) + b"MTrk" + struct.pack(">I", len(track)) + track


def var_len(n: int) -> bytes:
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


NOTE = bytes.fromhex("00903c50") + b"\x60" + bytes.fromhex("803c00") + bytes.fromhex("00ff2f00")  # C4 for one beat
KEY_SIGNATURE_9_SHARPS = bytes.fromhex("00ff5902090500903c5060803c0000ff2f00")  # the reproduction


def test_an_impossible_key_signature_is_a_conversion_error_naming_the_file(tmp_path):
    path = tmp_path / "nine_sharps.mid"
    path.write_bytes(smf(KEY_SIGNATURE_9_SHARPS))
    with pytest.raises(MIDIConversionError, match="KeySignatureError") as info:
        read_midi(path)
    assert info.value.path == str(path)


def long_note_file(path, ticks: int, ticks_per_beat: int = 1, notes: int = 1):
    """A tiny file whose notes are 'held' for `ticks`: what a corrupt delta-time looks like."""
    ons = b"".join(b"\x00\x90" + bytes([40 + i, 80]) for i in range(notes))
    offs = var_len(ticks) + b"\x80" + bytes([40, 0]) + b"".join(b"\x00\x80" + bytes([40 + i, 0]) for i in range(1, notes))
    path.write_bytes(smf(ons + offs + bytes.fromhex("00ff2f00"), ticks_per_beat=ticks_per_beat))
    return path


def test_a_tiny_file_cannot_ask_for_gigabytes(tmp_path):
    path = long_note_file(tmp_path / "long.mid", 9_999_999, notes=88)
    assert path.stat().st_size < 1000
    with pytest.raises(MIDIConversionError, match=r"39,999,996 steps \(3\.3 GiB\).*over the limit of 1,048,576.*--max-steps"):
        read_midi(path)  # before the guard: a 40-million-step roll, then MemoryError


def test_the_step_limit_is_the_users_to_raise(tmp_path):
    path = long_note_file(tmp_path / "long.mid", 4 * 5000, ticks_per_beat=4)
    with pytest.raises(MIDIConversionError, match="over the limit of 1,000"):
        read_midi(path, steps_per_quarter=4, max_steps=1000)
    assert read_midi(path, steps_per_quarter=4, max_steps=100_000).roll.shape == (20_000, 88)
    assert MAX_STEPS == 1 << 20
    with pytest.raises(ValueError, match="max_steps"):
        BuildOptions(max_steps=0)


@pytest.mark.parametrize(
    "content, reason",
    [
        (smf(NOTE, midi_type=3), "the header says MIDI type 3, but only types 0, 1 and 2 exist"),
        (smf(NOTE, header_division=0xFFFF), "time division is 0xFFFF, which is SMPTE time code"),
        (smf(NOTE, header_division=0), "time division is 0x0000, which is 0 ticks per beat"),
        (b"", "not a readable MIDI file (the file is empty)"),
    ],
)
def test_bad_headers_and_empty_files_say_what_is_wrong(tmp_path, content, reason):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MIDIConversionError) as info:
        read_midi(path)
    assert reason in info.value.reason and "-1" not in info.value.reason and not info.value.reason.endswith(": )")


def test_one_bad_file_never_stops_a_folder_import(tmp_path, make_midi):
    folder = tmp_path / "songs"
    make_midi("songs/good.mid", [(60, 80, 0, 480), (64, 80, 480, 960)])
    (folder / "nine_sharps.mid").write_bytes(smf(KEY_SIGNATURE_9_SHARPS))
    long_note_file(folder / "huge.mid", 9_999_999, notes=88)
    (folder / "gone.mid").symlink_to(tmp_path / "nowhere.mid")
    dataset = load_source(str(folder), BuildOptions(workers=1, progress=False))
    assert [p.name for p in dataset.pieces] == ["good.mid"]
    reasons = {s.path: s.reason for s in dataset.skipped}
    assert sorted(reasons) == ["gone.mid", "huge.mid", "nine_sharps.mid"]
    assert "broken symbolic link" in reasons["gone.mid"] and "KeySignatureError" in reasons["nine_sharps.mid"]
    assert "over the limit" in reasons["huge.mid"]
    expected = read_midi(folder / "good.mid").roll
    assert np.array_equal(dataset.pieces[0].roll, expected)  # the good file imports unchanged


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="A positive number of files must be specified for limit, but got -1"):
        BuildOptions(limit=-1)


def test_empty_pickle_sequences_are_skipped_and_listed(tmp_path):
    import pickle

    path = tmp_path / "b.pickle"
    path.write_bytes(pickle.dumps({"train": [[(60,), (62, 65)], []], "valid": [[]], "test": [[(60,)]]}))
    dataset = load_source(str(path), BuildOptions(progress=False))
    assert [p.name for p in dataset.pieces] == ["train/0000", "test/0000"]
    assert [(s.path, s.reason) for s in dataset.skipped] == [("train/0001", "an empty sequence (no frames)"), ("valid/0000", "an empty sequence (no frames)")]
    path.write_bytes(pickle.dumps({"train": [[]], "valid": [], "test": []}))
    with pytest.raises(DatasetError, match="yielded no pieces"):
        load_source(str(path), BuildOptions(progress=False))


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ([1, 2], "should be a JSON object, but is a list"),
        ({"steps_per_quarter": 0}, "A positive int must be specified for steps_per_quarter, but got 0"),
        ({"qpm": -5}, "A positive finite tempo must be specified for qpm, but got -5"),
        ({"source": None}, "A string must be specified for source"),
        ("not json", "not valid JSON"),
    ],
)
def test_unexpected_parquet_metadata_is_a_dataset_error(tmp_path, toy_dataset, meta, message):
    good = write_dataset(toy_dataset, tmp_path / "good.parquet")
    table = pq.read_table(good)
    if isinstance(meta, dict):
        raw = json.dumps({**asdict(toy_dataset.meta), **meta}).encode()
    else:
        raw = meta.encode() if isinstance(meta, str) else json.dumps(meta).encode()
    pq.write_table(table.replace_schema_metadata({b"rbmsearch": raw}), tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match=message) as info:
        read_dataset(tmp_path / "bad.parquet")
    assert info.value.path == str(tmp_path / "bad.parquet") and "python -m rbmsearch.data build" in str(info.value)
    with pytest.raises(ValueError):
        DatasetMeta(source="x", steps_per_quarter=0)


def test_training_into_a_run_of_another_dataset_is_refused_and_changes_nothing(tmp_path):
    config = TrainConfig(epochs=2)
    write_run(tmp_path, config, {"path": "a.parquet", "source": "jsb", "steps_per_quarter": 1, "qpm": 120.0})
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ConfigError, match="trained on 'jsb' at 1 steps per quarter, but this dataset is 'midi' at 4"):
        write_run(tmp_path, config, {"path": "b.parquet", "source": "midi", "steps_per_quarter": 4, "qpm": 100.0})
    assert (tmp_path / "config.json").read_bytes() == before
    write_run(tmp_path, TrainConfig(epochs=5), {"path": "moved/a.parquet", "source": "jsb", "steps_per_quarter": 1, "qpm": 120.0})
    assert read_config(tmp_path)[1]["path"] == "moved/a.parquet"  # the same data, found elsewhere, resumes


def test_bad_output_paths_are_output_errors(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match="is a directory, where a file is written"):
        write_json(tmp_path / "adir", {})
    with pytest.raises(OutputError, match="cannot be"):
        atomic_write("/proc/rbmsearch-test/x.json", lambda tmp: tmp.write_text("{}"))
    (tmp_path / "afile").write_text("keep me")
    with pytest.raises(OutputError, match="is a file, where a directory is written"):
        write_json(tmp_path / "afile" / "config.json", {})
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["rbmsearch.data", "build", "--source", "SRC", "--out", "{tmp}"], "is a directory, where a file is written"),
        (["rbmsearch.data", "build", "--source", "SRC", "--out", "/proc/rbmsearch/x.parquet"], "cannot be"),
        (["rbmsearch.train", "--data", "DATA", "--out", "{tmp}/afile", "--epochs", "1"], "is a file, where a directory is written"),
        (["rbmsearch.gallery", "{tmp}", "--port", "70000"], "a port in 0..65535 must be specified, but got 70000"),
        (["rbmsearch.data", "build", "--source", "SRC", "--out", "{tmp}/x.parquet", "--limit", "-1"], "A positive number of files must be specified for limit"),
    ],
)
def test_command_lines_answer_bad_outputs_in_one_line(tmp_path, toy_parquet, make_midi, args, message):
    make_midi("src/a.mid", [(60, 80, 0, 480)])
    (tmp_path / "afile").write_text("keep me")
    args = [a.replace("{tmp}", str(tmp_path)).replace("SRC", str(tmp_path / "src")).replace("DATA", str(toy_parquet)) for a in args]
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode in (1, 2) and message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert (tmp_path / "afile").read_text() == "keep me"


def test_a_failed_train_leaves_no_empty_run_directory(tmp_path, toy_dataset):
    from rbmsearch.data import Dataset
    from rbmsearch.train import train

    no_train = Dataset(toy_dataset.meta, tuple(p for p in toy_dataset.pieces if p.split != "train"))
    with pytest.raises(DatasetError, match="has no training pieces"):
        train(TrainConfig(epochs=1), no_train, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_corrupt_json_in_a_gallery_directory_names_the_file(tmp_path):
    from rbmsearch.gallery import build_page

    (tmp_path / "best.json").write_text('{"trial_id": ')
    (tmp_path / "trials.json").write_text("[]")
    with pytest.raises(GalleryError, match=r"best.json: is not valid JSON .*perhaps truncated"):
        build_page(tmp_path)


def test_a_bad_fixed_value_is_reported_under_its_own_key(tmp_path):
    from rbmsearch.space import load_space

    path = tmp_path / "s.yaml"
    path.write_text("fixed:\n  window: -3\nparams:\n  n_hidden: {type: int, low: 8, high: 16}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_space(path)
    assert info.value.key == "fixed.window" and "window" in info.value.reason
