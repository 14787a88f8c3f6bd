"""Datasets: MIDI folders, the built-in Bach chorales and benchmark pickles -> Parquet.

    python -m rbmsearch.data build --source SRC --out OUT.parquet [options]
    python -m rbmsearch.data info FILE.parquet

SRC is a folder of MIDI files, a benchmark pickle (`JSB Chorales.pickle`) or `bach-chorales`
(music21's corpus). Writes one row per piece: `piece` string, `split` string (train, valid,
test), `steps` int32, `pitches` list<list<int8>> (per step, the sounding MIDI pitches); the
schema metadata key `rbmsearch` holds JSON (`DatasetMeta`: schema_version, steps_per_quarter,
qpm, min_pitch, max_pitch, source, transposed). Folders and the chorales are split by a hash
of each name, so a piece keeps its split; pickles keep theirs. Every later stage reads only this file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rbmsearch.console import cli
from rbmsearch.errors import DatasetError, OutputError
from rbmsearch.files import atomic_write
from rbmsearch.midi import (
    DEFAULT_QPM,
    DEFAULT_STEPS_PER_QUARTER,
    MAX_MIDI_PITCH,
    MAX_STEPS,
    MIN_MIDI_PITCH,
    NUM_PITCHES,
    MIDIConversionError,
    MidiRoll,
    read_midi,
)

__all__ = [
    "BACH_CHORALES",
    "DatasetError",
    "Dataset",
    "DatasetMeta",
    "Piece",
    "SCHEMA_VERSION",
    "SPLITS",
    "build",
    "default_dataset",
    "open_data",
    "output_filesystem",
    "read_dataset",
    "transpose_to_c",
    "write_dataset",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")
BACH_CHORALES = "bach-chorales"
# The JSB benchmark is sampled once per quarter note; the built-in chorales use the same grid
# so that their scores can be compared with the published ones.
CHORALE_STEPS_PER_QUARTER = 1
MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")
METADATA_KEY = b"rbmsearch"
ARROW_SCHEMA = pa.schema(
    [
        ("piece", pa.string()),
        ("split", pa.string()),
        ("steps", pa.int32()),
        ("pitches", pa.list_(pa.list_(pa.int8()))),
    ]
)
# The counters of MidiRoll that say how many notes a file lost, and why.
DROPPED_NOTE_KINDS = ("out_of_range", "drum_notes", "too_short")
# Below this many files a process pool costs more than it saves.
_MIN_FILES_FOR_POOL = 16


@dataclass(frozen=True)
class DatasetMeta:
    source: str
    steps_per_quarter: int  # the time grid: steps per quarter note
    qpm: float = DEFAULT_QPM  # a playback tempo, quarter notes per minute
    transposed: bool = False  # pieces were moved to C major / C minor
    min_pitch: int = MIN_MIDI_PITCH
    max_pitch: int = MAX_MIDI_PITCH
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(self.source, str):
            raise ValueError(f"A string must be specified for source, but got {self.source!r}.")
        if not is_int(self.steps_per_quarter) or self.steps_per_quarter <= 0:
            raise ValueError(f"A positive int must be specified for steps_per_quarter, but got {self.steps_per_quarter!r}.")
        if isinstance(self.qpm, bool) or not isinstance(self.qpm, int | float) or not 0 < self.qpm < float("inf"):
            raise ValueError(f"A positive finite tempo must be specified for qpm, but got {self.qpm!r}.")
        if not isinstance(self.transposed, bool):
            raise ValueError(f"true or false must be specified for transposed, but got {self.transposed!r}.")
        for name in ("min_pitch", "max_pitch", "schema_version"):
            if not is_int(getattr(self, name)):
                raise ValueError(f"An int must be specified for {name}, but got {getattr(self, name)!r}.")


@dataclass(frozen=True)
class Piece:
    name: str
    split: str  # one of SPLITS
    roll: np.ndarray  # (steps, NUM_PITCHES) bool


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    meta: DatasetMeta
    pieces: tuple[Piece, ...]
    # Only for a dataset just built, not one read back: files skipped, and notes left out by kind.
    skipped: tuple[Skipped, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)

    def rolls(self, split: str) -> list[np.ndarray]:
        """The (steps, NUM_PITCHES) bool rolls of one split, in file order."""
        if split not in SPLITS:
            raise ValueError(f"One of {SPLITS} must be specified for split, but got {split!r}.")
        return [p.roll for p in self.pieces if p.split == split]

    def summary(self) -> str:
        """Pieces, frames and mean notes per frame for each split, then every skipped file."""
        lines = [
            f"source {self.meta.source}, {self.meta.steps_per_quarter} steps per quarter, "
            f"pitches {self.meta.min_pitch}..{self.meta.max_pitch}"
            + (", transposed to C" if self.meta.transposed else "")
        ]
        lines.append(f"{'split':<6} {'pieces':>7} {'frames':>9} {'notes/frame':>12}")
        for split in SPLITS:
            rolls = self.rolls(split)
            frames = sum(len(r) for r in rolls)
            notes = sum(int(r.sum()) for r in rolls)
            lines.append(f"{split:<6} {len(rolls):>7,} {frames:>9,} {notes / max(frames, 1):>12.2f}")
        if any(self.dropped.values()):
            lines.append("notes left out: " + ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in self.dropped.items() if n))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


# ---------------------------------------------------------------------------- preprocessing

# Krumhansl & Kessler (1982) key profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_tonic(roll: np.ndarray) -> int:
    """Pitch class (0 = C) of the best-matching major or minor key, by Krumhansl-Schmuckler.

    roll: (steps, NUM_PITCHES) bool. Each sounding step counts once, so long notes weigh more.
    """
    histogram = np.zeros(12)
    np.add.at(histogram, (np.arange(NUM_PITCHES) + MIN_MIDI_PITCH) % 12, roll.sum(axis=0))
    scores = [
        np.corrcoef(histogram, np.roll(profile, tonic))[0, 1]
        for tonic in range(12)
        for profile in (_MAJOR_PROFILE, _MINOR_PROFILE)
    ]
    return int(np.nanargmax(scores)) // 2


def transpose_to_c(roll: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Move a piece to C major or C minor, as Boulanger-Lewandowski et al. (2012) did.

    The key is estimated from the notes (`estimate_tonic`), and the piece moves by the
    smallest interval (-6..+5 semitones) that takes its tonic to C.
    Returns (roll, shift in semitones, notes dropped for leaving the pitch range).
    """
    shift = -estimate_tonic(roll)
    if shift < -6:
        shift += 12
    out = np.zeros_like(roll)
    if shift >= 0:
        out[:, shift:] = roll[:, : NUM_PITCHES - shift]
        dropped = int(roll[:, NUM_PITCHES - shift :].sum())
    else:
        out[:, :shift] = roll[:, -shift:]
        dropped = int(roll[:, :-shift].sum())
    return out, shift, dropped


