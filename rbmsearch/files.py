"""Files that are never left half-written, and JSON that says which file is broken.

Every writer in rbmsearch goes through `atomic_write`: the content goes to a temporary file
beside the target, which is then renamed over it, so a crash or a full disk never destroys
an existing file. Files get mode 0644 (readable by the gallery's server and by other users),
not mkstemp's 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from rbmsearch.errors import RbmsearchError

__all__ = ["atomic_write", "read_json", "write_json", "write_text"]

FILE_MODE = 0o644


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`.

    The parent directory is created. On any exception the temporary file is removed and
    `path` keeps its old content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj) -> Path:
    """Indented, key-sorted JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, error: type[RbmsearchError], fix: str):
    """Parse a JSON file; a missing, unreadable or malformed one raises `error(path, reason)`.

    `error` is a path error class of rbmsearch.errors; `fix` ends the message ("rerun ...").
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise error(path, f"missing; {fix}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise error(path, f"cannot be read ({e}); {fix}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(path, f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}), perhaps truncated; {fix}") from e
