"""The errors rbmsearch raises on bad input, one family under `RbmsearchError`.

Every CLI catches `RbmsearchError` and prints its one-line message, which names the file or
setting, the problem and the fix. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os

__all__ = [
    "BenchError",
    "ConfigError",
    "DatasetError",
    "DivergenceError",
    "GalleryError",
    "MIDIConversionError",
    "OutputError",
    "RbmsearchError",
    "RenderError",
    "RunError",
    "SearchError",
    "SearchSpaceError",
]


class RbmsearchError(Exception):
    """Base of every domain error: bad input that the user can fix, never a bug."""


class _PathError(RbmsearchError):
    """An error about one file or directory: `path` and `reason`, printed as 'path: reason'."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # pickles across Ray's process boundary with both fields
        return type(self), (self.path, self.reason)


class MIDIConversionError(_PathError):
    """A MIDI file could not be turned into a piano roll.

    Expect this on large MIDI collections, where some files are always truncated, empty or
    not MIDI at all: a bulk import should catch it, skip the file and report `reason`.
    """


class DatasetError(_PathError):
    """A dataset source or file is unusable; the message names the path, the problem and the fix."""


class RunError(_PathError):
    """A run directory is missing, incomplete or corrupt; the message names the file and the fix."""


class OutputError(_PathError):
    """An output path cannot be written (a directory where a file goes, a read-only place, ...)."""


class RenderError(RbmsearchError):
    """A run directory, primer or output cannot be rendered; the message names it and the fix."""


class GalleryError(_PathError):
    """The directory is neither an experiment nor a run directory; the message says what to pass."""


class SearchSpaceError(RbmsearchError):
    """A search-space file is invalid. The message names the file, the key and the fix."""

    def __init__(self, path: str | os.PathLike, key: str, reason: str):
        self.path = str(path)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}: {key}: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.key, self.reason)


class ConfigError(RbmsearchError):
    """A configuration value or key is invalid; the message names it and the fix.

    `key` is the TrainConfig field at fault, when one is (None for a malformed --set, say).
    """

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.args[0], self.key)


class SearchError(RbmsearchError):
    """A search cannot start or finish: the experiment directory, resume, or no finished trial."""


class BenchError(RbmsearchError):
    """A benchmark cannot run as asked (a missing device or reference script)."""


class DivergenceError(RbmsearchError):
    """Training produced NaN or inf.

    `epoch` and `what` (the quantity that stopped being finite, e.g. "the validation
    monitor") say where; `config` is the TrainConfig (or any dataclass-like dict) that did it.
    """

    def __init__(self, epoch: int, what: str, config):
        self.epoch = epoch
        self.what = what
        self.config = config
        values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        super().__init__(
            f"training diverged at epoch {epoch}: {what} is not finite. Configuration: "
            f"{json.dumps(values, sort_keys=True)}. Lower learning_rate, set clip_norm, or reduce cd_k."
        )

    def __reduce__(self):
        return type(self), (self.epoch, self.what, self.config)