def split_for(name: str, valid_fraction: float, test_fraction: float) -> str:
    """Deterministic split from a hash of `name`: stable across machines and runs."""
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class BuildOptions:
    steps_per_quarter: int | None = None  # None: the source's own default (see _default_grid)
    valid_fraction: float = 0.1  # folder and chorale splits; pickles keep theirs
    test_fraction: float = 0.1
    include_drums: bool = False  # GM drum "pitches" are instruments, not notes
    transpose: bool = False  # to C major / C minor, as the paper did
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True
    limit: int | None = None  # read at most this many files (quick looks and tests)
    max_steps: int = MAX_STEPS  # a longer roll is refused as corrupt (see midi.MAX_STEPS)

    def __post_init__(self):
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"A value in [0, 1) must be specified for {name}, but got {value}.")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"valid_fraction + test_fraction must be below 1 to leave training data, "
                f"but got {self.valid_fraction} + {self.test_fraction}."
            )
        if self.steps_per_quarter is not None and self.steps_per_quarter <= 0:
            raise ValueError(f"A positive value must be specified for steps_per_quarter, but got {self.steps_per_quarter}.")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"A positive number of files must be specified for limit, but got {self.limit}.")
        if self.max_steps <= 0:
            raise ValueError(f"A positive value must be specified for max_steps, but got {self.max_steps}.")


