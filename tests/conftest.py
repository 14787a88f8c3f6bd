"""Shared test fixtures.

    make_midi       tiny MIDI files built from (pitch, velocity, start, end) tuples
    toy_dataset     a learnable toy Dataset (session-wide), and toy_parquet, the same as a Parquet file
    tiny_config     TrainConfig keyword arguments of a run that trains in seconds
    tiny_run        a run directory trained with tiny_config on the toy data (session-wide, read-only)
    sticky_model    an RnnRbm whose Gibbs chains stick where they start
    png_size        png_size(path) -> (width, height)

Test modules use these through pytest's fixtures and never import this file or each other.

The `slow` marker (declared in pyproject.toml) is on every test that starts Ray, a cluster or
Chromium, and on the end-to-end tests that run a stage's command in a subprocess or train for
many epochs: `python -m pytest -m "not slow"` is the quick loop, `python -m pytest` runs all.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import mido
import numpy as np
import pytest


def write_midi_file(
    path: Path,
    notes: list[tuple[int, int, int, int]],
    ticks_per_beat: int = 480,
    channel: int = 0,
    midi_type: int = 1,
    meta: list[mido.MetaMessage] | None = None,
) -> Path:
    """Write notes given as (pitch, velocity, start_tick, end_tick) into a MIDI file.

    Type 1 files get a conductor track with `meta` (absolute times in `.time`) and one note
    track; type 0 files put everything in one track.
    """
    events = []
    for pitch, velocity, start, end in notes:
        events.append((start, 1, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)))
        events.append((end, 0, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    meta_events = [(m.time, -1, m.copy(time=0)) for m in (meta or [])]

    def track_of(items):
        track, last = mido.MidiTrack(), 0
        for tick, _, msg in sorted(items, key=lambda e: (e[0], e[1])):
            track.append(msg.copy(time=tick - last))
            last = tick
        return track

    if midi_type == 0:
        tracks = [track_of(events + meta_events)]
    else:
        tracks = [track_of(meta_events), track_of(events)]
    mido.MidiFile(type=midi_type, ticks_per_beat=ticks_per_beat, tracks=tracks).save(path)
    return path


@pytest.fixture
def make_midi(tmp_path):
    """make_midi(name, notes, **kwargs) -> path of a new MIDI file in tmp_path."""

    def make(name: str, notes, **kwargs) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_midi_file(path, notes, **kwargs)

    return make


# ---------------------------------------------------------------------------- a toy dataset and tiny runs

# TrainConfig keyword arguments of a run that trains in seconds on the toy dataset.
TINY_CONFIG = dict(
    n_hidden=12,
    n_recurrent=8,
    pretrain_epochs=1,
    epochs=2,
    cd_k=2,
    window=16,
    batch_size=4,
    eval_ais_runs=4,
    eval_ais_betas=20,
    eval_acc_samples=2,
    monitor_frames=100,
    monitor_ais_runs=4,
    monitor_ais_betas=50,
)


def build_toy_dataset(n_pieces: int = 12, seed: int = 0):
    """Arpeggios over a held bass on one of two roots: learnable, a few hundred frames in all."""
    from rbmsearch.data import Dataset, DatasetMeta, Piece
    from rbmsearch.midi import NUM_PITCHES

    rng = np.random.default_rng(seed)
    pieces = []
    for i in range(n_pieces):
        steps = int(rng.integers(20, 40))
        roll = np.zeros((steps, NUM_PITCHES), dtype=bool)
        root, phase = (36, 43)[i % 2], int(rng.integers(4))
        roll[:, root - 12] = True
        for t in range(steps):
            roll[t, root + (0, 4, 7, 12)[(t + phase) % 4]] = True
        pieces.append(Piece(f"p{i}", ("train", "train", "valid", "test")[i % 4], roll))
    return Dataset(DatasetMeta(source="toy", steps_per_quarter=4, qpm=100.0), tuple(pieces))


@pytest.fixture(scope="session")
def toy_dataset():
    """The toy Dataset: 12 pieces (6 train, 3 valid, 3 test), grid 4 steps per quarter, 100 qpm.
    Shared by the whole session: read it, never change it."""
    return build_toy_dataset()


@pytest.fixture(scope="session")
def toy_parquet(toy_dataset, tmp_path_factory) -> Path:
    """The toy dataset written to a Parquet file (read-only for the tests)."""
    from rbmsearch.data import write_dataset

    return write_dataset(toy_dataset, tmp_path_factory.mktemp("data") / "toy.parquet")


@pytest.fixture(scope="session")
def tiny_config() -> Mapping:
    """TrainConfig keyword arguments, read-only: `TrainConfig(**tiny_config)`, `{**tiny_config, "epochs": 4}`."""
    return MappingProxyType(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_run(toy_parquet, tiny_config, tmp_path_factory) -> Path:
    """A run directory trained for 2 epochs on the toy data, without the test evaluation.

    Shared by the whole session: tests read it or copy it, and write their outputs elsewhere.
    """
    from rbmsearch.config import TrainConfig
    from rbmsearch.data import read_dataset
    from rbmsearch.train import train

    run = tmp_path_factory.mktemp("tiny") / "run"
    train(TrainConfig(**tiny_config), read_dataset(toy_parquet), run, data_path=str(toy_parquet), evaluate_test=False)
    return run


@pytest.fixture
def sticky_model():
    """An RBM whose hidden units copy the visible ones and back: every note has two sticky
    states, so a Gibbs chain stays near where it starts for many steps, and AIS needs many
    temperatures."""
    from rbmsearch.midi import NUM_PITCHES
    from rbmsearch.model import ModelConfig, RnnRbm

    sticky = RnnRbm(ModelConfig(n_hidden=NUM_PITCHES, n_recurrent=8), seed=0)
    sticky.W.assign(10.0 * np.eye(NUM_PITCHES, dtype=np.float32))
    for name, value in (("bv", -5.0), ("bh", -5.0), ("Wuv", 0.0), ("Wuh", 0.0)):
        getattr(sticky, name).assign(np.full(getattr(sticky, name).shape, value, np.float32))
    return sticky


# ---------------------------------------------------------------------------- pictures


def read_png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails the test if `path` is not a PNG."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def png_size():
    """png_size(path) -> (width, height) of a PNG file."""
    return read_png_size


@pytest.fixture
def lean_smoke(tmp_path) -> Path:
    """The smoke space with the cheapest end stage (one trial rendered, one sample, nothing to
    compare), written to a file: for tests of a search's resume, not of what it leaves."""
    from rbmsearch.space import shipped_spaces

    text = shipped_spaces()["smoke"].read_text()
    for key, value in (("samples", 1), ("references", 0), ("continuations", 0), ("render_top", 1)):
        text, n = re.subn(rf"^  {key}: \d+$", f"  {key}: {value}", text, flags=re.M)
        assert n == 1, key
    path = tmp_path / "lean-smoke.yaml"
    path.write_text(text)
    return path
