"""MIDI files <-> binary piano rolls, on `mido`.

    python -m rbmsearch.midi FILE.mid [--steps-per-quarter N]   # print what a file holds

Reads a MIDI file (type 0 or 1) into the one piano-roll layout, a `(steps, 88)` bool array
(row = time step, column = pitch - MIN_MIDI_PITCH), and writes such a roll back. The rules
(README, "Data"): the grid is in ticks, so tempo changes move no notes; step i samples the
music `SAMPLE_LAG` of a step after its grid point, as JSB was sampled; all channels merge
except General MIDI drums; velocity-0 note-ons are note-offs and overlaps of one pitch close
first in, first out; a note struck again as it ends merges into one held note, so
roll -> MIDI -> roll is exact up to trailing silence (a read roll ends at its last sounding
step). What was dropped or merged is counted in `MidiRoll`.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import mido
import numpy as np
from mido.midifiles.meta import KeySignatureError

from rbmsearch.errors import MIDIConversionError
from rbmsearch.files import atomic_write

__all__ = [
    "DEFAULT_QPM",
    "DEFAULT_STEPS_PER_QUARTER",
    "DRUM_CHANNEL",
    "MAX_MIDI_PITCH",
    "MIN_MIDI_PITCH",
    "MAX_STEPS",
    "MIDIConversionError",
    "MIDI_PARSE_ERRORS",
    "MidiRoll",
    "NUM_PITCHES",
    "notes_to_roll",
    "read_midi",
    "roll_to_pitch_lists",
    "pitch_lists_to_roll",
    "write_midi",
]

MIN_MIDI_PITCH = 21  # A0, the lowest piano key
MAX_MIDI_PITCH = 108  # C8, the highest piano key
NUM_PITCHES = MAX_MIDI_PITCH - MIN_MIDI_PITCH + 1  # 88 piano keys: the roll's width
DRUM_CHANNEL = 9  # General MIDI percussion: channel 10, counted from 1
DEFAULT_STEPS_PER_QUARTER = 4  # sixteenth notes: fine enough for most tonal music
DEFAULT_QPM = 120.0
SAMPLE_LAG = 0.25  # each step samples the music this many steps after its grid point  # the MIDI standard's tempo when a file sets none
# A file whose last event lies this many ticks in is almost surely corrupt (pretty-midi's
# heuristic): even at 960 ticks per beat it would be over 10,000 beats long.
MAX_TICK = 10_000_000
# Everything mido raises on malformed input, in one list: each means "this file is bad" (an
# impossible key signature raises mido's own KeySignatureError). Anything else is a bug.
MIDI_PARSE_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, KeySignatureError)
# The largest roll read_midi builds unless told otherwise: 2**20 steps (92 MB of bool), over
# 14 hours at 120 quarter notes per minute and 4 steps per quarter. Larger rolls come from
# corrupt files (a note "held" for millions of ticks), so they are refused before allocation.
MAX_STEPS = 1 << 20


@dataclass(frozen=True)
class MidiRoll:
    """What `read_midi` found in one file."""

    roll: np.ndarray  # (steps, NUM_PITCHES) bool
    qpm: float  # the tempo in force at tick 0, quarter notes per minute
    out_of_range: int  # notes dropped for lying outside MIN_MIDI_PITCH..MAX_MIDI_PITCH
    drum_notes: int  # notes on DRUM_CHANNEL left out (0 when drums are included)
    unterminated: int  # notes never switched off, ended at the end of the file
    merged_restrikes: int  # notes struck again as they ended, merged into one held note
    too_short: int  # notes that fell between two grid points, dropped


def notes_to_roll(notes: np.ndarray, ticks_per_step: float) -> tuple[np.ndarray, int, int]:
    """Sample notes on the step grid: step i holds the pitches sounding at time i + SAMPLE_LAG.

    Times are in steps (ticks / ticks_per_step). Sampling a little after each grid point
    forgives notes played slightly late, ignores notes that end just past the next grid point,
    and drops notes that sound at no sampling point, like passing eighths on a quarter-note
    grid: this is how the JSB benchmark samples its chorales, once per quarter note.

    Args:
        notes: (n, 3) int64 rows of (pitch, start_tick, end_tick), pitches in range.
        ticks_per_step: the grid, > 0.
    Returns:
        roll: (steps, NUM_PITCHES) bool, steps = one past the last sampled step (0 if none).
        merged: notes that started where the same pitch was already sounding or had just
            ended (re-strikes, overlaps): the binary roll shows them as one held note.
        too_short: notes dropped for sounding at no sampling point.
    """
    start = np.ceil(notes[:, 1] / ticks_per_step - SAMPLE_LAG).astype(np.int64)  # first sampled step
    end = np.ceil(notes[:, 2] / ticks_per_step - SAMPLE_LAG).astype(np.int64)  # one past the last
    kept = end > start
    roll = np.zeros((int(end[kept].max(initial=0)), NUM_PITCHES), dtype=bool)
    merged = 0
    for i in np.flatnonzero(kept)[np.lexsort((start[kept], notes[kept, 0]))]:  # by pitch, then start
        col = notes[i, 0] - MIN_MIDI_PITCH
        merged += bool(roll[max(start[i] - 1, 0) : start[i] + 1, col].any())
        roll[start[i] : end[i], col] = True
    return roll, merged, int((~kept).sum())


def _load(path: Path, file: BinaryIO | None) -> mido.MidiFile:
    if file is None and not path.is_file():
        what = "a broken symbolic link" if path.is_symlink() else "no such file"
        raise MIDIConversionError(path, f"{what}; check the path")
    try:
        midi = mido.MidiFile(path) if file is None else mido.MidiFile(file=file)
    except MIDI_PARSE_ERRORS as e:
        empty = file is None and path.stat().st_size == 0
        detail = "the file is empty" if empty else f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__}: it ends too early"
        raise MIDIConversionError(path, f"not a readable MIDI file ({detail}); it is likely truncated or corrupt") from e
    if midi.type == 2:
        raise MIDIConversionError(
            path, "MIDI type 2 (independent sequences) is not supported; convert it to type 0 or 1"
        )
    if midi.type not in (0, 1):
        raise MIDIConversionError(path, f"the header says MIDI type {midi.type}, but only types 0, 1 and 2 exist; it is likely corrupt")
    if not 0 < midi.ticks_per_beat < 0x8000:
        division = midi.ticks_per_beat & 0xFFFF  # mido reads the header's 16 bits as signed
        raise MIDIConversionError(
            path,
            f"the header's time division is 0x{division:04X}, which is "
            + ("SMPTE time code (not supported; " if division & 0x8000 else "0 ticks per beat (")
            + "only metrical time, 1..32767 ticks per beat, is read); it is likely corrupt or needs converting",
        )
    return midi


def read_midi(
    path: str | os.PathLike,
    steps_per_quarter: int = DEFAULT_STEPS_PER_QUARTER,
    include_drums: bool = False,
    file: BinaryIO | None = None,
    max_steps: int = MAX_STEPS,
) -> MidiRoll:
    """Read a type 0 or 1 MIDI file into a binary piano roll (see the module docstring).

    `file`, when given, is read instead of `path`, which then only names it in errors.
    A roll longer than `max_steps` is refused before it is allocated.

    Raises:
        MIDIConversionError: the file is missing, corrupt, of type 2, too long, or has no notes to keep.
    """
    if steps_per_quarter <= 0:
        raise ValueError(f"A positive value must be specified for steps_per_quarter, but got {steps_per_quarter}.")
    if max_steps <= 0:
        raise ValueError(f"A positive value must be specified for max_steps, but got {max_steps}.")
    path = Path(path)
    midi = _load(path, file)

    notes: list[tuple[int, int, int, int]] = []  # (channel, pitch, start_tick, end_tick)
    open_notes: dict[tuple[int, int], deque[int]] = defaultdict(deque)  # (channel, pitch) -> starts
    last_tick = 0
    events = []  # (tick, track, index, message) for the messages that matter here
    for t, track in enumerate(midi.tracks):
        tick = 0
        for i, msg in enumerate(track):
            tick += msg.time  # delta times are per track in type 1
            if msg.type in ("note_on", "note_off", "set_tempo"):
                events.append((tick, t, i, msg))
        last_tick = max(last_tick, tick)
    # One stream in tick order; ties keep track order, as mido.merge_tracks does (but faster).
    events.sort(key=lambda e: e[:3])
    qpm = next((mido.tempo2bpm(m.tempo) for tick, _, _, m in events if m.type == "set_tempo" and tick == 0), DEFAULT_QPM)
    for tick, _, _, msg in events:
        if msg.type == "set_tempo":
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            open_notes[key].append(tick)
        elif open_notes[key]:  # a note-off, or a note-on with velocity 0
            notes.append((*key, open_notes[key].popleft(), tick))
    if last_tick > MAX_TICK:
        raise MIDIConversionError(path, f"largest tick is {last_tick} (over {MAX_TICK}); it is likely corrupt")
    unterminated = sum(len(starts) for starts in open_notes.values())
    notes.extend((*key, start, last_tick) for key, starts in open_notes.items() for start in starts)

    arr = np.array(notes, dtype=np.int64).reshape(-1, 4)
    is_drum = arr[:, 0] == DRUM_CHANNEL
    drum_notes = 0 if include_drums else int(is_drum.sum())
    if not include_drums:
        arr = arr[~is_drum]
    in_range = (arr[:, 1] >= MIN_MIDI_PITCH) & (arr[:, 1] <= MAX_MIDI_PITCH)
    out_of_range = int((~in_range).sum())
    arr = arr[in_range, 1:]  # (n, 3): pitch, start, end
    if len(arr) == 0:
        if not notes:
            reason = "contains no notes"
        else:
            reason = (
                f"none of its {len(notes)} notes can be kept ({drum_notes} on the drum channel 10, "
                f"{out_of_range} outside pitches {MIN_MIDI_PITCH}..{MAX_MIDI_PITCH})"
            )
            if drum_notes:
                reason += "; pass include_drums=True (--include-drums) to keep drums"
        raise MIDIConversionError(path, reason)
    ticks_per_step = midi.ticks_per_beat / steps_per_quarter
    steps = math.ceil(int(arr[:, 2].max()) / ticks_per_step - SAMPLE_LAG)  # the roll notes_to_roll would build
    if steps > max_steps:
        raise MIDIConversionError(
            path,
            f"its roll would have {steps:,} steps ({steps * NUM_PITCHES / 2**30:.1f} GiB) at {steps_per_quarter} steps per "
            f"quarter, over the limit of {max_steps:,}; it is likely corrupt (a note lasting {int(arr[:, 2].max()):,} ticks "
            f"at {midi.ticks_per_beat} per beat); raise the limit (--max-steps) to read it anyway",
        )
    roll, merged, too_short = notes_to_roll(arr, ticks_per_step)
    if not roll.any():
        raise MIDIConversionError(
            path, f"all {too_short} notes are shorter than one step; use a finer grid (--steps-per-quarter)"
        )
    return MidiRoll(
        roll=roll,
        qpm=qpm,
        out_of_range=out_of_range,
        drum_notes=drum_notes,
        unterminated=unterminated,
        merged_restrikes=merged,
        too_short=too_short,
    )


def write_midi(
    roll: np.ndarray,
    path: str | os.PathLike,
    steps_per_quarter: int = DEFAULT_STEPS_PER_QUARTER,
    qpm: float = DEFAULT_QPM,
    program: int = 0,
    velocity: int = 80,
) -> None:
    """Write a (steps, NUM_PITCHES) bool roll as a type 0 MIDI file on channel 1.

    Each maximal run of True in a column becomes one note, so `read_midi` with the same
    `steps_per_quarter` gives back the same roll. `program` is the General MIDI program
    (0 = acoustic grand piano). The file is written to a temporary name and renamed, so an
    existing file is replaced only by a complete one.
    """
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != NUM_PITCHES:
        raise ValueError(f"A roll of shape (steps, {NUM_PITCHES}) must be specified, but got {roll.shape}.")
    if not 0 <= program <= 127 or not 1 <= velocity <= 127:
        raise ValueError(f"program must be in 0..127 and velocity in 1..127, but got {program} and {velocity}.")
    if steps_per_quarter <= 0 or qpm <= 0:
        raise ValueError(f"Positive values must be specified for steps_per_quarter and qpm, but got {steps_per_quarter} and {qpm}.")
    ticks_per_beat = 480 if 480 % steps_per_quarter == 0 else 96 * steps_per_quarter
    ticks_per_step = ticks_per_beat // steps_per_quarter

    # Pad with silence on both sides so that every run has an on edge and an off edge.
    padded = np.zeros((roll.shape[0] + 2, NUM_PITCHES), dtype=np.int8)
    padded[1:-1] = roll.astype(bool)
    edges = np.diff(padded, axis=0)  # (steps + 1, NUM_PITCHES): +1 note on, -1 note off
    steps, cols = np.nonzero(edges)
    # Sort by time, and at equal times put note-offs first so that a sounding pitch is free.
    order = np.lexsort((edges[steps, cols], steps))
    events: list[tuple[int, str, int]] = [(int(steps[i]) * ticks_per_step, "note_on" if edges[steps[i], cols[i]] > 0 else "note_off", int(cols[i]) + MIN_MIDI_PITCH) for i in order]

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm), time=0))
    track.append(mido.Message("program_change", program=program, channel=0, time=0))
    last = 0
    for tick, kind, pitch in events:
        track.append(mido.Message(kind, note=pitch, velocity=velocity if kind == "note_on" else 0, channel=0, time=tick - last))
        last = tick
    # End the track at the roll's length, so trailing silence survives the round trip.
    track.append(mido.MetaMessage("end_of_track", time=roll.shape[0] * ticks_per_step - last))
    midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, tracks=[track])

    atomic_write(path, lambda tmp: midi.save(str(tmp)))


def roll_to_pitch_lists(roll: np.ndarray) -> list[list[int]]:
    """(steps, NUM_PITCHES) bool -> one sorted list of sounding MIDI pitches per step."""
    return [(np.flatnonzero(frame) + MIN_MIDI_PITCH).tolist() for frame in roll]


def pitch_lists_to_roll(frames: list[list[int]] | list[tuple[int, ...]]) -> np.ndarray:
    """One list of MIDI pitches per step -> (steps, NUM_PITCHES) bool.

    Raises ValueError naming the first step with a pitch outside MIN..MAX_MIDI_PITCH.
    """
    roll = np.zeros((len(frames), NUM_PITCHES), dtype=bool)
    for t, frame in enumerate(frames):
        for p in frame:
            if not MIN_MIDI_PITCH <= p <= MAX_MIDI_PITCH:
                raise ValueError(f"Pitches in {MIN_MIDI_PITCH}..{MAX_MIDI_PITCH} were expected, but step {t} holds {p!r}.")
            roll[t, p - MIN_MIDI_PITCH] = True
    return roll


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.midi", description="Show what a MIDI file becomes as a piano roll.")
    parser.add_argument("file")
    parser.add_argument("--steps-per-quarter", type=int, default=DEFAULT_STEPS_PER_QUARTER)
    parser.add_argument("--include-drums", action="store_true")
    args = parser.parse_args(argv)
    try:
        r = read_midi(args.file, args.steps_per_quarter, args.include_drums)
    except MIDIConversionError as e:
        raise SystemExit(f"error: {e}") from e
    sounding = np.flatnonzero(r.roll.any(axis=0)) + MIN_MIDI_PITCH
    print(
        f"{args.file}: {r.roll.shape[0]} steps at {args.steps_per_quarter} per quarter, "
        f"{r.roll.sum(axis=1).mean():.2f} notes per step, pitches {sounding.min()}..{sounding.max()}, "
        f"{r.qpm:g} qpm; dropped {r.out_of_range} out of range, {r.drum_notes} drum notes; "
        f"{r.too_short} too short; {r.unterminated} unterminated, {r.merged_restrikes} re-strikes merged"
    )


if __name__ == "__main__":
    main()
