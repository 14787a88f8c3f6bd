"""Render a trained RNN-RBM's samples to MIDI, WAV and piano-roll PNG; the render stage.

    python -m rbmsearch.render RUN_DIR --out DIR [--num N] [--steps T] [--seed S] [--primer PIECE]
                               [--data DATA] [--references R] [--continuations C]
                               [--synth auto|fluidsynth|builtin] [--soundfont SF2] [--program P]

Reads a run directory (`rbmsearch.run`) and, for comparisons and statistics, its dataset.
Writes into DIR, each as .mid, .wav and .png (the dataset's grid and tempo):
`sample_<i>` (the model from silence, or continuing --primer), `reference_<i>` (training
pieces of the same length) and `continuation_<i>` (a test piece's first quarter, then the
model), and `stats.json` (what was rendered, with which sound, and `roll_stats` of the
samples beside the training data's). Audio: FluidSynth with a General MIDI soundfont when
installed, else a small built-in synthesizer; stats.json and the output say which.
Every file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rbmsearch.console import cli, import_tensorflow
from rbmsearch.errors import DatasetError, RenderError
from rbmsearch.files import atomic_write, make_dir, write_json
from rbmsearch.midi import MIN_MIDI_PITCH, NUM_PITCHES, write_midi
from rbmsearch.workers import set_small_op_threads

__all__ = ["RenderError", "beats_text", "default_program", "find_fluidsynth", "note_name", "render_run", "roll_stats", "synthesize", "write_png", "write_wav"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 22_050  # the built-in synthesizer's (mono) rate
FLUID_SAMPLE_RATE = 44_100  # FluidSynth's (stereo) rate
FLUID_GAIN = 0.5  # FluidSynth's master gain: dense chords do not clip, and PEAK_LEVEL is set after
PEAK_LEVEL = 0.89  # every rendered file's peak, as a fraction of full scale (-1 dBFS)
GIBBS_K = 25  # Gibbs steps per generated frame, as in the paper
# General MIDI soundfonts where Debian (fluid-soundfont-gm), Fedora, Arch and Homebrew put them.
SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
PIANO_PROGRAM, CHORALE_PROGRAM = 0, 19  # General MIDI: Acoustic Grand Piano, Church Organ
CHORALE_WORDS = re.compile(r"chorale|jsb|bach|hymn|choir", re.IGNORECASE)
GM_FAMILIES = ("piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
               "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects")  # fmt: skip
GM_NAMES = {0: "Acoustic Grand Piano", 1: "Bright Acoustic Piano", 4: "Electric Piano", 6: "Harpsichord", 11: "Vibraphone",
            16: "Drawbar Organ", 19: "Church Organ", 21: "Accordion", 24: "Nylon Guitar", 40: "Violin", 42: "Cello",
            46: "Harp", 48: "String Ensemble", 52: "Choir Aahs", 56: "Trumpet", 68: "Oboe", 71: "Clarinet", 73: "Flute"}  # fmt: skip
PNG_SIZE = (1000, 350)  # pixels (width, height) of every piano-roll picture
# Pitch classes of the major scale; a key's scale is this shifted to its tonic. The minor
# keys' scales (natural minor) are the major scales of their relative majors.
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


# ---------------------------------------------------------------------------- statistics


def roll_stats(rolls: list[np.ndarray]) -> dict:
    """Statistics of (steps, 88) bool rolls taken together.

    notes_per_frame: mean sounding notes per step; empty_frame_rate: share of silent steps;
    pitch_range: lowest and highest MIDI pitch heard; pitch_class_entropy: entropy in bits of
    the pitch-class histogram of sounding notes (0 = one class, log2 12 = 3.58 = all equal);
    scale_consistency: the share of sounding notes inside the best-fitting major (or relative
    minor) scale, as in Mogren's C-RNN-GAN metrics (1.0 = perfectly diatonic);
    repeat_rate: the share of notes sounding at step t > 0 that also sounded at t - 1.
    """
    frames = np.concatenate([np.asarray(r, bool) for r in rolls]) if rolls else np.zeros((0, NUM_PITCHES), bool)
    notes = int(frames.sum())
    out = {"frames": int(len(frames)), "notes": notes}
    if not len(frames):
        return out
    out["notes_per_frame"] = float(frames.sum(axis=1).mean())
    out["empty_frame_rate"] = float((frames.sum(axis=1) == 0).mean())
    if notes == 0:
        return out
    sounding = np.flatnonzero(frames.any(axis=0)) + MIN_MIDI_PITCH
    out["pitch_range"] = [int(sounding.min()), int(sounding.max())]
    per_pitch = frames.sum(axis=0)
    classes = np.zeros(12)
    np.add.at(classes, (np.arange(NUM_PITCHES) + MIN_MIDI_PITCH) % 12, per_pitch)
    p = classes[classes > 0] / notes
    out["pitch_class_entropy"] = float(-(p * np.log2(p)).sum())
    in_scale = [classes[[(tonic + step) % 12 for step in MAJOR_SCALE]].sum() for tonic in range(12)]
    out["scale_consistency"] = float(max(in_scale) / notes)
    repeats = later = 0
    for roll in rolls:
        roll = np.asarray(roll, bool)
        repeats += int((roll[1:] & roll[:-1]).sum())
        later += int(roll[1:].sum())
    out["repeat_rate"] = float(repeats / later) if later else 0.0
    return out


# ---------------------------------------------------------------------------- audio


def synthesize(roll: np.ndarray, steps_per_quarter: int, qpm: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A roll as mono float32 audio in [-1, 1], exactly steps * seconds_per_step long.

    Each note (a run of True in a column) is three decaying harmonics with a 5 ms attack and
    a 20 ms release, so chords sound like a soft piano rather than an organ. A note's sound
    depends only on its pitch and length, so each pitch's waveform is made once, as long as
    its longest note, and every note adds a slice of it.
    """
    roll = np.asarray(roll, bool)
    step_s = 60.0 / qpm / steps_per_quarter
    n = int(round(len(roll) * step_s * sample_rate))
    audio = np.zeros(n, np.float64)
    padded = np.zeros((len(roll) + 2, NUM_PITCHES), np.int8)
    padded[1:-1] = roll
    edges = np.diff(padded, axis=0)  # +1 at an onset step, -1 one past the last step
    bounds = np.round(np.arange(len(roll) + 1) * step_s * sample_rate).astype(int).clip(max=n)  # step -> sample
    release = int(0.02 * sample_rate)
    for pitch_index in np.flatnonzero(roll.any(axis=0)):
        starts = bounds[np.flatnonzero(edges[:, pitch_index] == 1)]
        ends = bounds[np.flatnonzero(edges[:, pitch_index] == -1)]
        t = np.arange((ends - starts).max()) / sample_rate
        freq = 440.0 * 2 ** ((pitch_index + MIN_MIDI_PITCH - 69) / 12)
        tone = sum(w * np.sin(2 * np.pi * freq * h * t) for h, w in ((1, 1.0), (2, 0.4), (3, 0.15)))
        wave_ = tone * np.exp(-t * 2.5) * np.minimum(1.0, t / 0.005)
        for a, b in zip(starts, ends):
            note = wave_[: b - a].copy()
            tail = min(release, b - a)
            note[len(note) - tail :] *= np.linspace(1.0, 0.0, tail)
            audio[a:b] += note
    peak = np.abs(audio).max()
    return (audio * (PEAK_LEVEL / peak) if peak > 0 else audio).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit mono PCM WAV, written atomically."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")

    def write(tmp: Path) -> None:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(sample_rate)
            f.writeframes(pcm.tobytes())

    return atomic_write(path, write)


