"""Patches that could not be read (damaged tiles): dropped from a store before it is finished.

The patch reader marks a patch whose pixels cannot be decoded; the pipeline writes its
row as NaN and tells the writer, which records the row (``damaged_rows``, so an
interrupted run resumes with it) and, at :meth:`~.writer.CacheWriter.finish`, drops the
rows here: every per-patch array loses them in place (forward compaction, chunk by chunk,
then ``resize``), regions left without patches are dropped and the region indices
renumbered. A finished store therefore holds only patches that were read, and says how
many were not (``n_damaged``, ``damaged_coords_px``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from ...errors import CacheError

__all__ = ["PATCH_ARRAYS", "drop_patches"]

#: The per-patch arrays of a store, besides ``features``.
PATCH_ARRAYS = ("coords_px", "grid_xy", "region_index", "tissue_fraction")


def _array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    return arr


def _compact(arr: zarr.Array, keep: np.ndarray, chunk_rows: int, transform: np.ndarray | None = None) -> None:
    """Move the kept rows of ``arr`` to its front, chunk by chunk, then shrink it."""
    written = 0
    for start in range(0, arr.shape[0], chunk_rows):
        stop = min(arr.shape[0], start + chunk_rows)
        rows = np.asarray(arr[start:stop])[keep[start:stop]]
        if transform is not None:
            rows = transform[rows]
        if len(rows):
            arr[written : written + len(rows)] = rows  # written <= start: rows not yet read are never touched
            written += len(rows)
    arr.resize((written, *arr.shape[1:]))


def drop_patches(group: zarr.Group, rows: Sequence[int], *, chunk_rows: int) -> tuple[int, int, list[list[int]]]:
    """Remove patches ``rows`` from a store's arrays (in place) and renumber its regions.

    Parameters
    ----------
    group
        The (partial) store.
    rows
        Patch indices to drop.
    chunk_rows
        Rows moved at a time.

    Returns
    -------
    (n_patches, n_regions, dropped_coords_px)
        What is left, and the level-0 corners of the dropped patches.

    Raises
    ------
    CacheError
        Every patch would be dropped.
    """
    features = _array(group, "features")
    n = int(features.shape[0])
    keep = np.ones(n, bool)
    drop = np.unique(np.asarray(rows, dtype=np.int64))
    keep[drop[(drop >= 0) & (drop < n)]] = False
    if not keep.any():
        raise CacheError(f"{group.store}: none of the {n} tissue patches could be read (damaged tiles)")
    dropped = np.asarray(_array(group, "coords_px")[:])[~keep].astype(int).tolist()
    remap: np.ndarray | None = None
    n_regions = 0
    if "region_index" in group and "region_xy" in group:
        region_index = np.asarray(_array(group, "region_index")[:])
        region_xy = _array(group, "region_xy")
        used = np.unique(region_index[keep])
        remap = np.full(int(region_xy.shape[0]), -1, np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        kept_xy = np.asarray(region_xy[:])[used]
        region_xy.resize(kept_xy.shape)
        region_xy[...] = kept_xy
        n_regions = len(used)
    for name in PATCH_ARRAYS:
        if name in group:
            _compact(_array(group, name), keep, chunk_rows, remap if name == "region_index" else None)
    _compact(features, keep, chunk_rows)
    return int(keep.sum()), n_regions, dropped
