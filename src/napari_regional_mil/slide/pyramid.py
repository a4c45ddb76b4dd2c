"""Lazy display pyramids (lists of dask arrays) over a slide's tiles.

Native levels wrap tiffslide's zarr group with the native tile size as chunks. An untiled
(strip) TIFF gets sensible chunks (a memory map cut into 1024 x 1024 blocks when the
image is stored uncompressed and contiguous, else whole strips grouped to ~1024 rows),
and every slide whose smallest level is still large gets extra levels, each the lazy 2 x 2
mean of the one above, down to about ``min_size`` px. Nothing is read until napari (or
``compute``) asks for a chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["zarr_levels", "native_level", "halve", "build_pyramid", "STRIP_CHUNK"]

#: Chunk side used for untiled (strip) images.
STRIP_CHUNK = 1024


def zarr_levels(group: Any) -> list[Any]:
    """The zarr arrays of a tiffslide zarr group, level 0 first (keys sorted numerically)."""
    if hasattr(group, "shape"):  # a single array rather than a group
        return [group]
    keys = sorted(group.array_keys(), key=int)
    return [group[k] for k in keys]


def _memmap(path: Path, page: Any) -> np.ndarray | None:
    """A read-only memory map of an uncompressed, contiguous (h, w, c) uint8 page, else None."""
    try:
        if not page.is_memmappable or page.dtype != np.uint8 or len(page.shape) != 3:
            return None
        offset = int(page.dataoffsets[0])
        return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(page.shape))
    except Exception:  # not mappable after all: fall back to zarr
        return None


def native_level(array: Any, *, tiled: bool, path: Path | None = None, page: Any = None) -> Any:
    """One native level as an RGB uint8 dask array with sensible chunks.

    Parameters
    ----------
    array
        The level's zarr array (chunks = tiles or strips).
    tiled
        Whether the level is stored in tiles (chunks = tiles) or strips.
    path, page
        The file and its tifffile page, used to memory-map an untiled image.
    """
    import dask.array as da

    height, width = array.shape[:2]
    chunk_h = array.chunks[0]
    if tiled:
        level = da.from_zarr(array)
    else:
        mapped = _memmap(path, page) if path is not None and page is not None else None
        if mapped is not None:
            level = da.from_array(mapped, chunks=(STRIP_CHUNK, STRIP_CHUNK, mapped.shape[2]), asarray=True,
                                  lock=False, meta=np.empty((0, 0, 0), np.uint8))
        else:
            rows = max(1, chunk_h) * max(1, -(-STRIP_CHUNK // max(1, chunk_h)))
            level = da.from_zarr(array, chunks=(min(rows, height), width) + tuple(array.shape[2:]))
    if level.ndim == 3 and level.shape[2] == 4:
        level = level[..., :3]
    return level


def _mean2x2(block: np.ndarray) -> np.ndarray:
    h, w, c = block.shape
    s = block.reshape(h // 2, 2, w // 2, 2, c).sum(axis=(1, 3), dtype=np.uint16)
    return ((s + 2) // 4).astype(np.uint8)


def halve(level: Any) -> Any:
    """The lazy 2 x 2 mean of a (h, w, 3) uint8 dask level (odd last row/column dropped)."""
    h2, w2 = level.shape[0] // 2, level.shape[1] // 2
    src = level[: 2 * h2, : 2 * w2]
    ch, cw = level.chunksize[:2]
    src = src.rechunk((2 * ch, 2 * cw, level.shape[2]))
    chunks = (tuple(c // 2 for c in src.chunks[0]), tuple(c // 2 for c in src.chunks[1]), src.chunks[2])
    return src.map_blocks(_mean2x2, chunks=chunks, dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))


def build_pyramid(levels: list[Any], *, min_size: int = 1024) -> list[Any]:
    """Native levels plus lazily halved ones until the longer side is at most ``min_size``."""
    out = list(levels)
    while max(out[-1].shape[:2]) > min_size and min(out[-1].shape[:2]) >= 2:
        out.append(halve(out[-1]))
    return out