def default_program(data: dict) -> int:
    """The General MIDI program that suits a dataset's kind: an organ for chorales, else a piano."""
    where = f"{data.get('source', '')} {data.get('path', '')}"
    return CHORALE_PROGRAM if CHORALE_WORDS.search(where) else PIANO_PROGRAM


def instrument_name(program: int) -> str:
    """'Church Organ' for 19; the GM family ('organ family') for a program without a name here."""
    return GM_NAMES.get(program) or f"{GM_FAMILIES[program // 8]} family"


def find_fluidsynth(soundfont: str | os.PathLike | None = None) -> tuple[str, str] | None:
    """(fluidsynth binary, soundfont) if both are there, else None.

    soundfont: a .sf2 file to use; None looks in SOUNDFONTS. A named soundfont that is missing
    or is no SoundFont 2 file raises RenderError naming it.
    """
    if soundfont is not None:
        font = Path(soundfont)
        try:
            with font.open("rb") as f:
                head = f.read(12)
        except OSError as e:
            raise RenderError(f"soundfont {font}: cannot be read ({e.strerror or e}); pass the path of a .sf2 file (apt-get install fluid-soundfont-gm gives {SOUNDFONTS[0]}).") from e
        if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise RenderError(f"soundfont {font}: not a SoundFont 2 file (no RIFF sfbk header); pass a .sf2 file, or --synth builtin.")
        candidates = [str(font)]
    else:
        candidates = [f for f in SOUNDFONTS if os.path.isfile(f)]
    binary = shutil.which("fluidsynth")
    return (binary, candidates[0]) if binary and candidates else None