def _progress(items: Iterable, total: int, desc: str, enabled: bool) -> Iterator:
    from tqdm import tqdm  # only the CLI paths draw bars

    return iter(tqdm(items, total=total, desc=desc, unit="file", disable=not enabled, file=sys.stderr))


_JobResult = tuple[str, MidiRoll | None, str | None]  # (name, what was read, why it was skipped)


def _read_midi_job(job: tuple[str, str, int, bool, int]) -> _JobResult:
    """Worker: (relative name, path, grid, drums, max steps) -> (name, MidiRoll or None, reason)."""
    name, path, steps_per_quarter, include_drums, max_steps = job
    try:
        return name, read_midi(path, steps_per_quarter, include_drums, max_steps=max_steps), None
    except MIDIConversionError as e:
        return name, None, e.reason


def _map_jobs(fn, jobs: list, options: BuildOptions, desc: str) -> Iterator:
    """Run `fn` over `jobs`, in a spawned process pool when it pays, in order, with a bar."""
    if options.workers > 1 and len(jobs) >= _MIN_FILES_FOR_POOL:
        # spawn, not fork: the caller may hold threads (Ray, TensorFlow) that fork would break.
        with ProcessPoolExecutor(options.workers, mp_context=get_context("spawn")) as pool:
            yield from _progress(pool.map(fn, jobs), len(jobs), desc, options.progress)
    else:
        yield from _progress(map(fn, jobs), len(jobs), desc, options.progress)


def _dataset_from_results(results: Iterator[_JobResult], options: BuildOptions, meta: DatasetMeta) -> Dataset:
    """Collect worker results into a Dataset; the playback tempo is the median of the files'."""
    pieces, skipped, tempos = [], [], []
    dropped = dict.fromkeys(DROPPED_NOTE_KINDS, 0)
    for name, read, reason in results:
        if read is None:
            skipped.append(Skipped(name, reason))
            continue
        for kind in DROPPED_NOTE_KINDS:
            dropped[kind] += getattr(read, kind)
        roll = read.roll
        if options.transpose:
            roll, _, lost = transpose_to_c(roll)
            dropped["out_of_range"] += lost
        pieces.append(Piece(name, split_for(name, options.valid_fraction, options.test_fraction), roll))
        tempos.append(read.qpm)
    if tempos:
        meta = replace(meta, qpm=float(np.median(tempos)))
    return Dataset(meta, tuple(pieces), tuple(skipped), dropped)


def pieces_from_folder(folder: Path, options: BuildOptions) -> Dataset:
    """Every MIDI file below `folder`; a file that cannot be read is skipped with its reason."""
    # Broken symbolic links are kept, so that they are listed as skipped, not silently left out.
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and (p.is_file() or p.is_symlink()))
    if not files:
        raise DatasetError(
            folder,
            f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) in this folder or below it; "
            "point --source at a folder that holds them",
        )
    files = files[: options.limit]
    grid = options.steps_per_quarter or DEFAULT_STEPS_PER_QUARTER
    jobs = [(p.relative_to(folder).as_posix(), str(p), grid, options.include_drums, options.max_steps) for p in files]
    meta = DatasetMeta(source=str(folder), steps_per_quarter=grid, transposed=options.transpose)
    return _dataset_from_results(_map_jobs(_read_midi_job, jobs, options, "reading MIDI"), options, meta)


def _chorale_paths() -> list[Path]:
    from music21 import corpus

    by_name: dict[str, Path] = {}
    # .rntxt files in the same folder are harmonic analyses, not music; prefer MusicXML.
    for p in sorted(corpus.getComposer("bach"), key=lambda p: (p.stem, p.suffix != ".mxl")):
        if p.suffix in (".mxl", ".xml", ".krn"):
            by_name.setdefault(p.stem, p)
    return list(by_name.values())


