"""Render a trained RNN-RBM's samples to MIDI, WAV and piano-roll PNG; the render stage.

    python -m rbmsearch.render RUN_DIR --out DIR [--num N] [--steps T] [--seed S] [--primer PIECE]
                               [--data DATA] [--synth auto|fluidsynth|builtin]

Reads a run directory (`rbmsearch.run`) and, for a reference piece and statistics, its dataset.
Writes into DIR `sample_<i>.mid/.wav/.png` (the dataset's grid and tempo), `reference.*` (a
training piece of the same length, or the primer) and `stats.json` (`roll_stats` of the
samples beside the training data's). Audio: FluidSynth with a General MIDI soundfont when
installed, else a small built-in synthesizer. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np

from rbmsearch.console import cli, import_tensorflow
from rbmsearch.errors import DatasetError, RenderError
from rbmsearch.files import atomic_write, make_dir, write_json
from rbmsearch.midi import MIN_MIDI_PITCH, NUM_PITCHES, write_midi

__all__ = ["RenderError", "render_run", "roll_stats", "synthesize", "write_png", "write_wav"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 22_050
GIBBS_K = 25  # Gibbs steps per generated frame, as in the paper
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
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
    return (audio * (0.8 / peak) if peak > 0 else audio).astype(np.float32)


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


def find_fluidsynth() -> tuple[str, str] | None:
    """(fluidsynth binary, General MIDI soundfont) if both are installed, else None."""
    binary = shutil.which("fluidsynth")
    font = next((f for f in SOUNDFONTS if os.path.isfile(f)), None)
    return (binary, font) if binary and font else None


def _fluidsynth_wav(midi: Path, wav: Path, fluid: tuple[str, str], seconds: float) -> None:
    binary, font = fluid

    def write(tmp: Path) -> None:
        subprocess.run([binary, "-ni", "-q", "-F", str(tmp), "-r", str(SAMPLE_RATE), "-g", "0.8", font, str(midi)], check=True, capture_output=True, timeout=120)  # fmt: skip

    atomic_write(wav, write)


# ---------------------------------------------------------------------------- pictures


def write_png(path: Path, roll: np.ndarray, title: str, steps_per_quarter: int) -> Path:
    """A piano-roll picture of PNG_SIZE pixels: time across, pitch up, beats marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = np.asarray(roll, bool)
    dpi = 100
    fig, ax = plt.subplots(figsize=(PNG_SIZE[0] / dpi, PNG_SIZE[1] / dpi), dpi=dpi)
    ax.imshow(roll.T, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest",
              extent=(0, len(roll) / steps_per_quarter, MIN_MIDI_PITCH - 0.5, MIN_MIDI_PITCH + NUM_PITCHES - 0.5))  # fmt: skip
    sounding = np.flatnonzero(roll.any(axis=0))
    if len(sounding):  # zoom to the pitches used, with an octave's margin
        ax.set_ylim(max(MIN_MIDI_PITCH, sounding.min() + MIN_MIDI_PITCH - 6) - 0.5, min(108, sounding.max() + MIN_MIDI_PITCH + 6) + 0.5)
    ax.set_xlabel("quarter notes")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- rendering a run


def _reference(rolls: list[tuple[str, np.ndarray]], primer: str | None, steps: int) -> tuple[str, np.ndarray]:
    names = [name for name, _ in rolls]
    if primer is not None:
        found = [(n, r) for n, r in rolls if n == primer]
        if not found:
            near = [n for n in names if primer.lower() in n.lower()][:5]
            raise RenderError(f"no piece named {primer!r} in the dataset; " + (f"did you mean one of {near}?" if near else f"it has e.g. {names[:5]}."))
        return found[0]
    longest = max(rolls, key=lambda nr: min(len(nr[1]), steps))  # the first piece that fills `steps`
    return longest


