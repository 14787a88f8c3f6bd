"""Experiment storage: local paths and URIs (s3://, gs://, ...) through `pyarrow.fs`.

A search writes under STORAGE/NAME, which may be a local directory or a bucket that every
node of a cluster shares. These helpers read and write small files there and upload a
locally staged directory, and `storage_filesystem` gives Ray Tune a local filesystem whose
files appear only once complete (Tune copies its state there non-atomically, so a driver
killed mid-copy would leave a truncated file that --resume cannot read). No Ray here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow
import pyarrow.fs

from rbmsearch.files import FILE_MODE, write_text

__all__ = ["is_uri", "read_text", "remove_partial_files", "storage_filesystem", "storage_root", "store_text", "upload"]

PARTIAL_SUFFIX = ".partial"  # a file that storage_filesystem is still writing: .NAME.XXXX.partial


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root(storage: str) -> str:
    """A URI without its trailing slash, or an absolute local path."""
    return storage.rstrip("/") if is_uri(storage) else str(Path(storage).expanduser().resolve())


def _filesystem(uri: str):
    return pyarrow.fs.FileSystem.from_uri(uri)


def read_text(uri: str) -> str | None:
    """The text of a file at a path or URI, or None when there is none."""
    fs, path = _filesystem(uri) if is_uri(uri) else (pyarrow.fs.LocalFileSystem(), uri)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.readall().decode()


def store_text(uri: str, text: str) -> None:
    """Write a file at a path (atomically) or a URI (object stores replace whole objects)."""
    if not is_uri(uri):
        write_text(uri, text)
        return
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def upload(local: Path, uri: str) -> None:
    """Copy a local directory's files to a URI, then remove the local copy."""
    fs, path = _filesystem(uri)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    shutil.rmtree(local)


def storage_filesystem(storage: str):
    """Ray Tune's `storage_filesystem` for a storage root: None for a URI (an object store
    replaces whole objects), else a local filesystem whose writes are atomic."""
    return None if is_uri(storage) else pyarrow.fs.PyFileSystem(AtomicLocalHandler())


def remove_partial_files(root: str) -> int:
    """Delete the half-written files that a killed writer of storage_filesystem left under a
    local root (nothing for a URI); returns how many."""
    if is_uri(root):
        return 0
    found = list(Path(root).rglob(f".*{PARTIAL_SUFFIX}"))
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


class _PartialFile:
    """A file written beside `path` under a hidden name, renamed to `path` when closed.

    A failed write discards it on close; a killed process leaves only the hidden file."""

    def __init__(self, path: str):
        self.path = path
        fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=PARTIAL_SUFFIX)
        self._file = os.fdopen(fd, "wb")
        self._failed = False
        self.closed = False

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except BaseException:
            self._failed = True
            raise

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
            if self._failed:
                raise OSError(f"{self.path}: a write failed; the file keeps its old content")
            os.chmod(self.tmp, FILE_MODE)
            os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)


class AtomicLocalHandler(pyarrow.fs.FileSystemHandler):
    """`pyarrow.fs.LocalFileSystem`, except that written and copied files appear whole or not at all."""

    def __init__(self):
        self._fs = pyarrow.fs.LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __hash__(self) -> int:
        return hash(AtomicLocalHandler)

    def get_type_name(self) -> str:
        return "rbmsearch-atomic-local"

    def normalize_path(self, path):
        return self._fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the filesystem's root")

    def delete_file(self, path):
        self._fs.delete_file(path)

    def move(self, src, dest):
        self._fs.move(src, dest)

    def copy_file(self, src, dest):
        with self._fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            target.upload(source)

    def open_input_stream(self, path):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path):
        return self._fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pyarrow.PythonFile(_PartialFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self._fs.open_append_stream(path)
