"""What every command line shares: messages on stderr through `logging`, and one error handler.

Library code logs to the "rbmsearch" loggers and warns with `warnings`; only a CLI decides
that those reach the terminal. A domain error (`RbmsearchError`) ends a command with its
one-line message and exit status 1 (`--debug`, or RBMSEARCH_DEBUG=1, shows its traceback);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

from rbmsearch.errors import RbmsearchError

__all__ = ["DEBUG_FLAG", "cli"]

DEBUG_FLAG = "--debug"  # any command: show the traceback of a domain error instead of one line


class _Formatter(logging.Formatter):
    """Information as it is; warnings and errors prefixed with their level, as `warning: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def cli(main: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], None]:
    """Wrap a stage's `main(argv)`: logging to stderr, and `error: MESSAGE` for domain errors."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> None:
        argv = sys.argv[1:] if argv is None else list(argv)
        debug = DEBUG_FLAG in argv or os.environ.get("RBMSEARCH_DEBUG") == "1"
        argv = [a for a in argv if a != DEBUG_FLAG]
        # TensorFlow's C++ start-up banners (oneDNN, CUDA probing) are noise on a terminal.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        logger = logging.getLogger("rbmsearch")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        # Only this handler while the command runs: libraries that configure the root logger
        # (logging.basicConfig) would print every message a second time.
        saved = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            main(argv)
        except RbmsearchError as e:
            if debug:  # the whole traceback, for a bug report
                raise
            raise SystemExit(f"error: {e}") from e
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])  # setLevel, not .level =: it clears logging's cached levels
            logger.propagate = saved[1]

    return wrapped
