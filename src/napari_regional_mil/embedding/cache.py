"""The embedding cache: one zarr (v3) store per (slide, tiling, encoder).

A store is named ``<slide-stem>-<key[:12]>.zarr`` under the cache directory, where the
key (:func:`cache_key`) is the sha256 of the slide's identity (absolute path, size,
mtime and a hash of its first 64 KiB), the tiling parameters, the slide mpp, a user
tissue mask (if any), the encoder's name and weights hash, and :data:`FORMAT_VERSION`.

While being written, a store lives at ``<name>.zarr.partial``. Patch embeddings are
written chunk by chunk (:data:`CHUNK_ROWS` patches each; zarr writes every chunk and
the attributes atomically) and the attribute ``n_done`` is updated after each chunk
lands, so a run that is cancelled or killed resumes from the last whole chunk. At the
end the regional embeddings are pooled, ``complete`` is set, and the directory is
renamed to ``<name>.zarr`` with one atomic ``os.replace``: a store under its final name
is complete, and an incomplete one is never read as complete.

Arrays: ``coords_px`` (N, 2) int64, ``grid_xy`` (N, 2) int32, ``region_index`` (N,)
int32, ``tissue_fraction`` (N,) float32, ``features`` (N, D) float32, ``region_xy``
(R, 2) int32, ``region_mean`` and ``region_max`` (R, D) float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import CacheError

__all__ = [
    "FORMAT_VERSION",
    "CHUNK_ROWS",
    "PARTIAL_SUFFIX",
    "slide_identity",
    "cache_key",
    "store_path",
    "check_writable",
    "CacheWriter",
    "pool_regions",
]

FORMAT_VERSION = 1
CHUNK_ROWS = 1024
PARTIAL_SUFFIX = ".partial"
_HEAD_BYTES = 64 * 1024
_PATCH_ARRAYS = ("coords_px", "grid_xy", "region_index", "tissue_fraction")


def slide_identity(slide_path: str | Path) -> dict[str, Any]:
    """What identifies a slide file: absolute path, size, mtime_ns, sha256 of its first 64 KiB."""
    path = Path(slide_path).expanduser().resolve()
    try:
        stat = path.stat()
        with open(path, "rb") as fh:
            head = hashlib.sha256(fh.read(_HEAD_BYTES)).hexdigest()
    except OSError as exc:
        raise CacheError(f"{path}: cannot read the slide file ({exc.strerror or exc})") from None
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


def cache_key(
    slide_path: str | Path,
    *,
    tiling_params: Any,
    slide_mpp: float,
    encoder_name: str,
    encoder_hash: str,
    mask_hash: str | None = None,
) -> str:
    """The cache key (sha256 hex) of a (slide, tiling, encoder) combination."""
    record = {
        "slide": slide_identity(slide_path),
        "tiling": asdict(tiling_params),
        "slide_mpp": round(float(slide_mpp), 6),
        "mask": mask_hash,
        "encoder": {"name": encoder_name, "weights_hash": encoder_hash},
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def store_path(cache_dir: str | Path, slide_name: str, key: str) -> Path:
    """Final path of the store: ``<cache_dir>/<slide-stem>-<key[:12]>.zarr``."""
    return Path(cache_dir) / f"{slide_name}-{key[:12]}.zarr"


def check_writable(cache_dir: str | Path, *, min_free_bytes: int = 0) -> Path:
    """Create ``cache_dir`` if needed and probe-write a temp file; :class:`CacheError` if not writable."""
    cache_dir = Path(cache_dir).expanduser()
    probe = cache_dir / f".write-probe-{uuid.uuid4().hex}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise CacheError(f"{cache_dir}: cache directory is not writable ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    if min_free_bytes:
        free = shutil.disk_usage(cache_dir).free
        if free < min_free_bytes:
            raise CacheError(f"{cache_dir}: only {free / 2**20:.0f} MiB free, about {min_free_bytes / 2**20:.0f} MiB needed")
    return cache_dir


def pool_regions(
    features: Any, region_index: np.ndarray, n_regions: int, *, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max of each region's patch embeddings, reading ``features`` chunk by chunk.

    Parameters
    ----------
    features
        ``(N, D)`` array-like supporting row slices (numpy or zarr).
    region_index
        ``(N,)`` region of each patch.
    n_regions
        R.

    Returns
    -------
    (mean, max)
        Two ``(R, D)`` float32 arrays; a region without patches is 0.
    """
    n, dim = features.shape
    total = np.zeros((n_regions, dim), np.float64)
    peak = np.full((n_regions, dim), -np.inf, np.float32)
    counts = np.bincount(np.asarray(region_index), minlength=n_regions)
    for start in range(0, n, chunk_rows):
        block = np.asarray(features[start : start + chunk_rows], dtype=np.float32)
        idx = np.asarray(region_index[start : start + chunk_rows])
        order = np.argsort(idx, kind="stable")
        regions, first = np.unique(idx[order], return_index=True)
        block = block[order]
        total[regions] += np.add.reduceat(block, first, axis=0, dtype=np.float64)
        peak[regions] = np.maximum(peak[regions], np.maximum.reduceat(block, first, axis=0))
    mean = (total / np.maximum(counts, 1)[:, None]).astype(np.float32)
    peak[counts == 0] = 0.0
    return mean, peak


