"""What every command line shares: messages on stderr through `logging`, and one error handler.

Library code logs to the "rbmsearch" loggers and warns with `warnings`; only a CLI decides
that those reach the terminal. A domain error (`RbmsearchError`) ends a command with its
one-line message and exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from rbmsearch.errors import RbmsearchError

__all__ = ["cli"]


class _Formatter(logging.Formatter):
    """Information as it is; warnings and errors prefixed with their level, as `warning: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _setup_logging() -> None:
    logger = logging.getLogger("rbmsearch")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    # TensorFlow's C++ start-up banners (oneDNN, CUDA probing) are noise on a terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cli(main: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], None]:
    """Wrap a stage's `main(argv)`: logging to stderr, and `error: MESSAGE` for domain errors."""

    def wrapped(argv: list[str] | None = None) -> None:
        _setup_logging()
        try:
            main(argv)
        except RbmsearchError as e:
            raise SystemExit(f"error: {e}") from e

    wrapped.__doc__, wrapped.__name__, wrapped.__wrapped__ = main.__doc__, main.__name__, main
    return wrapped
