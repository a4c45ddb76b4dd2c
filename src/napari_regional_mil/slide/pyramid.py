"""Lazy display pyramids (lists of dask arrays) over a slide's levels, whatever the backend.

Every native level is wrapped through a guarded chunk loader: a tile that fails to decode
becomes a flat grey tile and is recorded in the slide's
:class:`~napari_regional_mil.slide.damage.DamageLog`, so a damaged area never raises inside
napari's renderer. Chunks are the native tiles (napari turns dask's task fusion off, so a
chunk is the unit it decodes), grouped 2 x 2 or 4 x 4 only where a level would otherwise
have more than ``MAX_CHUNKS`` chunks: dask builds the set of every chunk's key on each
slice, and at 55,000 keys (a 60k x 60k level in 256 px tiles) that churn costs more CPU
than decoding the tiles in view, and it sets off full garbage collections (0.3-0.5 s on a
loaded 2-core machine) in the middle of a zoom. Slides whose smallest level is still large
get extra levels, each the lazy 2 x 2 mean of the one above, down to about ``min_size``
px. Nothing is read until napari (or ``compute``) asks for a chunk.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import LevelSource
from .damage import GREY, DamageLog

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["MAX_CHUNKS", "MAX_GROUP", "GuardedLevel", "build_pyramid", "display_chunks", "halve", "native_level"]

#: A level with more chunks than this gets its tiles grouped 2 x 2 (4 x 4, ...) per chunk.
MAX_CHUNKS = 4_096
#: At most this many tiles per side of a display chunk (bounds the tiles decoded outside the view).
MAX_GROUP = 4


def display_chunks(tile: tuple[int, int], shape: tuple[int, ...]) -> tuple[int, int]:
    """``(rows, cols)`` of a level's display chunks: its tiles, grouped k x k (k = 1, 2, 4...).

    k is the smallest power of two that keeps the level at or under :data:`MAX_CHUNKS` chunks,
    at most :data:`MAX_GROUP`.
    """
    th, tw = max(1, int(tile[0])), max(1, int(tile[1]))
    h, w = int(shape[0]), int(shape[1])
    k = 1
    while k < MAX_GROUP and -(-h // (th * k)) * -(-w // (tw * k)) > MAX_CHUNKS:
        k *= 2
    return (min(th * k, h), min(tw * k, w))

_NAMES = itertools.count()


class GuardedLevel:
    """An array-like over a level source that turns failed tiles into flat grey blocks.

    A read that fails is retried tile by tile (``tile``; a read spanning several tiles,
    e.g. a fused dask slice or a band of strips), so only the damaged tiles are grey and
    each is recorded once.

    Parameters
    ----------
    array
        ``(h, w, c)`` uint8 array-like (c = 3 or 4: only RGB is returned).
    level
        The display level (named in the damage notice).
    log
        Where failures are recorded.
    tile
        ``(rows, cols)`` of the native tiles.
    """

    def __init__(self, array: Any, level: int, log: DamageLog, tile: tuple[int, int]) -> None:
        self._array = array
        self._level = level
        self._log = log
        self._tile = (max(1, int(tile[0])), max(1, int(tile[1])))
        self.shape = (int(array.shape[0]), int(array.shape[1]), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        block = np.asarray(self._array[rows, cols])
        if block.ndim == 2:
            return np.repeat(block[..., None], 3, axis=2)
        return block if block.shape[2] == 3 else block[..., :3]

    def _read_by_tile(self, rows: slice, cols: slice) -> np.ndarray:
        """The region read tile by tile; tiles that fail are flat grey and recorded."""
        th, tw = self._tile
        out = np.full((rows.stop - rows.start, cols.stop - cols.start, 3), GREY, np.uint8)
        for ty in range(rows.start // th * th, rows.stop, th):
            y0, y1 = max(ty, rows.start), min(ty + th, rows.stop)
            for tx in range(cols.start // tw * tw, cols.stop, tw):
                x0, x1 = max(tx, cols.start), min(tx + tw, cols.stop)
                try:
                    block = self._read(slice(y0, y1), slice(x0, x1))
                except Exception as exc:
                    self._log.record(self._level, (ty, tx), exc)
                    continue
                out[y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start] = block
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows, post_rows = _as_slice(key[0] if len(key) > 0 else slice(None), self.shape[0])
        cols, post_cols = _as_slice(key[1] if len(key) > 1 else slice(None), self.shape[1])
        channels = key[2] if len(key) > 2 else slice(None)
        try:
            block = self._read(rows, cols)
        except Exception:
            block = self._read_by_tile(rows, cols)
        if post_rows is None and post_cols is None:
            return block[:, :, channels]
        return block[_or_all(post_rows), _or_all(post_cols), channels]


def _or_all(post: Any) -> Any:
    return slice(None) if post is None else post


def _as_slice(key: Any, n: int) -> tuple[slice, Any]:
    """A contiguous ``slice(start, stop)`` covering ``key`` and what to take from it after reading."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        stop = max(start, stop)
        return slice(start, stop), (None if step == 1 else slice(None, None, step))
    if isinstance(key, (int, np.integer)):
        i = int(key) + n if key < 0 else int(key)
        return slice(i, i + 1), 0
    idx = np.asarray(key)
    idx = np.where(idx < 0, idx + n, idx)
    lo = int(idx.min()) if idx.size else 0
    hi = int(idx.max()) + 1 if idx.size else 0
    return slice(lo, hi), idx - lo


