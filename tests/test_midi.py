"""rbmsearch.midi: MIDI <-> piano roll, on tiny files built in each test."""

from __future__ import annotations

import subprocess
import sys

import mido
import numpy as np
import pytest

from rbmsearch.midi import (
    MAX_MIDI_PITCH,
    MIN_MIDI_PITCH,
    NUM_PITCHES,
    MIDIConversionError,
    pitch_lists_to_roll,
    read_midi,
    roll_to_pitch_lists,
    write_midi,
)

Q = 480  # ticks per quarter in the fixtures; one step is Q // 4 at the default grid
S = Q // 4


def roll_of(steps: int, cells: list[tuple[int, int, int]]) -> np.ndarray:
    """Expected roll from (pitch, first_step, end_step) runs."""
    roll = np.zeros((steps, NUM_PITCHES), dtype=bool)
    for pitch, a, b in cells:
        roll[a:b, pitch - MIN_MIDI_PITCH] = True
    return roll


def test_reads_notes_onto_the_grid(make_midi):
    path = make_midi("a.mid", [(60, 90, 0, Q), (64, 90, Q, 2 * Q), (67, 90, 0, 2 * Q)])
    r = read_midi(path)
    np.testing.assert_array_equal(r.roll, roll_of(8, [(60, 0, 4), (64, 4, 8), (67, 0, 8)]))
    assert (r.out_of_range, r.drum_notes, r.unterminated, r.merged_restrikes, r.too_short) == (0, 0, 0, 0, 0)
    assert r.qpm == 120.0


def test_roll_midi_roll_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    for steps_per_quarter in (1, 3, 4, 7):
        roll = rng.random((50, NUM_PITCHES)) < 0.1
        roll[-3:] = False  # trailing silence must survive too
        roll[:, 0] = True  # a note held for the whole piece, at the lowest key
        roll[:, -1] = False
        roll[10:20, -1] = True  # the highest key
        path = tmp_path / f"r{steps_per_quarter}.mid"
        write_midi(roll, path, steps_per_quarter=steps_per_quarter, qpm=90, program=19)
        back = read_midi(path, steps_per_quarter=steps_per_quarter)
        np.testing.assert_array_equal(back.roll, roll)
        assert back.qpm == pytest.approx(90, abs=1e-3)
        programs = [m.program for m in mido.MidiFile(path).tracks[0] if m.type == "program_change"]
        assert programs == [19]


def test_empty_roll_round_trips_as_silence(tmp_path):
    write_midi(np.zeros((8, NUM_PITCHES), dtype=bool), tmp_path / "e.mid")
    with pytest.raises(MIDIConversionError, match="contains no notes"):
        read_midi(tmp_path / "e.mid")


def test_velocity_zero_note_on_is_a_note_off(tmp_path):
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=80, time=0),
            mido.Message("note_on", note=60, velocity=0, time=Q),  # off, the running-status way
            mido.Message("note_on", note=62, velocity=80, time=0),
            mido.Message("note_on", note=62, velocity=0, time=Q),
        ]
    )
    mido.MidiFile(type=0, ticks_per_beat=Q, tracks=[track]).save(tmp_path / "v0.mid")
    np.testing.assert_array_equal(read_midi(tmp_path / "v0.mid").roll, roll_of(8, [(60, 0, 4), (62, 4, 8)]))


def test_overlapping_notes_of_one_pitch_first_in_first_out(tmp_path):
    # on@0, on@1q, off@2q (closes the first), off@3q (closes the second): sounds 0..3q.
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=80, time=0),
            mido.Message("note_on", note=60, velocity=80, time=Q),
            mido.Message("note_off", note=60, time=Q),
            mido.Message("note_off", note=60, time=Q),
        ]
    )
    mido.MidiFile(type=0, ticks_per_beat=Q, tracks=[track]).save(tmp_path / "ov.mid")
    r = read_midi(tmp_path / "ov.mid")
    np.testing.assert_array_equal(r.roll, roll_of(12, [(60, 0, 12)]))
    assert r.merged_restrikes == 1 and r.unterminated == 0


def test_repeated_note_merges_into_one_held_note_and_is_counted(make_midi):
    r = read_midi(make_midi("rep.mid", [(60, 80, 0, Q), (60, 80, Q, 2 * Q), (60, 80, 3 * Q, 4 * Q)]))
    np.testing.assert_array_equal(r.roll, roll_of(16, [(60, 0, 8), (60, 12, 16)]))
    assert r.merged_restrikes == 1  # the second note; the third follows a rest


def test_drums_are_left_out_by_default_and_kept_on_request(tmp_path, make_midi):
    notes = [(60, 80, 0, Q)]
    piano = make_midi("p.mid", notes)
    mixed = mido.MidiFile(piano)
    drum_track = mido.MidiTrack(
        [mido.Message("note_on", note=36, velocity=100, channel=9, time=0), mido.Message("note_off", note=36, channel=9, time=2 * Q)]
    )
    mixed.tracks.append(drum_track)
    mixed.save(tmp_path / "mixed.mid")
    r = read_midi(tmp_path / "mixed.mid")
    np.testing.assert_array_equal(r.roll, roll_of(4, [(60, 0, 4)]))
    assert r.drum_notes == 1
    r = read_midi(tmp_path / "mixed.mid", include_drums=True)
    np.testing.assert_array_equal(r.roll, roll_of(8, [(60, 0, 4), (36, 0, 8)]))
    assert r.drum_notes == 0

    make_midi("drums.mid", [(36, 100, 0, Q)], channel=9)
    with pytest.raises(MIDIConversionError, match="drum channel 10.*include_drums"):
        read_midi(tmp_path / "drums.mid")


