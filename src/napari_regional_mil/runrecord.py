"""``run.json``: what a run did, written beside its outputs so it can be repeated and checked.

A run record holds the command, the effective options (the config file's values with the
command line's on top, every default filled in), the seed, the package versions, the
git commit of the package's source when it runs from a git checkout, and fingerprints of
its inputs:

- the cohort table: the SHA-256 of the file;
- embedding caches: each store's cache key (a SHA-256 of the slide file, the tiling, the
  tissue mask and the encoder, computed when the store was written), and one SHA-256
  over every (slide, key) pair, ``caches_sha256``;
- feature files of other tools: the SHA-256 of each file (``features_sha256`` over all).

Nothing here imports torch (versions of the heavy packages are read from their
distribution metadata).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic

__all__ = ["PACKAGES", "file_sha256", "git_commit", "jsonable", "run_record", "versions", "write_run_record"]

#: Packages whose versions a run record lists (those that change results).
PACKAGES = (
    "napari-regional-mil", "torch", "numpy", "scikit-learn", "scipy", "timm", "safetensors", "zarr", "tifffile",
    "openslide-python", "h5py",
)


def file_sha256(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Python, the platform and :data:`PACKAGES` (``"absent"`` when not installed)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_commit(folder: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``folder``.

    ``folder`` defaults to this package's source; ``None`` when it is not in a checkout or git
    is unavailable.
    """
    where = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def jsonable(value: Any) -> Any:
    """``value`` with paths as text, dataclasses as dicts, tuples and sets as lists (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _combined(pairs: Iterable[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(sorted(pairs)).encode()).hexdigest()


def run_record(
    command: str,
    options: Mapping[str, Any],
    *,
    seed: int | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cohort_table: str | os.PathLike[str] | None = None,
    caches: Mapping[str, str] | None = None,
    feature_files: Mapping[str, str | os.PathLike[str]] | None = None,
    outputs: Iterable[str] = (),
) -> dict[str, Any]:
    """The run record (see the module docstring).

    Parameters
    ----------
    command
        The command (``train``, ``crossval``...).
    options
        The effective options (e.g. ``vars(args)``).
    seed
        The run's seed.
    config_file
        The ``--config`` file, if any (its SHA-256 is recorded).
    cohort_table
        The labels table, if any.
    caches
        ``{slide name: cache key}`` of the embedding caches used.
    feature_files
        ``{slide name: path}`` of the feature files used.
    outputs
        The files the run wrote (names).
    """
    record: dict[str, Any] = {
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": list(sys.argv),
        "options": jsonable({k: v for k, v in options.items() if not callable(v)}),
        "seed": seed,
        "versions": versions(),
        "git": git_commit(),
        "outputs": sorted(outputs),
    }
    if config_file is not None:
        record["config_file"] = {"path": os.fspath(config_file), "sha256": file_sha256(config_file)}
    inputs: dict[str, Any] = {}
    if cohort_table is not None:
        inputs["cohort_table"] = {"path": os.fspath(cohort_table), "sha256": file_sha256(cohort_table)}
    if caches:
        inputs["caches"] = dict(sorted(caches.items()))
        inputs["caches_sha256"] = _combined(caches.items())
    if feature_files:
        hashes = {name: file_sha256(path) for name, path in feature_files.items()}
        inputs["feature_files"] = {name: {"path": os.fspath(p), "sha256": hashes[name]} for name, p in
                                   sorted(feature_files.items())}
        inputs["features_sha256"] = _combined(hashes.items())
    record["inputs"] = inputs
    return record


def write_run_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write a run record as strict JSON, atomically."""
    return write_text_atomic(path, json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n")
