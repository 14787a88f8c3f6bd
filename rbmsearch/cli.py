"""The `rbmsearch` command: one entry point for every stage.

    rbmsearch data build --source SRC --out OUT.parquet     rbmsearch train --data D --out RUN
    rbmsearch tune [...]    rbmsearch evaluate RUN    rbmsearch render RUN --out DIR
    rbmsearch gallery DIR   rbmsearch bench NAME      rbmsearch --version

`rbmsearch STAGE ARGS` is `python -m rbmsearch.STAGE ARGS`; `python -m rbmsearch` is this
command. A stage's module is imported only when it runs, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rbmsearch import __version__

__all__ = ["STAGES", "main"]

# Stage -> what it does, in pipeline order.
STAGES = {
    "data": "MIDI folders, benchmark pickles or bach-chorales -> a Parquet dataset",
    "train": "pretrain, train and test one configuration into a run directory",
    "evaluate": "score a run directory: AIS/RAISE NLL and frame accuracy",
    "tune": "search hyperparameters with Ray Tune and Optuna (the main job)",
    "render": "a run directory's samples as MIDI, WAV and piano rolls",
    "gallery": "build and serve the page of a search or a run",
    "bench": "measure this machine",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="rbmsearch",
        description="Find the RNN-RBM that models your polyphonic music best, and hear what it plays.",
        epilog="Each stage has its own --help: rbmsearch STAGE --help.",
    )
    parser.add_argument("--version", action="version", version=f"rbmsearch {__version__}")
    parser.add_argument("stage", choices=list(STAGES), metavar="STAGE", help="; ".join(f"{k}: {v}" for k, v in STAGES.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the stage's own arguments")
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(f"rbmsearch.{args.stage}")
    module.main(argv[1:])


if __name__ == "__main__":
    main()