def _read_chorale_job(job: tuple[str, str, int]) -> _JobResult:
    """Worker: parse with music21, export MIDI, and read that with the same code as any file."""
    from music21 import converter
    from music21.midi.translate import streamToMidiFile

    name, path, steps_per_quarter, max_steps = job
    try:
        midi_bytes = streamToMidiFile(converter.parse(path)).writestr()
        return name, read_midi(name, steps_per_quarter, file=io.BytesIO(midi_bytes), max_steps=max_steps), None
    except MIDIConversionError as e:
        return name, None, e.reason


def pieces_from_bach_chorales(options: BuildOptions) -> Dataset:
    """The Bach chorales of the music21 corpus (one per BWV number and part)."""
    paths = _chorale_paths()[: options.limit]
    if not paths:
        raise DatasetError(BACH_CHORALES, "the music21 corpus holds no Bach chorales; reinstall music21")
    grid = options.steps_per_quarter or CHORALE_STEPS_PER_QUARTER
    jobs = [(p.stem, str(p), grid, options.max_steps) for p in paths]
    meta = DatasetMeta(source=BACH_CHORALES, steps_per_quarter=grid, transposed=options.transpose)
    return _dataset_from_results(_map_jobs(_read_chorale_job, jobs, options, "parsing chorales"), options, meta)


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only what pickle opcodes make without imports: dict, list, tuple, int, str.

    Any class or function lookup, which is how a pickle runs code, is refused before it happens.
    """

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it asks to load {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it asks for a persistent object")


def _check_pickle_layout(path: Path, data: object) -> None:
    fix = 'the expected layout is {"train": [seq, ...], "valid": [...], "test": [...]}, seq = [(pitch, ...), ...]'
    if not isinstance(data, dict) or set(data) != set(SPLITS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(path, f"expected a dict with keys {list(SPLITS)}, but found {found}; {fix}")
    for split in SPLITS:
        if not isinstance(data[split], list):
            raise DatasetError(path, f'expected a list under "{split}", but found {type(data[split]).__name__}; {fix}')
        for i, seq in enumerate(data[split]):
            if not isinstance(seq, list) or not all(isinstance(f, (tuple, list)) for f in seq):
                raise DatasetError(path, f'sequence {i} of "{split}" is not a list of frames (tuples); {fix}')
            for t, frame in enumerate(seq):
                for p in frame:
                    if type(p) is not int or not MIN_MIDI_PITCH <= p <= MAX_MIDI_PITCH:
                        raise DatasetError(
                            path,
                            f'step {t} of sequence {i} of "{split}" holds {p!r}; expected MIDI pitches '
                            f"as ints in {MIN_MIDI_PITCH}..{MAX_MIDI_PITCH}",
                        )


def pieces_from_pickle(path: Path, options: BuildOptions) -> Dataset:
    """A benchmark pickle of Boulanger-Lewandowski et al. (2012), keeping its splits."""
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise DatasetError(
            path, f"refused: {e}. Only dict, list, tuple and int are allowed, so nothing in the file can run"
        ) from e
    except (EOFError, ValueError, IndexError, TypeError) as e:  # what a damaged stream raises
        raise DatasetError(path, f"not a readable pickle ({type(e).__name__}: {e}); it is likely truncated") from e
    _check_pickle_layout(path, data)
    pieces, skipped = [], []
    for split in SPLITS:
        for i, seq in enumerate(data[split][: options.limit]):
            if not seq:  # a piece of no frames trains and scores nothing
                skipped.append(Skipped(f"{split}/{i:04d}", "an empty sequence (no frames)"))
                continue
            roll = np.zeros((len(seq), NUM_PITCHES), dtype=bool)
            for t, frame in enumerate(seq):
                roll[t, np.asarray(frame, dtype=np.int64) - MIN_MIDI_PITCH] = True
            if options.transpose:
                roll, _, _ = transpose_to_c(roll)
            pieces.append(Piece(f"{split}/{i:04d}", split, roll))
    # The pickles carry no grid; JSB Chorales is sampled once per quarter note.
    meta = DatasetMeta(
        source=str(path), steps_per_quarter=options.steps_per_quarter or 1, transposed=options.transpose
    )
    return Dataset(meta, tuple(pieces), tuple(skipped))


def load_source(source: str, options: BuildOptions = BuildOptions()) -> Dataset:
    """Read a source (folder, .pickle file or `bach-chorales`) into memory."""
    if source == BACH_CHORALES:
        dataset = pieces_from_bach_chorales(options)
    else:
        path = Path(source)
        if path.is_dir():
            dataset = pieces_from_folder(path, options)
        elif path.suffix.lower() in (".pickle", ".pkl") and path.is_file():
            dataset = pieces_from_pickle(path, options)
        elif path.exists():
            raise DatasetError(path, f"expected a folder of MIDI files, a .pickle file or {BACH_CHORALES!r}")
        else:
            raise DatasetError(path, f"no such file or folder; give a folder of MIDI files, a .pickle file or {BACH_CHORALES!r}")
    if not dataset.pieces:
        shown = "; ".join(f"{s.path}: {s.reason}" for s in dataset.skipped[:3]) + ("; ..." if len(dataset.skipped) > 3 else "")
        raise DatasetError(
            source,
            f"yielded no pieces: all {len(dataset.skipped)} skipped ({shown}); fix or remove those files, or point --source elsewhere",
        )
    return dataset


# ---------------------------------------------------------------------------- Parquet


def _to_table(dataset: Dataset) -> pa.Table:
    rolls = [p.roll for p in dataset.pieces]
    steps = np.array([len(r) for r in rolls], dtype=np.int32)
    stacked = np.concatenate(rolls) if rolls else np.zeros((0, NUM_PITCHES), dtype=bool)  # (frames, 88)
    frame_idx, col = np.nonzero(stacked)  # row-major: by frame, then pitch, ascending
    values = pa.array((col + MIN_MIDI_PITCH).astype(np.int8))
    frame_offsets = np.concatenate([[0], np.cumsum(stacked.sum(axis=1))]).astype(np.int32)
    piece_offsets = np.concatenate([[0], np.cumsum(steps)]).astype(np.int32)
    pitches = pa.ListArray.from_arrays(piece_offsets, pa.ListArray.from_arrays(frame_offsets, values))
    table = pa.Table.from_arrays(
        [
            pa.array([p.name for p in dataset.pieces], pa.string()),
            pa.array([p.split for p in dataset.pieces], pa.string()),
            pa.array(steps, pa.int32()),
            pitches,
        ],
        schema=ARROW_SCHEMA,
    )
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(asdict(dataset.meta)).encode()})


def output_filesystem(uri: str):
    """(pyarrow filesystem, path) for an output URI (file://, s3://, gs://, hdfs://, ...).

    Raises OutputError, naming the URI, when pyarrow.fs has no filesystem for it.
    """
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise OutputError(uri, f"pyarrow.fs cannot write there ({str(e).splitlines()[0]}); give a local path, or a URI it supports such as file://, s3:// or gs://") from e


def write_dataset(dataset: Dataset, out: str | os.PathLike) -> Path | str:
    """Write to a temporary file beside `out`, then rename: `out` is never left half-written.

    `out` is a local path or a URI that pyarrow.fs writes (never a local folder named `s3:`).
    Returns the written Path, or the URI.
    """
    table = _to_table(dataset)
    if "://" not in str(out):
        return atomic_write(out, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    fs, path = output_filesystem(str(out))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        fs.move(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise OutputError(str(out), f"cannot be written ({str(e).splitlines()[0]}); check the URI and its credentials") from e
    return str(out)


def _rebuild_fix(path: str) -> str:
    return f"rebuild it with `python -m rbmsearch.data build --source SRC --out {path}`"


def _read_table(path: str) -> pa.Table:
    """Read a local path or a URI (s3://, gs://, ...) that pyarrow.fs understands."""
    try:
        return pq.read_table(path)
    except FileNotFoundError as e:
        raise DatasetError(path, f"no such file; build one with `python -m rbmsearch.data build --source SRC --out {path}`") from e
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(path, f"not a readable Parquet file ({e}); {_rebuild_fix(path)}") from e


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read and check a Parquet dataset written by `write_dataset` (local path or URI)."""
    path = str(path)
    table = _read_table(path)
    raw_meta = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw_meta is None:
        raise DatasetError(path, f"has no '{METADATA_KEY.decode()}' metadata, so rbmsearch did not write it; {_rebuild_fix(path)}")
    try:
        meta_dict = json.loads(raw_meta)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"its '{METADATA_KEY.decode()}' metadata is not valid JSON ({e}); {_rebuild_fix(path)}") from e
    if not isinstance(meta_dict, dict):
        raise DatasetError(path, f"its '{METADATA_KEY.decode()}' metadata should be a JSON object, but is a {type(meta_dict).__name__}; {_rebuild_fix(path)}")
    if meta_dict.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(
            path,
            f"schema version {meta_dict.get('schema_version')!r} found, but this rbmsearch reads version "
            f"{SCHEMA_VERSION}; {_rebuild_fix(path)}",
        )
    problems = [
        f"column {f.name!r} should be {f.type} but is {table.schema.field(f.name).type}"
        if f.name in table.schema.names
        else f"column {f.name!r} ({f.type}) is missing"
        for f in ARROW_SCHEMA
        if f.name not in table.schema.names or not table.schema.field(f.name).type.equals(f.type)
    ]
    if problems:
        raise DatasetError(path, "wrong schema: " + "; ".join(problems) + f"; {_rebuild_fix(path)}")
    known = [f.name for f in fields(DatasetMeta)]
    unknown = sorted(set(meta_dict) - set(known))
    if unknown:
        raise DatasetError(path, f"its metadata has unknown key(s) {unknown} (known: {known}), so another program or version wrote it; {_rebuild_fix(path)}")
    try:
        meta = DatasetMeta(**meta_dict)
    except (TypeError, ValueError) as e:  # missing keys, or values of the wrong kind
        raise DatasetError(path, f"its metadata is invalid ({e}); {_rebuild_fix(path)}") from e
    if (meta.min_pitch, meta.max_pitch) != (MIN_MIDI_PITCH, MAX_MIDI_PITCH):
        raise DatasetError(path, f"pitch range {meta.min_pitch}..{meta.max_pitch}, but this rbmsearch uses {MIN_MIDI_PITCH}..{MAX_MIDI_PITCH}; {_rebuild_fix(path)}")

    names = table.column("piece").to_pylist()
    splits = table.column("split").to_pylist()
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise DatasetError(path, f"split values {bad} found; only {list(SPLITS)} are allowed; {_rebuild_fix(path)}")
    steps = table.column("steps").to_numpy()
    pitches = table.column("pitches").combine_chunks()
    piece_offsets = pitches.offsets.to_numpy()
    piece_offsets = piece_offsets - piece_offsets[0]  # a combined chunk may start past 0
    frames = pitches.flatten()  # one list of pitches per frame, all pieces end to end
    notes_per_frame = np.diff(frames.offsets.to_numpy())
    values = frames.flatten().to_numpy().astype(np.int64)
    if not np.array_equal(np.diff(piece_offsets), steps):
        raise DatasetError(path, f"column 'steps' disagrees with the length of 'pitches'; {_rebuild_fix(path)}")
    if len(values) and (values.min() < MIN_MIDI_PITCH or values.max() > MAX_MIDI_PITCH):
        raise DatasetError(path, f"pitches outside {MIN_MIDI_PITCH}..{MAX_MIDI_PITCH} found; {_rebuild_fix(path)}")

    stacked = np.zeros((len(frames), NUM_PITCHES), dtype=bool)  # (all frames, 88)
    stacked[np.repeat(np.arange(len(frames)), notes_per_frame), values - MIN_MIDI_PITCH] = True
    pieces = tuple(
        Piece(name, split, stacked[piece_offsets[i] : piece_offsets[i + 1]])
        for i, (name, split) in enumerate(zip(names, splits))
    )
    return Dataset(meta, pieces)


def build(source: str, out: str | os.PathLike, options: BuildOptions = BuildOptions()) -> Dataset:
    """Read `source` and write it to `out` (a path or URI) as Parquet. Returns what was built, skips included."""
    if "://" in str(out):
        output_filesystem(str(out))  # an unsupported URI fails before the source is read
    dataset = load_source(source, options)
    write_dataset(dataset, out)
    return dataset


def cache_dir() -> Path:
    """Where built-in datasets are kept: $RBMSEARCH_CACHE, else $XDG_CACHE_HOME/rbmsearch."""
    if "RBMSEARCH_CACHE" in os.environ:
        return Path(os.environ["RBMSEARCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rbmsearch"


def default_dataset(progress: bool = True) -> Path:
    """The built-in Bach chorales as Parquet, built into the cache on first use."""
    path = cache_dir() / f"{BACH_CHORALES}-v{SCHEMA_VERSION}.parquet"
    if not path.exists():
        log.info("Building the default dataset (%s) once into %s ...", BACH_CHORALES, path)
        build(BACH_CHORALES, path, BuildOptions(progress=progress))
    return path


# ---------------------------------------------------------------------------- CLI


def open_data(data: str | None, progress: bool = True) -> tuple[Dataset, str]:
    """A `--data` argument -> (dataset, the path recorded in runs).

    Parquet files and URIs are read; other sources (a MIDI folder, a pickle, bach-chorales)
    are imported in memory; None means the built-in chorales, built once into the cache.
    """
    if data is None:
        data = str(default_dataset(progress=progress))
    if data.endswith(".parquet") or "://" in data:
        return read_dataset(data), data
    return load_source(data, BuildOptions(progress=progress)), data


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="read a source and write a Parquet dataset")
    b.add_argument("--source", required=True, help=f"a folder of MIDI files, a .pickle file, or {BACH_CHORALES}")
    b.add_argument("--out", required=True, help="the Parquet file to write")
    b.add_argument(
        "--steps-per-quarter",
        type=int,
        help=f"time grid (default: {DEFAULT_STEPS_PER_QUARTER} for MIDI folders, {CHORALE_STEPS_PER_QUARTER} "
        "for the chorales; for pickles it only records the grid they were sampled on, 1 for JSB)",
    )
    b.add_argument("--valid-fraction", type=float, default=BuildOptions.valid_fraction)
    b.add_argument("--test-fraction", type=float, default=BuildOptions.test_fraction)
    b.add_argument("--include-drums", action="store_true", help="keep General MIDI drums (channel 10)")
    b.add_argument("--transpose", action="store_true", help="move every piece to C major / C minor")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for reading files")
    b.add_argument("--limit", type=int, help="read at most this many files")
    b.add_argument("--max-steps", type=int, default=MAX_STEPS, help="refuse a file whose roll would be longer (default: %(default)s, about 92 MB)")
    b.add_argument("--no-progress", action="store_true")
    i = commands.add_parser("info", help="print the summary of a Parquet dataset")
    i.add_argument("file")
    args = parser.parse_args(argv)

    try:
        if args.command == "info":
            print(read_dataset(args.file).summary())
            return
        options = BuildOptions(
            steps_per_quarter=args.steps_per_quarter,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            include_drums=args.include_drums,
            transpose=args.transpose,
            workers=args.workers,
            progress=not args.no_progress,
            limit=args.limit,
            max_steps=args.max_steps,
        )
        dataset = build(args.source, args.out, options)
    except ValueError as e:  # BuildOptions' own checks
        raise SystemExit(f"error: {e}") from e
    print(dataset.summary())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
