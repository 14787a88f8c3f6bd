"""What every command line shares: messages on stderr through `logging`, and one error handler.

Library code logs to the "rbmsearch" loggers and warns with `warnings`; only a CLI decides
that those reach the terminal. A domain error (`RbmsearchError`) ends a command with its
one-line message and exit status 1 (`--debug`, or RBMSEARCH_DEBUG=1, shows its traceback);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable

from rbmsearch.errors import RbmsearchError

__all__ = ["DEBUG_FLAG", "TF_STARTUP_NOISE", "cli", "import_tensorflow"]

DEBUG_FLAG = "--debug"  # any command: show the traceback of a domain error instead of one line

# TensorFlow's C++ start-up lines. They are written to the process's stderr before its logging
# is set up, so TF_CPP_MIN_LOG_LEVEL does not hide them: one set per process, workers included.
# Whether a GPU was found is reported by rbmsearch.model.configure_devices instead.
TF_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning",
)


@contextlib.contextmanager
def _native_stderr_without(noise: tuple[str, ...]):
    """Send file descriptor 2 to a temporary file meanwhile; then pass on every line but `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True) if not any(n in line for n in noise)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow():
    """Import TensorFlow and let it probe its devices, without its start-up lines
    (TF_STARTUP_NOISE); anything else it writes meanwhile still reaches stderr. Returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the later C++ INFO and WARNING lines
    with _native_stderr_without(TF_STARTUP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe happens here, inside the filter
    return tf


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
