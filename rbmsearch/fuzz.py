"""Pathological MIDI files, generated, for checking that imports survive hostile input.

    python -m rbmsearch.bench fuzz --files N      # the same harness at any size

`make_corpus(folder, n, seed)` writes n files: good ones (rolls written by `midi.write_midi`,
so their expected roll is known exactly) and broken ones made from them by byte flips,
truncations, insertions, impossible meta events, absurd ticks per beat, huge delta-times,
type 2 and 3 headers and files of 10,000 tracks. `check_import` imports the folder as one
dataset and says what went wrong: a crash, a good file changed, a file neither imported nor
listed as skipped. Reads and writes only the folder it is given.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rbmsearch.midi import NUM_PITCHES, write_midi

__all__ = ["KINDS", "FuzzReport", "check_import", "make_corpus"]

KINDS = ("good", "flip", "truncate", "insert", "meta", "division", "delta", "header_type", "many_tracks")
STEPS_PER_QUARTER = 4


def _good_roll(rng: np.random.Generator) -> np.ndarray:
    steps = int(rng.integers(8, 64))
    roll = np.zeros((steps, NUM_PITCHES), bool)
    for _ in range(int(rng.integers(1, 12))):
        pitch, start = int(rng.integers(20, 70)), int(rng.integers(0, steps - 1))
        roll[start : start + int(rng.integers(1, 8)), pitch] = True
    return roll


def _track(body: bytes) -> bytes:
    return b"MTrk" + struct.pack(">I", len(body)) + body


def _header(midi_type: int, tracks: int, division: int) -> bytes:
    return b"MThd" + struct.pack(">IHHH", 6, midi_type, tracks, division & 0xFFFF)


NOTE = bytes.fromhex("00903c50") + b"\x60" + bytes.fromhex("803c00")
END = bytes.fromhex("00ff2f00")


def _broken(kind: str, good: bytes, rng: np.random.Generator) -> bytes:
    """One pathological file of `kind`, most of them derived from the bytes of a good file."""
    data = bytearray(good)
    if kind == "flip":
        for i in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[i] ^= 1 << int(rng.integers(8))
        return bytes(data)
    if kind == "truncate":
        return bytes(data[: int(rng.integers(0, len(data)))])
    if kind == "insert":
        at = int(rng.integers(0, len(data)))
        return bytes(data[:at]) + rng.bytes(int(rng.integers(1, 16))) + bytes(data[at:])
    if kind == "meta":  # an impossible key signature, or a meta event longer than its track
        body = rng.choice([bytes.fromhex("00ff590209" "05"), bytes.fromhex("00ff51") + b"\x7f\x07\xa1\x20", bytes.fromhex("00ff01") + b"\x8f\xff\xff\x7f"])
        return _header(1, 1, 96) + _track(body + NOTE + END)
    if kind == "division":
        return _header(1, 1, int(rng.choice([0, 1, 0x7FFF, 0x8000, 0xE728, 0xFFFF]))) + _track(NOTE + END)
    if kind == "delta":  # a note "held" for up to 2**28 ticks
        delta = bytes([0x80 | int(rng.integers(1, 0x80)), 0xFF, 0xFF, 0x7F])
        return _header(1, 1, int(rng.choice([1, 96, 480]))) + _track(bytes.fromhex("00903c50") + delta + bytes.fromhex("803c00") + END)
    if kind == "header_type":
        return _header(int(rng.choice([2, 3, 7, 0xFFFF])), 1, 96) + _track(NOTE + END)
    if kind == "many_tracks":
        return _header(1, 10_000, 96) + _track(NOTE + END) * 10_000
    raise ValueError(f"One of {KINDS} must be specified for kind, but got {kind!r}.")


def make_corpus(folder: str | Path, n: int, seed: int = 0) -> dict[str, tuple[str, np.ndarray | None]]:
    """Write n files into `folder`; returns name -> (kind, expected roll for good files, else None).

    About a third are good; the rest cycle through the broken kinds. Only a few 10,000-track
    files are made (each is 140 kB), whatever n is.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    broken = [k for k in KINDS if k != "good"]
    out: dict[str, tuple[str, np.ndarray | None]] = {}
    for i in range(n):
        roll = _good_roll(rng)
        name = f"{i:05d}.mid"
        write_midi(roll, folder / name, steps_per_quarter=STEPS_PER_QUARTER)
        kind = "good" if i % 3 == 0 else broken[i % len(broken)]
        if kind == "many_tracks" and sum(k == "many_tracks" for k, _ in out.values()) >= 3:
            kind = "flip"
        if kind != "good":
            (folder / name).write_bytes(_broken(kind, (folder / name).read_bytes(), rng))
        # The reader ends a roll at its last sounding step, so trailing silence is not expected back.
        sounding = np.flatnonzero(roll.any(axis=1))
        out[name] = (kind, roll[: sounding[-1] + 1] if kind == "good" else None)
    return out


@dataclass
class FuzzReport:
    files: int
    imported: int
    skipped: int
    problems: list[str] = field(default_factory=list)  # empty when the import held
    skipped_by_kind: dict[str, int] = field(default_factory=dict)


def check_import(folder: str | Path, corpus: dict[str, tuple[str, np.ndarray | None]], workers: int = 1) -> FuzzReport:
    """Import `folder` as one dataset and compare with what `make_corpus` wrote."""
    from rbmsearch.data import BuildOptions, load_source

    dataset = load_source(str(folder), BuildOptions(steps_per_quarter=STEPS_PER_QUARTER, workers=workers, progress=False, valid_fraction=0.0, test_fraction=0.0))
    pieces = {p.name: p.roll for p in dataset.pieces}
    skipped = {s.path: s.reason for s in dataset.skipped}
    problems = [f"{name}: neither imported nor listed as skipped" for name in corpus if name not in pieces and name not in skipped]
    problems += [f"{name}: skipped without a reason" for name, reason in skipped.items() if not reason.strip()]
    for name, (kind, roll) in corpus.items():
        if kind == "good" and (name not in pieces or not np.array_equal(pieces[name], roll)):
            problems.append(f"{name}: a good file " + ("was skipped: " + skipped.get(name, "") if name not in pieces else "imported changed"))
    by_kind: dict[str, int] = {}
    for name in skipped:
        by_kind[corpus[name][0]] = by_kind.get(corpus[name][0], 0) + 1
    return FuzzReport(len(corpus), len(pieces), len(skipped), problems, by_kind)
