"""rbmsearch.data: sources -> Parquet, on folders, pickles and Parquet files built here."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rbmsearch.data import (
    BACH_CHORALES,
    SPLITS,
    BuildOptions,
    Dataset,
    DatasetError,
    DatasetMeta,
    Piece,
    build,
    estimate_tonic,
    read_dataset,
    split_for,
    transpose_to_c,
    write_dataset,
)
from rbmsearch.midi import MIN_MIDI_PITCH, NUM_PITCHES, read_midi

Q = 480
QUIET = BuildOptions(progress=False, workers=1)


def scale(tonic: int, quarters: int = 16) -> list[tuple[int, int, int, int]]:
    """A major scale melody over a held tonic, as (pitch, velocity, start, end)."""
    steps = [0, 2, 4, 5, 7, 9, 11, 12]
    notes = [(tonic + steps[i % 8], 80, i * Q, (i + 1) * Q) for i in range(quarters)]
    return notes + [(tonic - 12, 70, 0, quarters * Q)]


@pytest.fixture
def midi_folder(tmp_path, make_midi):
    """Six good files in nested folders, plus the kinds of bad file a real collection holds."""
    for i in range(6):
        make_midi(f"songs/{'deep/' * (i % 2)}piece{i}.mid", scale(60 + i))
    good = (tmp_path / "songs/piece0.mid").read_bytes()
    (tmp_path / "songs/truncated.mid").write_bytes(good[:30])
    (tmp_path / "songs/random.MID").write_bytes(os.urandom(300))
    make_midi("songs/silent.mid", [])
    (tmp_path / "songs/notes.txt").write_text("not a MIDI file, and not named like one")
    return tmp_path / "songs"


def test_folder_import_skips_bad_files_with_reasons(midi_folder, tmp_path):
    out = tmp_path / "d.parquet"
    built = build(str(midi_folder), out, QUIET)
    assert sorted(p.name for p in built.pieces) == sorted(
        ["piece0.mid", "deep/piece1.mid", "piece2.mid", "deep/piece3.mid", "piece4.mid", "deep/piece5.mid"]
    )
    reasons = {s.path: s.reason for s in built.skipped}
    assert set(reasons) == {"truncated.mid", "random.MID", "silent.mid"}
    assert "truncated or corrupt" in reasons["truncated.mid"] and "contains no notes" in reasons["silent.mid"]
    summary = built.summary()
    assert "skipped 3 file(s)" in summary and "silent.mid: contains no notes" in summary

    back = read_dataset(out)
    assert back.meta == built.meta and back.meta.steps_per_quarter == 4
    for a, b in zip(built.pieces, back.pieces):
        assert (a.name, a.split) == (b.name, b.split)
        np.testing.assert_array_equal(a.roll, b.roll)
    np.testing.assert_array_equal(back.pieces[0].roll, read_midi(midi_folder / "deep/piece1.mid").roll)


def test_split_is_deterministic_by_relative_path_and_follows_fractions():
    names = [f"folder/{i}.mid" for i in range(20000)]
    splits = [split_for(n, 0.2, 0.1) for n in names]
    assert splits == [split_for(n, 0.2, 0.1) for n in names]
    fractions = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert fractions["valid"] == pytest.approx(0.2, abs=0.01) and fractions["test"] == pytest.approx(0.1, abs=0.01)
    # Adding more files never moves one that was already there.
    assert split_for("folder/7.mid", 0.2, 0.1) == splits[7]


def test_parallel_import_gives_the_same_dataset(tmp_path, make_midi):
    for i in range(20):
        make_midi(f"many/{i:02d}.mid", scale(50 + i))
    serial = build(str(tmp_path / "many"), tmp_path / "a.parquet", QUIET)
    parallel = build(str(tmp_path / "many"), tmp_path / "b.parquet", BuildOptions(progress=False, workers=2))
    assert [p.name for p in serial.pieces] == [p.name for p in parallel.pieces]
    assert all(np.array_equal(a.roll, b.roll) for a, b in zip(serial.pieces, parallel.pieces))


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda tmp: tmp / "nowhere", "no such file or folder"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no MIDI files"),
        (lambda tmp: (tmp / "x.csv").write_text("a,b") and tmp / "x.csv", "expected a folder of MIDI files"),
    ],
    ids=["missing", "empty-folder", "wrong-kind"],
)
def test_unusable_sources_say_what_to_do(tmp_path, make_source, message):
    with pytest.raises(DatasetError, match=message):
        build(str(make_source(tmp_path)), tmp_path / "out.parquet", QUIET)
    assert not (tmp_path / "out.parquet").exists()


def test_a_folder_of_only_bad_files_fails_and_keeps_the_old_dataset(tmp_path, midi_folder):
    out = tmp_path / "keep.parquet"
    build(str(midi_folder), out, QUIET)
    before = out.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mid").write_bytes(b"MThd garbage")
    with pytest.raises(DatasetError, match=r"yielded no pieces: all 1 skipped \(a.mid: not a readable MIDI file") as info:
        build(str(bad), out, QUIET)
    assert "a.mid" in str(info.value)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries


def benchmark_pickle(path, data, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def test_benchmark_pickle_keeps_its_splits(tmp_path):
    data = {
        "train": [[(60, 64), (), (60, 64, 67)], [(21,)]],
        "valid": [[(108,), (72,)]],
        "test": [[(), ()]],
    }
    built = build(str(benchmark_pickle(tmp_path / "set.pickle", data)), tmp_path / "p.parquet", QUIET)
    back = read_dataset(tmp_path / "p.parquet")
    assert [(p.name, p.split, len(p.roll)) for p in back.pieces] == [
        ("train/0000", "train", 3),
        ("train/0001", "train", 1),
        ("valid/0000", "valid", 2),
        ("test/0000", "test", 2),
    ]
    expected = np.zeros((3, NUM_PITCHES), dtype=bool)
    expected[[0, 0, 2, 2, 2], [60 - 21, 64 - 21, 60 - 21, 64 - 21, 67 - 21]] = True
    np.testing.assert_array_equal(back.pieces[0].roll, expected)
    assert not back.pieces[3].roll.any()  # silence survives
    assert built.meta.steps_per_quarter == 1


class _Hostile:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "pwned"
    path = benchmark_pickle(tmp_path / "evil.pickle", {"train": [_Hostile(marker)], "valid": [], "test": []})
    # The payload is live: a plain unpickler would run it (checked on a copy of the command).
    with pytest.raises(DatasetError, match=r"refused: it asks to load (posix|os)\.system") as info:
        build(str(path), tmp_path / "out.parquet", QUIET)
    assert str(path) in str(info.value)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # prove that the test pickle really does run code
    assert marker.exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2, 3], "expected a dict with keys"),
        ({"train": [], "valid": []}, r"expected a dict with keys \['train', 'valid', 'test'\], but found \['train', 'valid'\]"),
        ({"train": [[(60,)], "oops"], "valid": [], "test": []}, 'sequence 1 of "train" is not a list of frames'),
        ({"train": [[(60,), (200,)]], "valid": [], "test": []}, 'step 1 of sequence 0 of "train" holds 200'),
        ({"train": [[(60.5,)]], "valid": [], "test": []}, "holds 60.5"),
    ],
    ids=["not-a-dict", "missing-split", "bad-sequence", "pitch-out-of-range", "float-pitch"],
)
def test_pickle_of_the_wrong_shape(tmp_path, data, message):
    path = benchmark_pickle(tmp_path / "odd.pickle", data)
    with pytest.raises(DatasetError, match=message):
        build(str(path), tmp_path / "out.parquet", QUIET)


def test_truncated_pickle(tmp_path):
    path = benchmark_pickle(tmp_path / "cut.pickle", {"train": [[(60,)] * 50], "valid": [], "test": []})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match="not a readable pickle.*truncated"):
        build(str(path), tmp_path / "out.parquet", QUIET)


@pytest.fixture
def good_parquet(tmp_path):
    roll = np.zeros((4, NUM_PITCHES), dtype=bool)
    roll[1, [0, 39, 87]] = True
    dataset = Dataset(DatasetMeta(source="test", steps_per_quarter=2), (Piece("a", "train", roll), Piece("b", "test", roll[:2])))
    return write_dataset(dataset, tmp_path / "good.parquet")


def rewrite(path, out, mutate_table=lambda t: t, mutate_meta=lambda m: m):
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"rbmsearch"])
    table = mutate_table(table)
    new_meta = mutate_meta(meta)
    table = table.replace_schema_metadata(None if new_meta is None else {b"rbmsearch": json.dumps(new_meta).encode()})
    pq.write_table(table, out)
    return out


def test_schema_errors_name_the_problem_and_the_fix(good_parquet, tmp_path):
    fix = "rebuild it with `python -m rbmsearch.data build"
    cases = {
        "no-meta": (dict(mutate_meta=lambda m: None), "has no 'rbmsearch' metadata"),
        "version": (dict(mutate_meta=lambda m: {**m, "schema_version": 99}), "schema version 99 found, but this rbmsearch reads version 1"),
        "missing-column": (dict(mutate_table=lambda t: t.drop_columns(["steps"])), "column 'steps' \\(int32\\) is missing"),
        "wrong-type": (
            dict(mutate_table=lambda t: t.set_column(2, "steps", pa.array(t.column("steps").to_numpy().astype(np.float64)))),
            "column 'steps' should be int32 but is double",
        ),
        "bad-split": (
            dict(mutate_table=lambda t: t.set_column(1, "split", pa.array(["train", "holdout"]))),
            r"split values \['holdout'\] found",
        ),
        "steps-disagree": (
            dict(mutate_table=lambda t: t.set_column(2, "steps", pa.array([4, 3], pa.int32()))),
            "'steps' disagrees with the length of 'pitches'",
        ),
    }
    for name, (mutation, message) in cases.items():
        path = rewrite(good_parquet, tmp_path / f"{name}.parquet", **mutation)
        with pytest.raises(DatasetError, match=message) as info:
            read_dataset(path)
        assert str(path) in str(info.value) and fix in str(info.value), name

    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        read_dataset(not_parquet)
    with pytest.raises(DatasetError, match="no such file; build one with"):
        read_dataset(tmp_path / "absent.parquet")


def test_written_schema_is_the_documented_one(good_parquet):
    table = pq.read_table(good_parquet)
    assert table.schema.names == ["piece", "split", "steps", "pitches"]
    assert table.schema.field("pitches").type.equals(pa.list_(pa.list_(pa.int8())))
    assert table.schema.field("steps").type == pa.int32()
    assert table.column("pitches").to_pylist()[0] == [[], [21, 60, 108], [], []]
    meta = json.loads(table.schema.metadata[b"rbmsearch"])
    assert meta == {"source": "test", "steps_per_quarter": 2, "qpm": 120.0, "transposed": False, "min_pitch": 21, "max_pitch": 108, "schema_version": 1}


def test_transpose_to_c_moves_the_tonic_and_keeps_the_shape(make_midi):
    d_major = read_midi(make_midi("d.mid", scale(62))).roll
    assert estimate_tonic(d_major) == 2
    moved, shift, dropped = transpose_to_c(d_major)
    assert (shift, dropped) == (-2, 0)
    np.testing.assert_array_equal(moved, read_midi(make_midi("c.mid", scale(60))).roll)
    a_minor = np.zeros((8, NUM_PITCHES), dtype=bool)
    for t, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69]):  # harmonic A minor
        a_minor[t, p - MIN_MIDI_PITCH] = a_minor[t, 57 - MIN_MIDI_PITCH] = True
    moved, shift, _ = transpose_to_c(a_minor)
    assert shift == 3 and moved[:, 60 - MIN_MIDI_PITCH].all()  # tonic A -> C


def test_bach_chorales_from_music21(tmp_path):
    built = build(BACH_CHORALES, tmp_path / "c.parquet", BuildOptions(progress=False, workers=1, limit=3))
    assert len(built.pieces) == 3 and built.meta.steps_per_quarter == 1
    for piece in built.pieces:
        assert piece.name.startswith("bwv")
        voices = piece.roll.sum(axis=1)
        assert 20 <= len(piece.roll) <= 200 and 3 <= voices.mean() <= 4.5 and voices.max() <= 6


def test_cli_build_and_info(tmp_path, midi_folder):
    out = tmp_path / "cli.parquet"
    run = lambda *a: subprocess.run([sys.executable, "-m", "rbmsearch.data", *a], capture_output=True, text=True)
    built = run("build", "--source", str(midi_folder), "--out", str(out), "--valid-fraction", "0.2", "--no-progress")
    assert built.returncode == 0, built.stderr
    assert "skipped 3 file(s)" in built.stdout and f"wrote {out}" in built.stdout
    info = run("info", str(out))
    assert info.returncode == 0 and info.stdout.splitlines()[1:5] == built.stdout.splitlines()[1:5]
    failed = run("build", "--source", str(tmp_path / "missing"), "--out", str(out))
    assert failed.returncode == 1 and "error:" in failed.stderr and "no such file or folder" in failed.stderr


def test_build_to_a_uri_writes_through_pyarrow_fs_and_refuses_what_it_cannot_write(tmp_path, midi_folder, monkeypatch):
    """--out file:///... is written by pyarrow.fs and reads back; a URI pyarrow.fs has no filesystem
    for is refused in one line before the source is read, and nothing named `foo:` appears locally."""
    from rbmsearch.errors import OutputError

    monkeypatch.chdir(tmp_path)
    uri = f"file://{tmp_path}/bucket/sub/x.parquet"
    built = build(str(midi_folder), uri)
    assert (tmp_path / "bucket" / "sub" / "x.parquet").is_file()
    assert not list((tmp_path / "bucket" / "sub").glob("*.tmp-*"))  # the temporary file was renamed
    again = read_dataset(uri)
    assert [p.name for p in again.pieces] == [p.name for p in built.pieces]
    assert all(np.array_equal(a.roll, b.roll) for a, b in zip(again.pieces, built.pieces))
    with pytest.raises(OutputError) as info:
        build(str(tmp_path / "missing-source"), "foo://bucket/x.parquet")  # the URI is checked first
    message = str(info.value)
    assert message.startswith("foo://bucket/x.parquet: pyarrow.fs cannot write there") and "\n" not in message
    assert "file://" in message  # says what would work
    assert not any(p.name.startswith("foo") for p in tmp_path.iterdir())
    cli = subprocess.run([sys.executable, "-m", "rbmsearch.data", "build", "--source", str(midi_folder), "--out", "foo://b/x.parquet", "--no-progress"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 1 and cli.stderr.strip().startswith("error: foo://b/x.parquet: pyarrow.fs cannot write there")
    assert len(cli.stderr.strip().splitlines()) == 1 and "wrote" not in cli.stdout
