"""Shared test fixtures: tiny MIDI files built from (pitch, velocity, start, end) tuples."""

from __future__ import annotations

from pathlib import Path

import mido
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
