"""One tested set of coordinate conversions: grid cell <-> level-0 px <-> microns <-> napari world.

Conventions (see ``docs/architecture.md``):

- Arrays of points are ``(N, 2)`` ``(x, y)`` (column, row) in level-0 px, grid cells or
  microns; napari world coordinates are ``(y, x)`` in microns.
- Level-0 positions are *continuous*: pixel ``i`` covers ``[i, i + 1)``; the patch at grid
  cell ``g`` has its top-left at ``round(g * step)`` (``step = patch_size_level0``).
- napari draws pixel ``i`` of a layer centred on ``translate + i * scale``. The slide layer
  has ``scale = (mpp_y, mpp_x)`` and no translate, so level-0 position ``p`` (edge
  convention) is at world ``(p - 0.5) * mpp``. An image with one pixel per grid cell of
  ``step`` level-0 px therefore needs ``scale = step * mpp`` and
  ``translate = (step - 1) / 2 * mpp`` to cover its cells exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "cell_rectangles",
    "grid_layer_transform",
    "grid_lines",
    "grid_to_level0",
    "level0_to_grid",
    "level0_to_microns",
    "level0_to_world",
    "microns_to_level0",
    "patch_size_level0",
    "world_to_level0",
]


def _xy(value: float | Sequence[float]) -> tuple[float, float]:
    """A scalar or an (x, y) pair as an (x, y) pair of floats."""
    pair = np.asarray(value, dtype=np.float64)
    if pair.ndim == 0:
        return (float(pair), float(pair))
    x, y = pair
    return (float(x), float(y))


def patch_size_level0(patch_size: int, target_mpp: float, slide_mpp: float) -> float:
    """Patch side in level-0 px: ``patch_size * target_mpp / slide_mpp``."""
    return float(patch_size) * float(target_mpp) / float(slide_mpp)


def grid_to_level0(grid_xy: np.ndarray, step: float) -> np.ndarray:
    """``(N, 2)`` int64 level-0 top-left ``(round(gx * step), round(gy * step))`` of grid cells."""
    return np.rint(np.asarray(grid_xy, np.float64) * float(step)).astype(np.int64)


def level0_to_grid(xy_px: np.ndarray, step: float) -> np.ndarray:
    """``(N, 2)`` int64 grid cell holding each level-0 pixel (inverse of :func:`grid_to_level0`).

    Cell ``g`` holds the pixels ``round(g * step) <= p < round((g + 1) * step)``; pixels
    past the last whole cell get the cell index beyond it.
    """
    p = np.asarray(xy_px, np.float64)
    g = np.floor(p / step)
    g = np.where(np.rint((g + 1) * step) <= np.floor(p), g + 1, g)
    g = np.where(np.rint(g * step) > np.floor(p), g - 1, g)
    return g.astype(np.int64)


def level0_to_microns(xy_px: np.ndarray, mpp: float | Sequence[float]) -> np.ndarray:
    """``(N, 2)`` ``(x, y)`` microns of level-0 ``(x, y)`` positions."""
    mx, my = _xy(mpp)
    return np.asarray(xy_px, np.float64) * np.array([mx, my])


def microns_to_level0(xy_um: np.ndarray, mpp: float | Sequence[float]) -> np.ndarray:
    """``(N, 2)`` level-0 ``(x, y)`` positions (float) of ``(x, y)`` microns."""
    mx, my = _xy(mpp)
    return np.asarray(xy_um, np.float64) / np.array([mx, my])


def level0_to_world(xy_px: np.ndarray, mpp: float | Sequence[float]) -> np.ndarray:
    """``(N, 2)`` napari world ``(y, x)`` microns of continuous level-0 ``(x, y)`` positions."""
    mx, my = _xy(mpp)
    p = np.asarray(xy_px, np.float64).reshape(-1, 2)
    return np.stack([(p[:, 1] - 0.5) * my, (p[:, 0] - 0.5) * mx], axis=1)


def world_to_level0(world_yx: np.ndarray, mpp: float | Sequence[float]) -> np.ndarray:
    """``(N, 2)`` continuous level-0 ``(x, y)`` of napari world ``(y, x)`` microns."""
    mx, my = _xy(mpp)
    w = np.asarray(world_yx, np.float64).reshape(-1, 2)
    return np.stack([w[:, 1] / mx + 0.5, w[:, 0] / my + 0.5], axis=1)


def grid_layer_transform(
    step: float | Sequence[float], mpp: float | Sequence[float]
) -> dict[str, tuple[float, float]]:
    """Napari ``scale`` and ``translate`` (``(y, x)``, microns) for an image of grid cells.

    Parameters
    ----------
    step
        Level-0 px per image pixel: ``patch_size_level0`` for a patch grid,
        ``k * patch_size_level0`` for a region grid, a mask's ``downsample`` ``(x, y)``.
    mpp
        Level-0 microns per pixel, scalar or ``(mpp_x, mpp_y)``.

    Returns
    -------
    dict
        ``{"scale": (sy, sx), "translate": (ty, tx)}`` so that pixel ``(r, c)`` covers
        level-0 ``[c * step_x, (c + 1) * step_x) x [r * step_y, (r + 1) * step_y)``
        aligned with the slide layer.
    """
    sx, sy = _xy(step)
    mx, my = _xy(mpp)
    return {"scale": (sy * my, sx * mx), "translate": ((sy - 1) / 2 * my, (sx - 1) / 2 * mx)}


def cell_rectangles(cells_xy: np.ndarray, step: float, mpp: float | Sequence[float]) -> np.ndarray:
    """Outlines of grid cells as napari rectangles: ``(N, 4, 2)`` world ``(y, x)`` corners.

    Corners follow the patch edges exactly (``round(g * step)`` to ``round((g + 1) * step)``
    in level-0 px). Vectorised: thousands of cells cost microseconds each.
    """
    cells = np.asarray(cells_xy, np.int64).reshape(-1, 2)
    top_left = grid_to_level0(cells, step).astype(np.float64)
    bottom_right = grid_to_level0(cells + 1, step).astype(np.float64)
    x0, y0 = top_left[:, 0], top_left[:, 1]
    x1, y1 = bottom_right[:, 0], bottom_right[:, 1]
    corners = np.stack(
        [np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], axis=1
    )
    return level0_to_world(corners.reshape(-1, 2), mpp).reshape(-1, 4, 2)


def grid_lines(grid_shape: tuple[int, int], step: float, mpp: float | Sequence[float]) -> np.ndarray:
    """All lines of a full grid as ``(n_rows + n_cols + 2, 2, 2)`` world ``(y, x)`` segments.

    Cheaper than one rectangle per cell for a napari Shapes layer of ``shape_type="line"``.
    """
    n_rows, n_cols = int(grid_shape[0]), int(grid_shape[1])
    xs = grid_to_level0(np.stack([np.arange(n_cols + 1), np.zeros(n_cols + 1)], 1), step)[:, 0].astype(float)
    ys = grid_to_level0(np.stack([np.zeros(n_rows + 1), np.arange(n_rows + 1)], 1), step)[:, 1].astype(float)
    x_end, y_end = xs[-1], ys[-1]
    vertical = [[(x, ys[0]), (x, y_end)] for x in xs]
    horizontal = [[(xs[0], y), (x_end, y)] for y in ys]
    segments = np.asarray(vertical + horizontal, np.float64)  # (L, 2, 2) level-0 (x, y)
    return level0_to_world(segments.reshape(-1, 2), mpp).reshape(-1, 2, 2)
