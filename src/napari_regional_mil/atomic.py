"""Atomic file writes: the one helper every writer of the package uses.

A file is written to a temporary file in the same folder, flushed to disk, and moved
onto its final name with one ``os.replace``: a reader sees the old file or the new one,
never a half-written one, and an interrupted write leaves no temporary file behind.

>>> with atomic_path("model.safetensors") as tmp:     # write whatever you like to tmp
...     save_file(tensors, tmp)
>>> write_text_atomic("cohort.csv", text)
>>> write_json_atomic("run.json", {"seed": 0})

The temporary file is created with the usual permissions (``0o666`` less the umask), not
the ``0o600`` of :func:`tempfile.mkstemp`. On Windows a rename onto a file another
process holds open fails for a moment (virus scanners, indexers, a reader finishing):
:func:`replace` retries for up to :data:`WINDOWS_RETRY_S` seconds before giving up.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WINDOWS_RETRY_S", "atomic_path", "replace", "temp_path_for", "write_json_atomic", "write_text_atomic"]

#: How long a rename is retried on Windows while the target is held open by another process.
WINDOWS_RETRY_S = 2.0


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary name next to ``path`` (``.<name>.<random>.tmp``); nothing is created."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """``os.replace(source, target)``, retried briefly on Windows while ``target`` is held open.

    Parameters
    ----------
    source, target
        Paths in the same folder (files, or directories when ``target`` does not exist).

    Raises
    ------
    OSError
        The rename failed (on Windows: still after :data:`WINDOWS_RETRY_S` seconds).
    """
    if sys.platform != "win32":
        os.replace(source, target)
        return
    deadline = time.monotonic() + WINDOWS_RETRY_S
    while True:
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file exists (empty) when the block starts; the block writes it by name
    (``save_file(tensors, tmp)``, ``h5py.File(tmp, "w")``, ``open(tmp, "wb")``...). When
    the block raises, the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path
        The final file. Its folder must exist.
    durable
        Flush the written file to disk (``fsync``) before the rename, so a power cut
        cannot leave an empty file under the final name. Off only for files that are
        cheap to write again.

    Yields
    ------
    pathlib.Path
        The temporary file to write.

    Raises
    ------
    OSError
        The folder is missing or not writable, the disk is full, or the rename failed;
        ``filename`` names the file.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666)
    os.close(fd)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; return the path."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike[str], data: object, *, indent: int | None = 1, sort_keys: bool = True
) -> Path:
    """Write ``data`` as JSON (NaN allowed, as Python's :mod:`json` writes it) atomically; return the path."""
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
