"""Synthetic H&E-like whole-slide images written as streaming tiled JPEG pyramidal BigTIFFs.

A slide is described by ``patch_types``: an ``(n_rows, n_cols)`` array of tissue-type ids
(:data:`~napari_regional_mil.synth.textures.TISSUE_TYPES`, -1 = background), one per
``patch_px`` x ``patch_px`` cell of level 0. Every pixel of every pyramid level is a pure
function of ``(seed, position)`` (see :mod:`~napari_regional_mil.synth.textures`), so the
writer renders tile by tile in bounded memory, whatever the slide size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..atomic import atomic_path
from ..synth.textures import TISSUE_TYPES, texture_bank

__all__ = ["pyramid_shapes", "render_patch_types", "write_synthetic_slide"]


def _check_types(patch_types: np.ndarray) -> np.ndarray:
    types = np.asarray(patch_types)
    if types.ndim != 2 or types.shape[0] < 1 or types.shape[1] < 1:
        raise ValueError(f"patch_types must be a non-empty 2-D array, got shape {types.shape}")
    if not np.issubdtype(types.dtype, np.integer):
        raise ValueError(f"patch_types must be integers, got {types.dtype}")
    if types.min() < -1 or types.max() >= len(TISSUE_TYPES):
        raise ValueError(f"patch_types must lie in -1..{len(TISSUE_TYPES) - 1}")
    return types


_STAIN_UM = 160.0  # lattice spacing of the slow, non-periodic stain variation


def _hash01(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) values of integer lattice points (splitmix64)."""
    with np.errstate(over="ignore"):
        z = (iy.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            ix.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        z ^= np.uint64((seed * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _stain(x0: int, y0: int, width: int, height: int, *, spacing_px: float, seed: int) -> np.ndarray:
    """Slow stain-intensity factor (height, width) around 1, a pure function of position."""
    ys = (y0 + np.arange(height) + 0.5) / spacing_px
    xs = (x0 + np.arange(width) + 0.5) / spacing_px
    iy0, ix0 = int(np.floor(ys[0])), int(np.floor(xs[0]))
    ly = np.arange(iy0, int(np.floor(ys[-1])) + 2)
    lx = np.arange(ix0, int(np.floor(xs[-1])) + 2)
    lattice = _hash01(ly[:, None] + (1 << 20), lx[None, :] + (1 << 20), seed + 7919)
    fy, fx = ys - np.floor(ys), xs - np.floor(xs)
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    iy = np.floor(ys).astype(np.int64) - iy0
    ix = np.floor(xs).astype(np.int64) - ix0
    rows = lattice[iy] * (1 - fy)[:, None] + lattice[iy + 1] * fy[:, None]
    val = rows[:, ix] * (1 - fx)[None, :] + rows[:, ix + 1] * fx[None, :]
    return (0.82 + 0.36 * val).astype(np.float32)


def render_patch_types(
    patch_types: np.ndarray,
    window: tuple[int, int, int, int],
    *,
    patch_px: int = 256,
    mpp: float = 0.5,
    seed: int = 0,
    downsample: int = 1,
) -> np.ndarray:
    """Render one window of a synthetic slide.

    Parameters
    ----------
    patch_types
        ``(n_rows, n_cols)`` tissue-type ids at patch-grid resolution (-1 = background).
    window
        ``(x0, y0, width, height)`` in pixels *of the level* with this ``downsample``.
        Pixels beyond the slide repeat the edge cells (used for padding edge tiles).
    patch_px
        Level-0 pixels per patch-grid cell.
    mpp
        Level-0 microns per pixel.
    seed
        Texture seed.
    downsample
        Power-of-two level downsample (1 = level 0).

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 RGB.
    """
    types = _check_types(patch_types)
    x0, y0, width, height = (int(v) for v in window)
    bank = texture_bank(int(seed), float(mpp), int(downsample), pad=max(256, width, height))
    # type of each pixel: the cell holding the level-0 position of the pixel centre
    rows = ((y0 + np.arange(height) + 0.5) * downsample // patch_px).astype(np.int64)
    cols = ((x0 + np.arange(width) + 0.5) * downsample // patch_px).astype(np.int64)
    np.clip(rows, 0, types.shape[0] - 1, out=rows)
    np.clip(cols, 0, types.shape[1] - 1, out=cols)
    sub = types[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    lo, hi = int(sub.min()), int(sub.max())
    if lo == hi:
        out = bank.window(lo, x0, y0, width, height)
    else:
        pix = types[np.ix_(rows, cols)]
        out = np.zeros((height, width, 3), np.uint8)
        for t in np.unique(sub):
            tex = bank.window(int(t), x0, y0, width, height)
            mask = pix == t
            out[mask] = tex[mask]
    if hi < 0:  # background only
        return np.ascontiguousarray(out)
    factor = _stain(x0, y0, width, height, spacing_px=_STAIN_UM / (mpp * downsample), seed=int(seed))
    dark = (255 - out.astype(np.float32)) * factor[..., None]
    return (255.0 - np.minimum(dark, 255.0)).round().astype(np.uint8)


def pyramid_shapes(width: int, height: int, *, min_level_size: int = 512) -> list[tuple[int, int]]:
    """``(width, height)`` of each pyramid level: halved (rounding up) while >= ``min_level_size``.

    Level 0 is always present; a level is added while its longer side is at least
    ``min_level_size``.
    """
    shapes = [(int(width), int(height))]
    ds = 2
    while True:
        w, h = -(-width // ds), -(-height // ds)
        if max(w, h) < min_level_size:
            return shapes
        shapes.append((w, h))
        ds *= 2


def _tiles(
    types: np.ndarray, shape_wh: tuple[int, int], tile: int, *, patch_px: int, mpp: float, seed: int, downsample: int
) -> Iterator[np.ndarray]:
    """Row-major full-size tiles of one level (edge tiles padded by edge repetition)."""
    width, height = shape_wh
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            yield render_patch_types(
                types, (x0, y0, tile, tile), patch_px=patch_px, mpp=mpp, seed=seed, downsample=downsample
            )


def write_synthetic_slide(
    path: str | os.PathLike,
    patch_types: np.ndarray,
    *,
    patch_px: int = 256,
    mpp: float = 0.5,
    seed: int = 0,
    tile: int = 256,
    jpeg_quality: int = 90,
    min_level_size: int = 512,
) -> Path:
    """Write a synthetic H&E-like slide as a tiled JPEG pyramidal BigTIFF, streaming.

    The file is a generic TIFF: level 0 is the first page, lower levels (each halved) are
    its SubIFDs, every page carries X/Y resolution tags (pixels per cm) giving its mpp,
    and no ImageDescription, so tiffslide (vendor ``None``) reads every level and the mpp.
    Written atomically (a temp file in the same folder, then ``os.replace``).

    Parameters
    ----------
    path
        Output file (``.tif``/``.tiff``).
    patch_types
        ``(n_rows, n_cols)`` tissue-type ids (-1 = background); level 0 is
        ``n_cols * patch_px`` x ``n_rows * patch_px`` px.
    patch_px
        Level-0 pixels per cell of ``patch_types``.
    mpp
        Level-0 microns per pixel.
    seed
        Texture seed (same inputs, same pixels).
    tile
        Tile side in px (multiple of 16).
    jpeg_quality
        JPEG quality 1..100.
    min_level_size
        Lower levels are added while their longer side is at least this.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    types = _check_types(patch_types)
    if patch_px < 1 or tile < 16 or tile % 16 or mpp <= 0 or not 1 <= jpeg_quality <= 100:
        raise ValueError(
            f"bad synthetic slide parameters: patch_px={patch_px}, tile={tile}, mpp={mpp}, "
            f"jpeg_quality={jpeg_quality}"
        )
    path = Path(path)
    width, height = types.shape[1] * patch_px, types.shape[0] * patch_px
    shapes = pyramid_shapes(width, height, min_level_size=min_level_size)
    # keyword arguments of tifffile's TiffWriter.write (each typed there)
    common: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": int(jpeg_quality)},
        "resolutionunit": "CENTIMETER",
        "metadata": None,
        "software": "napari-regional-mil synth",
        "maxworkers": min(4, os.cpu_count() or 1),
    }
    with atomic_path(path, durable=False) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, (w, h) in enumerate(shapes):
            ds = 2**level
            extra: dict[str, Any] = {"subifds": len(shapes) - 1} if level == 0 else {"subfiletype": 1}
            tiles = _tiles(types, (w, h), tile, patch_px=int(patch_px), mpp=float(mpp), seed=int(seed), downsample=ds)
            tif.write(
                tiles,
                shape=(h, w, 3),
                resolution=(1e4 / (mpp * width / w), 1e4 / (mpp * height / h)),
                **extra,
                **common,
            )
    return path