class CacheWriter:
    """Writes one store under ``<final>.partial``, chunk by chunk; resumable after a kill.

    Use :meth:`open` to create or resume, :meth:`append` for each batch of patch
    embeddings (in patch order), and :meth:`finish` to pool regions and mark the store
    complete. Nothing under the final name exists until :meth:`finish`.
    """

    def __init__(self, final: Path, group: zarr.Group, *, n_done: int, chunk_rows: int) -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL_SUFFIX)
        self._group = group
        self._features = group["features"]
        self._chunk_rows = chunk_rows
        self.n_done = n_done  # rows durably written (a multiple of chunk_rows, or N)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    @property
    def n_patches(self) -> int:
        """N, the number of patches of the store."""
        return int(self._features.shape[0])

    @classmethod
    def open(
        cls,
        final: str | Path,
        *,
        key: str,
        patch_arrays: dict[str, np.ndarray],
        region_xy: np.ndarray | None,
        embedding_dim: int,
        attrs: dict[str, Any],
        chunk_rows: int = CHUNK_ROWS,
    ) -> CacheWriter:
        """Resume the partial store of ``final`` when it matches, else create it afresh.

        A partial store matches when its key and its patch coordinates equal these; a
        foreign, corrupt or half-created one is deleted and rewritten.
        """
        final = Path(final)
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if partial.exists():
            with contextlib.suppress(Exception):
                group = zarr.open_group(partial, mode="r+", zarr_format=3)
                a = dict(group.attrs)
                if (
                    a.get("cache_key") == key
                    and a.get("created_ok")
                    and int(a.get("embedding_dim", -1)) == embedding_dim
                    and np.array_equal(group["coords_px"][:], patch_arrays["coords_px"])
                ):
                    stored_rows = int(group["features"].chunks[0])  # resume in the store's own chunks
                    return cls(final, group, n_done=int(a.get("n_done", 0)), chunk_rows=stored_rows)
            shutil.rmtree(partial, ignore_errors=True)
        try:
            group = zarr.open_group(partial, mode="w", zarr_format=3)
            n = int(patch_arrays["coords_px"].shape[0])
            for name, values in patch_arrays.items():
                arr = group.create_array(name, shape=values.shape, chunks=(max(1, min(n, 65536)), *values.shape[1:]), dtype=values.dtype)
                arr[...] = values
            if region_xy is not None:
                arr = group.create_array("region_xy", shape=region_xy.shape, chunks=(max(1, region_xy.shape[0]), 2), dtype=np.int32)
                arr[...] = region_xy.astype(np.int32)
            group.create_array(
                "features", shape=(n, embedding_dim), chunks=(chunk_rows, embedding_dim), dtype=np.float32, fill_value=np.nan
            )
            group.attrs.update({**attrs, "cache_key": key, "n_done": 0, "complete": False, "created_ok": True})
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise CacheError(f"{partial}: cannot write the cache ({exc.strerror or exc})") from None
        return cls(final, group, n_done=0, chunk_rows=chunk_rows)

    def append(self, features: np.ndarray) -> None:
        """Add the embeddings of the next patches; whole chunks are written as they fill."""
        self._buffer.append(np.asarray(features, dtype=np.float32))
        self._buffered += len(features)
        end = self.n_done + self._buffered
        if self._buffered >= self._chunk_rows or end >= self.n_patches:
            self._flush(final=end >= self.n_patches)

    def _flush(self, *, final: bool) -> None:
        block = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        keep = len(block) if final else (len(block) // self._chunk_rows) * self._chunk_rows
        try:
            self._features[self.n_done : self.n_done + keep] = block[:keep]
            self._group.attrs["n_done"] = self.n_done + keep  # after the chunks landed
        except OSError as exc:
            raise CacheError(f"{self.partial}: cannot write the cache ({exc.strerror or exc})") from None
        self.n_done += keep
        rest = block[keep:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def finish(self, *, extra_attrs: dict[str, Any] | None = None) -> Path:
        """Pool regional embeddings (mean, max) when there are regions, mark complete, rename into place."""
        if self.n_done < self.n_patches:
            raise CacheError(f"{self.partial}: {self.n_done}/{self.n_patches} patches written; cannot finish")
        group = self._group
        pooled: tuple[tuple[str, np.ndarray], ...] = ()
        if "region_xy" in group and "region_index" in group:
            region_xy = group["region_xy"][:]
            mean, peak = pool_regions(self._features, group["region_index"][:], int(region_xy.shape[0]))
            pooled = (("region_mean", mean), ("region_max", peak))
        try:
            for name, values in pooled:
                arr = group.create_array(
                    name, shape=values.shape, chunks=(self._chunk_rows, values.shape[1]), dtype=np.float32, overwrite=True,
                )
                arr[...] = values
            group.attrs.update({**(extra_attrs or {}), "complete": True, "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            os.replace(self.partial, self.final)
        except OSError as exc:
            if self.final.exists() and _is_complete(self.final):  # another process finished first
                shutil.rmtree(self.partial, ignore_errors=True)
                return self.final
            raise CacheError(f"{self.partial}: cannot finish the cache ({exc.strerror or exc})") from None
        return self.final


def _is_complete(path: Path) -> bool:
    try:
        return bool(json.loads((path / "zarr.json").read_text()).get("attributes", {}).get("complete"))
    except (OSError, ValueError):
        return False