def _fluidsynth_wav(midi: Path, wav: Path, fluid: tuple[str, str]) -> None:
    """Render a MIDI file to a 16-bit stereo WAV at FLUID_SAMPLE_RATE; silence from a piece with notes is an error."""
    binary, font = fluid

    def write(tmp: Path) -> None:
        try:
            subprocess.run([binary, "-ni", "-q", "-F", str(tmp), "-T", "wav", "-r", str(FLUID_SAMPLE_RATE), "-g", str(FLUID_GAIN), font, str(midi)], check=True, capture_output=True, timeout=300)  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
            raise RenderError(f"fluidsynth could not render {midi.name} with soundfont {font} ({detail[-1] if detail else e}); check the soundfont, or use --synth builtin.") from e
        with wave.open(str(tmp)) as f:
            params = f.getparams()
            pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        peak = int(np.abs(pcm.astype(np.int32)).max()) if pcm.size else 0
        if not peak:
            raise RenderError(f"fluidsynth rendered silence for {midi.name} with soundfont {font}; check the soundfont, or use --synth builtin.")
        with wave.open(str(tmp), "wb") as f:  # every file peaks at PEAK_LEVEL, so samples play equally loud
            f.setparams(params)
            f.writeframes((pcm * (PEAK_LEVEL * 32767 / peak)).round().astype("<i2").tobytes())

    atomic_write(wav, write)


# ---------------------------------------------------------------------------- pictures


NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
BLACK_KEYS = frozenset({1, 3, 6, 8, 10})  # pitch classes
NOTE_COLOUR, PRIMER_COLOUR = "#1f5fa8", "#9a9a9a"


