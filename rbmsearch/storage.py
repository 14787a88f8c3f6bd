"""Experiment storage: local paths and URIs (s3://, gs://, ...) through `pyarrow.fs`.

A search writes under STORAGE/NAME, which may be a local directory or a bucket that every
node of a cluster shares. These helpers read and write small files there and upload a
locally staged directory. No Ray here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rbmsearch.files import write_text

__all__ = ["is_uri", "read_text", "storage_root", "store_text", "upload"]


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root(storage: str) -> str:
    """A URI without its trailing slash, or an absolute local path."""
    return storage.rstrip("/") if is_uri(storage) else str(Path(storage).expanduser().resolve())


def _filesystem(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_text(uri: str) -> str | None:
    """The text of a file at a path or URI, or None when there is none."""
    import pyarrow.fs

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
    import pyarrow.fs

    fs, path = _filesystem(uri)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    shutil.rmtree(local)
