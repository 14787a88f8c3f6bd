"""Benchmarks that users run on their own hardware.

    python -m rbmsearch.bench NAME [options]      # NAME: data

Each benchmark prints progress to stderr and ends with its figures as one JSON line on
stdout, so scripts can read the result (`... | tail -1 | jq`).

- `data --source SRC`: import a source (a MIDI folder, a .pickle, or bach-chorales) into a
  temporary Parquet file; report files_per_s and frames_per_s for the import, and load_s,
  the time to read that Parquet back into arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def bench_data(args: argparse.Namespace) -> dict:
    from rbmsearch.data import BuildOptions, build, read_dataset

    options = BuildOptions(workers=args.workers, progress=False, steps_per_quarter=args.steps_per_quarter)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.parquet"
        start = time.perf_counter()
        built = build(args.source, out, options)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = read_dataset(out)
        load_s = time.perf_counter() - start
        size = out.stat().st_size
    frames = sum(len(p.roll) for p in loaded.pieces)
    files = len(built.pieces) + len(built.skipped)
    return {
        "source": args.source,
        "workers": args.workers,
        "files": files,  # for a pickle: its pieces
        "pieces": len(built.pieces),
        "skipped": len(built.skipped),
        "frames": frames,
        "build_s": round(build_s, 3),
        "files_per_s": round(files / build_s, 1),
        "frames_per_s": round(frames / build_s),
        "load_s": round(load_s, 4),
        "load_frames_per_s": round(frames / load_s),
        "parquet_bytes": size,
    }


BENCHMARKS = {"data": bench_data}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.bench", description="Measure rbmsearch on this machine.")
    commands = parser.add_subparsers(dest="name", required=True)
    data = commands.add_parser("data", help="import a source to Parquet and load it back")
    data.add_argument("--source", required=True, help="a folder of MIDI files, a .pickle file, or bach-chorales")
    data.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    data.add_argument("--steps-per-quarter", type=int)
    args = parser.parse_args(argv)
    figures = BENCHMARKS[args.name](args)
    figures = {"benchmark": args.name, **figures, "cpus": os.cpu_count(), "machine": platform.machine()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
