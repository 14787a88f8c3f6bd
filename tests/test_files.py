"""rbmsearch.files: atomic writes (the old file survives a failing writer, no temporary file is
left, mode 0644 whatever the umask) and read_json's errors, which name the file."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rbmsearch.errors import DatasetError, RunError
from rbmsearch.files import atomic_write, create_whole, read_json, write_json, write_text


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_keeps_the_old_file_when_the_writer_raises(tmp_path):
    path = write_text(tmp_path / "a.json", "old")

    def half_then_fail(tmp):
        tmp.write_text("half of the new con")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary file left

    def interrupted(tmp):
        tmp.write_text("x")
        raise KeyboardInterrupt  # Ctrl-C too, not only errors

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.txt", interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # a file that did not exist stays absent


def test_atomic_write_replaces_creates_parents_and_writes_mode_0644(tmp_path):
    old = os.umask(0o077)  # mkstemp's 0600 and a strict umask must not leak into the file
    try:
        path = write_text(tmp_path / "deep/er/b.txt", "one")
        assert path == tmp_path / "deep/er/b.txt" and path.read_text() == "one"
        write_text(path, "two")
        binary = atomic_write(tmp_path / "c.bin", lambda tmp: tmp.write_bytes(b"\x00\x01"))
    finally:
        os.umask(old)
    assert path.read_text() == "two" and binary.read_bytes() == b"\x00\x01"
    assert mode(path) == 0o644 and mode(binary) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]


def test_create_whole_makes_a_new_file_whole_and_never_replaces_one(tmp_path):
    path = tmp_path / "deep/study.db"
    seen = []

    def write(tmp):
        seen.append(path.exists())  # while it is being written, the target does not exist yet
        tmp.write_text("whole")

    assert create_whole(path, write) is True and path.read_text() == "whole" and seen == [False]
    assert mode(path) == 0o644
    assert create_whole(path, lambda tmp: tmp.write_text("another")) is False and path.read_text() == "whole"

    def made_meanwhile(tmp):  # another writer creates it while this one writes
        path.with_name("late.db").write_text("theirs")
        tmp.write_text("mine")

    assert create_whole(path.with_name("late.db"), made_meanwhile) is False
    assert path.with_name("late.db").read_text() == "theirs"
    assert sorted(p.name for p in path.parent.iterdir()) == ["late.db", "study.db"]  # no temporary file left


def test_write_json_is_sorted_indented_and_ends_with_a_newline(tmp_path):
    path = write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    text = path.read_text()
    assert text == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"
    assert read_json(path, RunError, "rerun it") == {"a": [1, 2], "b": 1}
    assert mode(path) == 0o644


def test_read_json_on_a_truncated_file_raises_the_given_error_naming_the_path(tmp_path):
    path = write_json(tmp_path / "t.json", {"history": [1, 2, 3]})
    path.write_text(path.read_text()[:12])
    for error in (RunError, DatasetError):
        with pytest.raises(error, match=r"is not valid JSON \(.* at line \d+, column \d+\), perhaps truncated; rerun it") as info:
            read_json(path, error, "rerun it")
        assert type(info.value) is error and info.value.path == str(path)
        assert str(info.value).startswith(f"{path}: ")


def test_read_json_on_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(RunError, match="nope.json: missing; rerun it") as info:
        read_json(tmp_path / "nope.json", RunError, "rerun it")
    assert info.value.path == str(tmp_path / "nope.json") and isinstance(info.value.__cause__, FileNotFoundError)
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(RunError, match=r"latin1.json: cannot be read \(.*\); rerun it"):
        read_json(tmp_path / "latin1.json", RunError, "rerun it")
    with pytest.raises(RunError, match="a_dir: cannot be read"):
        (tmp_path / "a_dir").mkdir()
        read_json(tmp_path / "a_dir", RunError, "rerun it")


# ---------------------------------------------------------------------------- Ray Tune's storage


def test_tunes_storage_filesystem_keeps_the_old_file_when_its_writer_is_killed(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "search_gen_state-x.json"
    target.write_bytes(b"the whole old state")
    writer = f"""
from rbmsearch.storage import storage_filesystem
f = storage_filesystem({str(tmp_path)!r}).open_output_stream({str(target)!r})
f.write(b"half of the new")
f.flush()
print("written", flush=True)
import time; time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"the whole old state"
    assert [p.name for p in tmp_path.glob(".*.partial")], "the half-written file went somewhere else"


def test_tunes_storage_filesystem_copies_whole_trees_and_travels_to_workers(tmp_path):
    import pickle

    import pyarrow.fs

    from rbmsearch.storage import storage_filesystem

    fs = pickle.loads(pickle.dumps(storage_filesystem(str(tmp_path))))  # Ray pickles it into every trial
    (tmp_path / "src/sub").mkdir(parents=True)
    blob = os.urandom(300_000)
    (tmp_path / "src/sub/ckpt.data").write_bytes(blob)
    pyarrow.fs.copy_files(str(tmp_path / "src"), str(tmp_path / "dst"), source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    assert (tmp_path / "dst/sub/ckpt.data").read_bytes() == blob
    assert mode(tmp_path / "dst/sub/ckpt.data") == 0o644
    fs.copy_file(str(tmp_path / "dst/sub/ckpt.data"), str(tmp_path / "copy.data"))
    assert (tmp_path / "copy.data").read_bytes() == blob
    assert not list(tmp_path.rglob(".*.partial"))  # nothing left behind by complete writes
    assert storage_filesystem("s3://bucket/runs") is None  # object stores replace whole objects already