def test_out_of_range_pitches_are_dropped_and_counted(make_midi):
    r = read_midi(make_midi("range.mid", [(MIN_MIDI_PITCH - 1, 80, 0, Q), (MAX_MIDI_PITCH + 1, 80, 0, Q), (MIN_MIDI_PITCH, 80, 0, Q), (MAX_MIDI_PITCH, 80, 0, Q)]))
    np.testing.assert_array_equal(r.roll, roll_of(4, [(MIN_MIDI_PITCH, 0, 4), (MAX_MIDI_PITCH, 0, 4)]))
    assert r.out_of_range == 2


def test_tempo_and_time_signature_changes_do_not_move_notes(make_midi):
    notes = [(60, 80, 0, Q), (62, 80, Q, 3 * Q), (64, 80, 3 * Q, 6 * Q)]
    plain = read_midi(make_midi("plain.mid", notes))
    changes = [
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0),
        mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60), time=Q),
        mido.MetaMessage("time_signature", numerator=6, denominator=8, time=3 * Q),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(180), time=3 * Q + 7),
    ]
    changed = read_midi(make_midi("changed.mid", notes, meta=changes))
    np.testing.assert_array_equal(changed.roll, plain.roll)
    np.testing.assert_array_equal(plain.roll, roll_of(24, [(60, 0, 4), (62, 4, 12), (64, 12, 24)]))
    assert changed.qpm == pytest.approx(100, abs=1e-3)  # the tempo in force at the start


def test_type_0_and_type_1_and_other_resolutions_agree(make_midi):
    notes = [(60, 80, 0, Q), (67, 80, Q // 2, 2 * Q)]
    one = read_midi(make_midi("t1.mid", notes))
    zero = read_midi(make_midi("t0.mid", notes, midi_type=0))
    coarse = read_midi(make_midi("t96.mid", [(p, v, s * 96 // Q, e * 96 // Q) for p, v, s, e in notes], ticks_per_beat=96))
    np.testing.assert_array_equal(zero.roll, one.roll)
    np.testing.assert_array_equal(coarse.roll, one.roll)


def test_sampling_forgives_late_starts_and_drops_notes_between_grid_points(make_midi):
    # At one step per quarter: a quarter played 10% late and released 5% early still fills
    # its step; a passing eighth between two beats sounds at no sampling point.
    notes = [(60, 80, Q // 10, Q - Q // 20), (62, 80, Q, Q + Q // 2), (64, 80, Q + Q // 2, 2 * Q)]
    r = read_midi(make_midi("late.mid", notes), steps_per_quarter=1)
    np.testing.assert_array_equal(r.roll, roll_of(2, [(60, 0, 1), (62, 1, 2)]))
    assert r.too_short == 1


def test_unterminated_note_is_ended_at_the_end_of_the_file(tmp_path):
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=80, time=0),
            mido.Message("note_on", note=64, velocity=80, time=0),
            mido.Message("note_off", note=64, time=Q),
            mido.MetaMessage("end_of_track", time=Q),
        ]
    )
    mido.MidiFile(type=0, ticks_per_beat=Q, tracks=[track]).save(tmp_path / "hang.mid")
    r = read_midi(tmp_path / "hang.mid")
    np.testing.assert_array_equal(r.roll, roll_of(8, [(60, 0, 8), (64, 0, 4)]))
    assert r.unterminated == 1


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda good: good[: len(good) // 2], "truncated or corrupt"),
        (lambda good: bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)), "truncated or corrupt"),
        (lambda good: b"", "truncated or corrupt"),
    ],
    ids=["truncated", "random-bytes", "zero-bytes"],
)
def test_corrupt_files_raise_a_conversion_error_naming_the_file(make_midi, tmp_path, content, reason):
    good = make_midi("good.mid", [(60, 80, i * Q, (i + 1) * Q) for i in range(40)]).read_bytes()
    bad = tmp_path / "bad.mid"
    bad.write_bytes(content(good))
    with pytest.raises(MIDIConversionError, match=reason) as info:
        read_midi(bad)
    assert info.value.path == str(bad) and str(bad) in str(info.value)


def test_missing_and_noteless_files(make_midi, tmp_path):
    with pytest.raises(MIDIConversionError, match="no such file"):
        read_midi(tmp_path / "nope.mid")
    with pytest.raises(MIDIConversionError, match="contains no notes"):
        read_midi(make_midi("empty.mid", []))


def test_type_2_is_refused_with_the_fix(tmp_path):
    mido.MidiFile(type=2, tracks=[mido.MidiTrack([mido.Message("note_on", note=60, time=0)])]).save(tmp_path / "t2.mid")
    with pytest.raises(MIDIConversionError, match="type 2.*convert it to type 0 or 1"):
        read_midi(tmp_path / "t2.mid")


def test_write_replaces_a_file_only_with_a_complete_one(tmp_path):
    path = tmp_path / "keep.mid"
    roll = roll_of(4, [(60, 0, 4)])
    write_midi(roll, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="shape"):
        write_midi(np.zeros((4, 12), dtype=bool), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mid"]  # no temporary left behind


def test_pitch_lists_round_trip_and_range_check():
    frames = [[], [60, 64, 67], [21], [108], []]
    roll = pitch_lists_to_roll(frames)
    assert roll.shape == (5, NUM_PITCHES)
    assert roll_to_pitch_lists(roll) == frames
    with pytest.raises(ValueError, match="step 1 holds 20"):
        pitch_lists_to_roll([[60], [20]])


def test_cli_prints_a_summary(make_midi):
    path = make_midi("cli.mid", [(60, 80, 0, Q), (64, 80, 0, Q)])
    out = subprocess.run([sys.executable, "-m", "rbmsearch.midi", str(path)], capture_output=True, text=True, check=True).stdout
    assert "4 steps at 4 per quarter, 2.00 notes per step, pitches 60..64" in out
