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

from rbmsearch.errors import OutputError, RbmsearchError

__all__ = ["atomic_write", "create_whole", "make_dir", "read_json", "write_json", "write_text"]

FILE_MODE = 0o644


def make_dir(path: str | os.PathLike) -> Path:
    """Create a directory and its parents; an output that cannot be one raises OutputError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "is a file, where a directory is written; choose another output path, or move the file away")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(path, f"cannot be created ({e.strerror or e}); choose another output path") from e
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`.

    The parent directory is created. On any exception the temporary file is removed and
    `path` keeps its old content (or stays absent). A path that cannot be written raises OutputError.
    """
    path = Path(path)
    tmp = _written_beside(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def create_whole(path: str | os.PathLike, write: Callable[[Path], None]) -> bool:
    """Like `atomic_write`, for a file that others may open as soon as it exists and that no
    writer may replace: the temporary file is hard-linked to `path` only if `path` is still
    absent, so a reader never sees it half made (an SQLite schema, say). Returns False, and
    leaves `path` as it is, where it exists."""
    path = Path(path)
    if path.exists():
        return False
    tmp = _written_beside(path, write)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: rename, unless it was made meanwhile
        if path.exists():
            return False
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _written_beside(path: Path, write: Callable[[Path], None]) -> Path:
    """A temporary file beside `path` (its parent created), filled by `write` and given FILE_MODE;
    removed again if `write` raises."""
    if path.is_dir():
        raise OutputError(path, "is a directory, where a file is written; give a file name")
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    except OSError as e:
        raise OutputError(path, f"cannot be written ({e.strerror or e}); choose another output path") from e
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj) -> Path:
    """Indented, key-sorted JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, error: type[RbmsearchError], fix: str):
    """Parse a JSON file; a missing, unreadable or malformed one raises `error(path, reason)`.

    `error` is a path error class of rbmsearch.errors, called as error(path, reason); `fix`
    ends the message ("rerun ...").
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