def render_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num: int = 8,
    steps: int = 256,
    seed: int = 0,
    primer: str | None = None,
    data: str | None = None,
    synth: str = "auto",
) -> dict:
    """Render `num` samples of `steps` steps of a run's model into `out_dir`; see the module docstring.

    primer: a training piece's name: the samples continue it (its first `steps` steps are
    the reference). data: the dataset to take the reference and statistics from (default:
    the one in config.json). synth: "auto", "fluidsynth" or "builtin".
    Returns what stats.json holds, plus the rolls under "rolls" (not written).
    """
    from rbmsearch.data import read_dataset
    from rbmsearch.run import load_run

    if synth not in ("auto", "fluidsynth", "builtin"):
        raise RenderError(f"synth must be 'auto', 'fluidsynth' or 'builtin', but got {synth!r}.")
    for name, value in (("num", num), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RenderError(f"{name} must be a positive int, but got {value!r}.")
    start = time.perf_counter()
    run = load_run(run_dir)  # RunError names what is missing and how to make it
    spq, qpm = int(run.data["steps_per_quarter"]), float(run.data["qpm"])
    fluid = find_fluidsynth() if synth != "builtin" else None
    if synth == "fluidsynth" and fluid is None:
        raise RenderError("synth='fluidsynth' needs the fluidsynth program and a GM soundfont: apt-get install fluidsynth fluid-soundfont-gm.")
    out = make_dir(out_dir)

    data_path = data or run.data.get("path") or ""
    train_rolls, data_note = [], ""
    try:
        dataset = read_dataset(data_path) if data_path else None
        if dataset is not None:
            train_rolls = [(p.name, p.roll) for p in dataset.pieces if p.split == "train"]
    except (DatasetError, FileNotFoundError, OSError) as e:  # the samples matter more than the reference
        data_note = f"dataset {data_path!r} unreadable ({e}); no reference piece or training statistics"
    if not data_path:
        data_note = "the run records no dataset; pass --data for a reference piece and training statistics"
    if primer is not None and not train_rolls:
        raise RenderError(f"--primer {primer!r} needs the training data, but {data_note}.")

    reference = _reference(train_rolls, primer, steps) if train_rolls else None
    primer_roll = reference[1][:steps] if primer is not None else None
    rolls = run.model.generate(num, steps, GIBBS_K, seed=seed, primer=primer_roll)  # (num, steps, 88) bool

    def render_one(stem: str, roll: np.ndarray, title: str) -> dict:
        midi = out / f"{stem}.mid"
        write_midi(roll, midi, steps_per_quarter=spq, qpm=qpm)
        if fluid is not None:
            _fluidsynth_wav(midi, out / f"{stem}.wav", fluid, len(roll) * 60 / qpm / spq)
        else:
            write_wav(out / f"{stem}.wav", synthesize(roll, spq, qpm))
        write_png(out / f"{stem}.png", roll, title, spq)
        return {"midi": midi.name, "wav": f"{stem}.wav", "png": f"{stem}.png", "steps": int(len(roll))}

    how = f"{GIBBS_K} Gibbs steps per frame, seed {seed}" + (f", continuing {primer!r}" if primer else "")
    files = [render_one(f"sample_{i}", roll, f"sample {i} ({how})") for i, roll in enumerate(rolls)]
    result = {
        "run_dir": str(run_dir),
        "samples": files,
        "settings": {"num": num, "steps": steps, "seed": seed, "gibbs_k": GIBBS_K, "primer": primer, "steps_per_quarter": spq, "qpm": qpm},
        "synth": "fluidsynth" if fluid else "builtin",
        "stats": {"samples": roll_stats(list(rolls))},
    }
    if reference is not None:
        name, roll = reference
        result["reference"] = {"piece": name, **render_one("reference", roll[:steps], f"training piece {name}")}
        result["stats"]["training_data"] = roll_stats([r for _, r in train_rolls])
    else:
        result["reference"] = None
        result["note"] = data_note
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
    parser.add_argument("--synth", choices=("auto", "fluidsynth", "builtin"), default="auto")
    args = parser.parse_args(argv)
    import_tensorflow()  # here, without its start-up lines, before any stage loads it
    result = render_run(args.run_dir, args.out, args.num, args.steps, args.seed, args.primer, args.data, args.synth)
    stats = result["stats"]
    print(f"wrote {len(result['samples'])} samples (MIDI, WAV with {result['synth']}, PNG) to {args.out} in {result['seconds']} s")
    for name, s in stats.items():
        print(f"{name:>13}: {s.get('notes_per_frame', math.nan):.2f} notes/frame, {s.get('empty_frame_rate', math.nan):.1%} empty, "
              f"scale consistency {s.get('scale_consistency', math.nan):.2f}, repeats {s.get('repeat_rate', math.nan):.2f}")  # fmt: skip
    print(f"view them: python -m rbmsearch.gallery {args.out}")
    if result.get("note"):
        log.warning("%s", result["note"])


if __name__ == "__main__":
    main()