def native_level(source: LevelSource, *, level: int, log: DamageLog, name: str) -> da.Array:
    """One native level as an RGB uint8 dask array.

    Chunks are :func:`display_chunks` of ``source.tile``. Memory-mapped sources are wrapped
    directly; every other source reads through a :class:`GuardedLevel`.
    """
    import dask.array as da  # lazy: startup (the reader's get_reader imports slide; dask when a slide is opened)

    meta = np.zeros((0, 0, 0), np.uint8)
    array = source.array
    if source.direct:
        level_array = da.from_array(array, chunks=(*source.tile, array.shape[2]), asarray=True, lock=False,
                                    meta=meta, name=f"{name}-{level}")
        return level_array[..., :3] if array.shape[2] == 4 else level_array
    guarded = GuardedLevel(array, level, log, source.tile)
    chunks = display_chunks(source.tile, guarded.shape)
    return da.from_array(guarded, chunks=(*chunks, 3), asarray=False, lock=False, meta=meta,
                         name=f"{name}-{level}")


def _mean2x2(block: np.ndarray) -> np.ndarray:
    h, w, c = block.shape
    s = block.reshape(h // 2, 2, w // 2, 2, c).sum(axis=(1, 3), dtype=np.uint16)
    return ((s + 2) // 4).astype(np.uint8)


def halve(level: da.Array) -> da.Array:
    """The lazy 2 x 2 mean of a (h, w, 3) uint8 dask level (odd last row/column dropped)."""
    h2, w2 = level.shape[0] // 2, level.shape[1] // 2
    src = level[: 2 * h2, : 2 * w2]
    ch, cw = level.chunksize[:2]
    src = src.rechunk((2 * ch, 2 * cw, level.shape[2]))
    chunks = (tuple(c // 2 for c in src.chunks[0]), tuple(c // 2 for c in src.chunks[1]), src.chunks[2])
    return src.map_blocks(_mean2x2, chunks=chunks, dtype=np.uint8, meta=np.zeros((0, 0, 0), np.uint8))


def build_pyramid(levels: list[da.Array], *, min_size: int = 1024) -> list[da.Array]:
    """Native levels plus lazily halved ones until the longer side is at most ``min_size``."""
    out = list(levels)
    while max(out[-1].shape[:2]) > min_size and min(out[-1].shape[:2]) >= 2:
        out.append(halve(out[-1]))
    return out


def unique_name(prefix: str) -> str:
    """A dask name prefix unique in this process (one per opened slide)."""
    return f"{prefix}-{next(_NAMES)}"
