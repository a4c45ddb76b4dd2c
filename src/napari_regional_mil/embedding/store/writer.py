"""Writing stores: the per-store lock, the resumable chunked writer, regional pooling."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from filelock import FileLock, Timeout

from ...atomic import replace
from ...errors import CacheError
from ..types import SlideEmbeddings
from .damaged import drop_patches
from .keys import (
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    PathLike,
    StoreLocation,
    check_dtype,
    store_path,
)
from .reader import META_KEYS, is_complete
from .rows import store_array

__all__ = [
    "CHUNK_ROWS",
    "CacheWriter",
    "StoreLock",
    "check_writable",
    "pool_regions",
    "write_slide_embeddings",
]

#: Patches per chunk of ``features``: the unit in which an interrupted run resumes.
CHUNK_ROWS = 1024

_log = logging.getLogger("napari_regional_mil")


class StoreLock:
    """The lock of one store (the ``filelock`` package): one writer per store at a time.

    Held while a store is created, resumed, finished or extended (context embeddings),
    by every process and thread; another writer of the same store waits, then finds the
    store complete and reuses it. The lock file (``StoreLocation.lock``) stays in the cache
    directory (removing it would race with a waiting process).

    Parameters
    ----------
    location
        The store.
    """

    def __init__(self, location: StoreLocation) -> None:
        self.path = location.lock
        self._lock = FileLock(str(self.path), thread_local=False)

    def acquire(self, timeout: float) -> bool:
        """Try to take the lock for up to ``timeout`` seconds; whether it was taken.

        Raises
        ------
        CacheError
            The lock file cannot be created (folder missing or not writable).
        """
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            return False
        except OSError as exc:
            raise CacheError(f"{self.path}: cannot lock the cache ({exc.strerror or exc})") from None
        return True

    def release(self) -> None:
        """Release the lock (when held)."""
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> StoreLock:
        self.acquire(timeout=-1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_writable(cache_dir: PathLike, *, min_free_bytes: int = 0) -> Path:
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
            raise CacheError(
                f"{cache_dir}: only {free / 2**20:.0f} MiB free, about {min_free_bytes / 2**20:.0f} MiB needed"
            )
    return cache_dir


def pool_regions(
    features: np.ndarray | zarr.Array, region_index: np.ndarray, n_regions: int, *, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max of each region's patch embeddings, reading ``features`` chunk by chunk.

    Parameters
    ----------
    features
        ``(N, D)`` array supporting row slices (numpy or zarr).
    region_index
        ``(N,)`` region of each patch.
    n_regions
        R.
    chunk_rows
        Rows read at a time.

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


def _resumable(
    partial: Path, *, key: str, embedding_dim: int, coords_px: np.ndarray, dtype: str
) -> tuple[zarr.Group | None, str]:
    """Open a partial store to resume it: ``(group, "")``, or ``(None, why it cannot be resumed)``."""
    try:
        group = zarr.open_group(partial, mode="r+", zarr_format=3)
        a: dict[str, Any] = dict(group.attrs)
        if a.get("cache_key") != key:
            return None, "it belongs to another slide, tiling or encoder"
        if not a.get("created_ok"):
            return None, "its creation was interrupted"
        if int(a.get("embedding_dim", -1)) != embedding_dim:
            return None, f"its embedding dimension {a.get('embedding_dim')} is not {embedding_dim}"
        stored = np.dtype(store_array(group, "features").dtype).name
        if stored != dtype:
            return None, f"its embeddings are {stored}, not {dtype}"
        if not np.array_equal(np.asarray(store_array(group, "coords_px")[:]), coords_px):
            return None, "its patches differ from this tiling"
    except (OSError, KeyError, ValueError, TypeError) as exc:  # zarr errors are ValueErrors
        return None, f"it cannot be opened ({type(exc).__name__}: {exc})"
    return group, ""


class CacheWriter:
    """Writes one store under ``<final>.partial``, chunk by chunk; resumable after a kill.

    Use :meth:`open` to create or resume, :meth:`append` for each batch of patch
    embeddings (in patch order), and :meth:`finish` to pool regions and mark the store
    complete. Nothing under the final name exists until :meth:`finish`. Hold the
    store's :class:`StoreLock` around all of it when other writers may exist.

    Attributes
    ----------
    discarded
        Why a partial store found at :meth:`open` could not be resumed and was deleted
        ("" when there was none or it was resumed); also logged as one warning line.
    """

    def __init__(self, final: Path, group: zarr.Group, *, n_done: int, chunk_rows: int, discarded: str = "") -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL_SUFFIX)
        self.discarded = discarded
        self._group = group
        features = store_array(group, "features")
        self._features = features
        self._dtype = np.dtype(features.dtype)
        self._chunk_rows = chunk_rows
        self.n_done = n_done  # rows durably written (a multiple of chunk_rows, or N)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        # patches that could not be read (damaged tiles): NaN rows, dropped at finish (.damaged)
        damaged = group.attrs.get("damaged_rows", [])
        self._damaged = {int(r) for r in damaged} if isinstance(damaged, list) else set()
        self._pending_damaged: list[int] = []
        self.n_damaged = len(self._damaged)

    @property
    def n_patches(self) -> int:
        """N, the number of patches of the store."""
        return int(self._features.shape[0])

    @classmethod
    def open(
        cls,
        final: PathLike,
        *,
        key: str,
        patch_arrays: Mapping[str, np.ndarray],
        region_xy: np.ndarray | None,
        embedding_dim: int,
        attrs: Mapping[str, object],
        chunk_rows: int = CHUNK_ROWS,
        dtype: str = "float32",
    ) -> CacheWriter:
        """Resume the partial store of ``final`` when it matches, else create it afresh.

        A partial store matches when its key, embedding dimension, dtype and patch
        coordinates equal these. One that does not, or that cannot be opened, is reported
        (one warning line, and :attr:`discarded`) and deleted.

        ``features`` is stored in ``dtype`` (``"float16"`` or ``"float32"``) without a
        compressor, so that training reads single rows straight from the chunk files
        (:mod:`.rows`); the other arrays are small and compressed.

        Raises
        ------
        CacheError
            The store cannot be written.
        """
        final = Path(final)
        dtype = check_dtype(dtype)
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        discarded = ""
        if partial.exists():
            group, why = _resumable(
                partial, key=key, embedding_dim=embedding_dim, coords_px=patch_arrays["coords_px"], dtype=dtype
            )
            if group is not None:
                stored_rows = int(store_array(group, "features").chunks[0])  # resume in the store's own chunks
                n_done = group.attrs.get("n_done", 0)
                return cls(final, group, n_done=int(n_done) if isinstance(n_done, (int, float)) else 0,
                           chunk_rows=stored_rows)
            discarded = f"{partial}: discarding the partial cache and starting afresh: {why}"
            _log.warning(discarded)
            shutil.rmtree(partial, ignore_errors=True)
        n = int(patch_arrays["coords_px"].shape[0])
        try:
            group = zarr.open_group(partial, mode="w", zarr_format=3)
            for name, values in patch_arrays.items():
                chunks = (max(1, min(n, 65536)), *values.shape[1:])
                group.create_array(name, shape=values.shape, chunks=chunks, dtype=values.dtype)[...] = values
            if region_xy is not None:
                chunks = (max(1, region_xy.shape[0]), 2)
                group.create_array("region_xy", shape=region_xy.shape, chunks=chunks, dtype=np.int32)[...] = (
                    region_xy.astype(np.int32)
                )
            group.create_array(
                "features", shape=(n, embedding_dim), chunks=(chunk_rows, embedding_dim), dtype=dtype,
                fill_value=np.nan, compressors=None,
            )
            initial: dict[str, Any] = {
                **attrs, "dtype": dtype, "cache_key": key, "n_done": 0, "complete": False, "created_ok": True,
            }
            group.attrs.update(initial)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise CacheError(f"{partial}: cannot write the cache ({exc.strerror or exc})") from None
        return cls(final, group, n_done=0, chunk_rows=chunk_rows, discarded=discarded)

    def append(self, features: np.ndarray, *, damaged: Sequence[int] = ()) -> None:
        """Add the embeddings of the next patches; whole chunks are written as they fill.

        The embeddings are computed in float32 and stored in the store's dtype.
        ``damaged`` are the store rows among these that could not be read (their rows are
        NaN); they are recorded with the chunks and dropped by :meth:`finish`.

        Raises
        ------
        CacheError
            A value that the store's dtype cannot hold (beyond float16's +-65504).
        """
        block = np.asarray(features, dtype=np.float32)
        if self._dtype != block.dtype:
            with np.errstate(over="ignore"):
                stored = block.astype(self._dtype)
            overflow = ~np.isfinite(stored) & np.isfinite(block)
            if overflow.any():
                row = self.n_done + self._buffered + int(np.argwhere(overflow)[0][0])
                raise CacheError(
                    f"{self.partial}: patch {row} has embedding values beyond the range of {self._dtype.name} "
                    f"(largest |value| {float(np.abs(block[np.isfinite(block)]).max()):.4g}); "
                    "embed with --dtype float32"
                )
            block = stored
        self._buffer.append(block)
        self._pending_damaged.extend(int(r) for r in damaged)
        self._buffered += len(features)
        end = self.n_done + self._buffered
        if self._buffered >= self._chunk_rows or end >= self.n_patches:
            self._flush(final=end >= self.n_patches)

    def _flush(self, *, final: bool) -> None:
        block = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        keep = len(block) if final else (len(block) // self._chunk_rows) * self._chunk_rows
        landed = [r for r in self._pending_damaged if r < self.n_done + keep]
        try:
            self._features[self.n_done : self.n_done + keep] = block[:keep]
            if landed:  # recorded with their chunks, so a resumed run still drops them
                self._damaged.update(landed)
                self._group.attrs["damaged_rows"] = sorted(self._damaged)
            self._group.attrs["n_done"] = self.n_done + keep  # after the chunks landed
        except OSError as exc:
            raise CacheError(f"{self.partial}: cannot write the cache ({exc.strerror or exc})") from None
        self.n_done += keep
        self._pending_damaged = [r for r in self._pending_damaged if r >= self.n_done]
        rest = block[keep:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def finish(self, *, extra_attrs: Mapping[str, object] | None = None) -> Path:
        """Pool regional embeddings (mean, max) when there are regions, mark complete, rename into place.

        Raises
        ------
        CacheError
            Patches are missing, or the store cannot be written or renamed.
        """
        if self.n_done < self.n_patches:
            raise CacheError(f"{self.partial}: {self.n_done}/{self.n_patches} patches written; cannot finish")
        group = self._group
        self.n_damaged = len(self._damaged)
        if self._damaged:  # patches that could not be read leave the store (never a NaN or zero row in it)
            try:
                kept, regions, coords = drop_patches(group, sorted(self._damaged), chunk_rows=self._chunk_rows)
                group.attrs.update({"n_patches": kept, "n_done": kept, "n_regions": regions,
                                    "n_damaged": len(self._damaged), "damaged_coords_px": coords})
            except OSError as exc:
                raise CacheError(f"{self.partial}: cannot finish the cache ({exc.strerror or exc})") from None
        pooled: tuple[tuple[str, np.ndarray], ...] = ()
        if "region_xy" in group and "region_index" in group:
            region_xy = np.asarray(store_array(group, "region_xy")[:])
            region_index = np.asarray(store_array(group, "region_index")[:])
            mean, peak = pool_regions(self._features, region_index, int(region_xy.shape[0]))
            pooled = (("region_mean", mean), ("region_max", peak))
        try:
            for name, values in pooled:  # one uncompressed chunk: training reads it whole at every step
                chunks = (max(1, values.shape[0]), values.shape[1])
                arr = group.create_array(
                    name, shape=values.shape, chunks=chunks, dtype=np.float32, overwrite=True, compressors=None
                )
                arr[...] = values
            done = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            finished: dict[str, Any] = {**(extra_attrs or {}), "complete": True, "completed": done}
            group.attrs.update(finished)
            replace(self.partial, self.final)
        except OSError as exc:
            if is_complete(self.final):  # a writer that did not hold the lock finished first
                shutil.rmtree(self.partial, ignore_errors=True)
                return self.final
            raise CacheError(f"{self.partial}: cannot finish the cache ({exc.strerror or exc})") from None
        return self.final


def write_slide_embeddings(
    cache_dir: PathLike,
    emb: SlideEmbeddings,
    *,
    key: str,
    attrs: Mapping[str, object] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write ``emb`` (e.g. imported from h5) as a complete store; returns its path.

    The store is built under ``.partial`` and renamed into place, holding its lock;
    regional embeddings are pooled (mean, max) when the bag has regions. The patch
    embeddings are stored in ``dtype``.
    """
    check_writable(cache_dir)
    n = emb.n_patches
    coords = np.zeros((n, 2), np.int64) if emb.coords_px is None else emb.coords_px.astype(np.int64)
    arrays: dict[str, np.ndarray] = {"coords_px": coords}
    region_xy = None
    if emb.grid_xy is not None and emb.region_index is not None and emb.region_xy is not None and emb.has_regions:
        arrays["grid_xy"] = emb.grid_xy.astype(np.int32)
        arrays["region_index"] = emb.region_index.astype(np.int32)
        region_xy = emb.region_xy.astype(np.int32)
    if emb.tissue_fraction is not None:
        arrays["tissue_fraction"] = emb.tissue_fraction.astype(np.float32)
    meta = {k: v for k, v in emb.meta.items() if k in META_KEYS and k != "cache_key"}
    base = {
        **meta, "slide_name": emb.slide_name, "n_patches": n, "embedding_dim": emb.embedding_dim,
        "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "has_coords": emb.coords_px is not None, **(attrs or {}),
    }
    location = StoreLocation(key, store_path(cache_dir, emb.slide_name, key))
    with StoreLock(location):
        writer = CacheWriter.open(
            location.path, key=key, patch_arrays=arrays, region_xy=region_xy, embedding_dim=emb.embedding_dim,
            attrs=base, dtype=dtype,
        )
        if n:
            writer.append(emb.features)
        return writer.finish()