def note_name(pitch: int) -> str:
    """Scientific pitch notation: 60 -> 'C4', 69 -> 'A4'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def note_runs(column: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a bool column: the notes, held as the MIDI holds them."""
    edges = np.diff(np.concatenate([[0], column.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, ends)]


def write_png(path: Path, roll: np.ndarray, title: str, steps_per_quarter: int, primer_steps: int = 0) -> Path:
    """A piano-roll picture of PNG_SIZE pixels, written atomically.

    Time runs across in beats, pitch up with the Cs named (C4 = MIDI 60) and the black keys'
    rows shaded. Each note is one bar from its onset to its end, so a held note is continuous.
    The first `primer_steps` steps (a primer the model continued) are grey, with a line where
    the model takes over.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    roll = np.asarray(roll, bool)
    dpi = 100
    fig, ax = plt.subplots(figsize=(PNG_SIZE[0] / dpi, PNG_SIZE[1] / dpi), dpi=dpi)
    beats = max(len(roll), 1) / steps_per_quarter
    sounding = np.flatnonzero(roll.any(axis=0)) + MIN_MIDI_PITCH
    low, high = (int(sounding.min()) - 3, int(sounding.max()) + 3) if len(sounding) else (48, 84)
    for pitch in range(low, high + 1):
        if pitch % 12 in BLACK_KEYS:
            ax.axhspan(pitch - 0.5, pitch + 0.5, color="#f1f1f1", lw=0, zorder=0)
    every = 1 if beats <= 48 else 4  # beat lines, or every 4th beat on a long roll
    for beat in range(every, int(np.ceil(beats)), every):
        ax.axvline(beat, color="#dddddd", lw=0.5, zorder=1)
    # Every note as one rectangle, split where the primer ends, drawn as two collections (fast
    # even for the dense rolls of an untrained model).
    bars = {PRIMER_COLOUR: [], NOTE_COLOUR: []}
    for index in np.flatnonzero(roll.any(axis=0)):
        for start, length in note_runs(roll[:, index]):
            in_primer = min(length, max(0, primer_steps - start))
            for a, n, colour in ((start, in_primer, PRIMER_COLOUR), (start + in_primer, length - in_primer, NOTE_COLOUR)):
                if n:
                    bars[colour].append((a, a + n, int(index) + MIN_MIDI_PITCH))
    for colour, notes in bars.items():
        if notes:
            x0, x1, y = (np.array(v, float) for v in zip(*notes))
            x0, x1 = x0 / steps_per_quarter, x1 / steps_per_quarter
            boxes = np.stack([np.stack([x0, y - 0.42], 1), np.stack([x1, y - 0.42], 1), np.stack([x1, y + 0.42], 1), np.stack([x0, y + 0.42], 1)], 1)
            ax.add_collection(PolyCollection(boxes, facecolors=colour, linewidths=0, zorder=2))
    if primer_steps:
        ax.axvline(primer_steps / steps_per_quarter, color="#c0392b", lw=1.2, zorder=3)
    ax.set_xlim(0, beats)
    ax.set_ylim(low - 0.5, high + 0.5)
    cs = [p for p in range(low, high + 1) if p % 12 == 0] or [low]
    ax.set_yticks(cs, [note_name(p) for p in cs])
    ax.set_xlabel("beats (quarter notes)")
    ax.set_ylabel("pitch")
    ax.set_title(title, fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- rendering a run


def beats_text(steps: int, steps_per_quarter: int) -> str:
    """'8 beats', '1 beat': a length in steps as a reader counts it."""
    beats = steps / steps_per_quarter
    return f"{beats:g} beat" + ("" if beats == 1 else "s")


def _spread(pieces: list[tuple[str, np.ndarray]], count: int, steps: int) -> list[tuple[str, np.ndarray]]:
    """`count` pieces spread evenly over the list (so not all from one corner of the data),
    chosen among those at least `steps` long, topped up with the longest others."""
    full = [p for p in pieces if len(p[1]) >= steps]
    if len(full) < count:
        return (full + sorted((p for p in pieces if len(p[1]) < steps), key=lambda p: -len(p[1])))[:count]
    return [full[i] for i in sorted({round(x) for x in np.linspace(0, len(full) - 1, count)})]


def _primer_piece(pieces: list[tuple[str, np.ndarray]], primer: str) -> tuple[str, np.ndarray]:
    found = [p for p in pieces if p[0] == primer]
    if not found:
        near = [n for n, _ in pieces if primer.lower() in n.lower()][:5]
        raise RenderError(f"no piece named {primer!r} in the dataset; " + (f"did you mean one of {near}?" if near else f"it has e.g. {[n for n, _ in pieces[:5]]}."))
    return found[0]


def _check_sound_options(synth: str, soundfont, program) -> None:
    if synth not in ("auto", "fluidsynth", "builtin"):
        raise RenderError(f"synth must be 'auto', 'fluidsynth' or 'builtin', but got {synth!r}.")
    if soundfont is not None and synth == "builtin":
        raise RenderError("a soundfont needs FluidSynth, but synth is 'builtin'; drop one of the two.")
    if program is not None and (isinstance(program, bool) or not isinstance(program, int) or not 0 <= program <= 127):
        raise RenderError(f"program must be a General MIDI program in 0..127, but got {program!r}.")


def render_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num: int = 8,
    steps: int = 256,
    seed: int = 0,
    primer: str | None = None,
    data: str | None = None,
    synth: str = "auto",
    soundfont: str | os.PathLike | None = None,
    program: int | None = None,
    references: int = 1,
    continuations: int = 0,
    progress: bool = False,
) -> dict:
    """Render a run's model into `out_dir`; see the module docstring.

    num samples of `steps` steps, from silence, or continuing the training piece `primer`.
    references: training pieces of `steps` steps to compare against. continuations: test
    pieces (else validation, else training) whose first quarter the model continues, written
    whole, primer included. data: the dataset (default: the run's own). synth: "auto"
    (FluidSynth when it and a soundfont are there), "fluidsynth" or "builtin". soundfont: a
    .sf2 file (default: a General MIDI one in SOUNDFONTS). program: the General MIDI program
    (default: `default_program` of the dataset). progress: a bar over the pieces on stderr.
    Returns what stats.json holds, plus the rolls under "rolls" (not written).
    """
    from rbmsearch.data import read_dataset
    from rbmsearch.run import load_run

    _check_sound_options(synth, soundfont, program)
    for name, value, least in (("num", num, 1), ("steps", steps, 1), ("references", references, 0), ("continuations", continuations, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise RenderError(f"{name} must be an int >= {least}, but got {value!r}.")
    start = time.perf_counter()
    run = load_run(run_dir)  # RunError names what is missing and how to make it
    spq, qpm = int(run.data["steps_per_quarter"]), float(run.data["qpm"])
    program = default_program(run.data) if program is None else program
    fluid = find_fluidsynth(soundfont) if synth != "builtin" else None
    if fluid is None and (synth == "fluidsynth" or soundfont is not None):
        raise RenderError("FluidSynth rendering needs the fluidsynth program and a General MIDI soundfont: apt-get install fluidsynth fluid-soundfont-gm, or use --synth builtin.")
    out = make_dir(out_dir)

    data_path = data or run.data.get("path") or ""
    pieces, data_note = {}, ""
    try:
        dataset = read_dataset(data_path) if data_path else None
        for piece in dataset.pieces if dataset is not None else ():
            pieces.setdefault(piece.split, []).append((piece.name, piece.roll))
    except (DatasetError, FileNotFoundError, OSError) as e:  # the samples matter more than the comparisons
        data_note = f"dataset {data_path!r} unreadable ({e}); no reference pieces, continuations or training statistics"
    if not data_path:
        data_note = "the run records no dataset; pass --data for reference pieces, continuations and training statistics"
    train_rolls = pieces.get("train", [])
    if primer is not None and not train_rolls:
        raise RenderError(f"--primer {primer!r} needs the training data, but {data_note}.")

    primed = _primer_piece(train_rolls, primer) if primer is not None else None
    compared = ([primed] if primed else []) + [p for p in _spread(train_rolls, references, steps) if p is not primed]
    compared = compared[: max(references, bool(primed))]
    split = next((s for s in ("test", "valid", "train") if pieces.get(s)), None)
    primer_steps = max(1, steps // 4)
    to_continue = _spread(pieces.get(split, []), continuations, primer_steps + 1) if split else []
    bar = tqdm(total=num + len(compared) + len(to_continue), desc=f"rendering {Path(out_dir).name}", unit="piece", disable=not progress, file=sys.stderr)
    rolls = run.model.generate(num, steps, GIBBS_K, seed=seed, primer=primed[1][:steps] if primed else None)  # (num, steps, 88) bool
    sound = f"FluidSynth with {Path(fluid[1]).name}, program {program} ({instrument_name(program)})" if fluid else "the built-in synthesizer (sine harmonics, mono)"

    def render_one(stem: str, roll: np.ndarray, title: str, primer_steps: int = 0) -> dict:
        midi = out / f"{stem}.mid"
        write_midi(roll, midi, steps_per_quarter=spq, qpm=qpm, program=program)
        if fluid is not None:
            _fluidsynth_wav(midi, out / f"{stem}.wav", fluid)
        else:
            write_wav(out / f"{stem}.wav", synthesize(roll, spq, qpm))
        write_png(out / f"{stem}.png", roll, title, spq, primer_steps)
        bar.update()
        return {"midi": midi.name, "wav": f"{stem}.wav", "png": f"{stem}.png", "steps": int(len(roll))}

    how = f"{GIBBS_K} Gibbs steps per frame, seed {seed}" + (f", continuing {primer!r}" if primer else "")
    files = [render_one(f"sample_{i}", roll, f"sample {i + 1} ({how})") for i, roll in enumerate(rolls)]
    shown = [{"piece": name, "split": "train", **render_one(f"reference_{i}", roll[:steps], f"training piece {name}")} for i, (name, roll) in enumerate(compared)]
    continued = []
    for i, (name, roll) in enumerate(to_continue):
        head = np.asarray(roll[:primer_steps], bool)
        tail = run.model.generate(1, max(1, steps - len(head)), GIBBS_K, seed=seed + 1 + i, primer=head)[0]
        title = f"{split} piece {name}: its first {beats_text(len(head), spq)} (grey), then the model"
        continued.append({"piece": name, "split": split, "primer_steps": len(head), **render_one(f"continuation_{i}", np.concatenate([head, tail]), title, len(head))})
    result = {
        "run_dir": str(run_dir),
        "samples": files,
        "references": shown,
        "continuations": continued,
        "settings": {"num": num, "steps": steps, "seed": seed, "gibbs_k": GIBBS_K, "primer": primer, "steps_per_quarter": spq, "qpm": qpm},
        "synth": "fluidsynth" if fluid else "builtin",
        "soundfont": fluid[1] if fluid else None,
        "program": program,
        "sound": sound,
        "stats": {"samples": roll_stats(list(rolls))},
    }
    if train_rolls:
        result["stats"]["training_data"] = roll_stats([r for _, r in train_rolls])
    if data_note:
        result["note"] = data_note
    bar.close()
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(out / "stats.json", result)
    return {**result, "rolls": rolls}


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.render", description="Render a trained run's samples to MIDI, WAV and PNG.")
    parser.add_argument("run_dir", help="a run directory (from rbmsearch.train, or a search's best_run/)")
    parser.add_argument("--out", required=True, help="the output directory")
    parser.add_argument("--num", type=int, default=8, help="samples (default 8)")
    parser.add_argument("--steps", type=int, default=256, help="steps per sample (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--primer", help="a training piece's name: the samples continue it")
    parser.add_argument("--data", help="the dataset for the reference piece (default: the run's own)")
    parser.add_argument("--references", type=int, default=1, help="training pieces to compare against (default 1)")
    parser.add_argument("--continuations", type=int, default=0, help="test pieces whose first quarter the model continues (default 0)")
    parser.add_argument("--synth", choices=("auto", "fluidsynth", "builtin"), default="auto", help="auto: FluidSynth when it and a soundfont are installed")
    parser.add_argument("--soundfont", help="a .sf2 soundfont for FluidSynth (default: an installed General MIDI one)")
    parser.add_argument("--program", type=int, help="General MIDI program, 0..127 (default: 19, Church Organ, for chorales; 0, piano, otherwise)")
    args = parser.parse_args(argv)
    import_tensorflow()  # here, without its start-up lines, before any stage loads it
    set_small_op_threads()  # generation is many small ops: one thread each, side by side
    result = render_run(args.run_dir, args.out, args.num, args.steps, args.seed, args.primer, args.data, args.synth, args.soundfont, args.program, args.references, args.continuations, progress=True)  # fmt: skip
    stats = result["stats"]
    extra = f", {len(result['references'])} training pieces and {len(result['continuations'])} continuations" if result["references"] or result["continuations"] else ""
    print(f"wrote {len(result['samples'])} samples{extra} (MIDI, WAV, PNG) to {args.out} in {result['seconds']} s; audio: {result['sound']}")
    for name, s in stats.items():
        print(f"{name:>13}: {s.get('notes_per_frame', math.nan):.2f} notes/frame, {s.get('empty_frame_rate', math.nan):.1%} empty, "
              f"scale consistency {s.get('scale_consistency', math.nan):.2f}, repeats {s.get('repeat_rate', math.nan):.2f}")  # fmt: skip
    print(f"view them: python -m rbmsearch.gallery {args.out}")
    if result.get("note"):
        log.warning("%s", result["note"])


if __name__ == "__main__":
    main()
