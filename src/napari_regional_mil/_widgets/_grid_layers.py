"""A slide's patch and region grids as outline layers, and RGBA images on its patch grid.

Outlines are one napari Vectors layer per grid (one mesh, fast with many thousands of
patches), drawn in level-0 pixel-*corner* coordinates and placed as :mod:`._slide_layers`
describes. Their geometry (:func:`grid_outlines`) is plain numpy, computed in the worker
that tiled the slide; the GUI thread only adds the layers, or updates them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Vectors

from napari_regional_mil import geometry
from napari_regional_mil._widgets._selection import adding_quietly
from napari_regional_mil._widgets._slide_layers import (
    _by_name,
    _derived,
    _derived_name,
    _place,
    _units,
    layer_mpp,
    placement,
)
from napari_regional_mil.tiling import Tiling

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from napari.layers import Image, Layer

__all__ = ["GridOutlines", "grid_outlines", "outline_segments", "show_grid_rgba", "show_grids"]

_PATCH_COLOUR = "#7fd6ff"
_REGION_COLOUR = "#ffd400"


@dataclass(frozen=True)
class GridOutlines:
    """The outline vectors of a tiling's patch and region grids (level-0 pixel corners).

    Attributes
    ----------
    patch_vectors, region_vectors
        ``(M, 2, 2)`` napari Vectors data ``[[y, x], [dy, dx]]``, one row per straight run.
    patch_width, region_width
        Line widths in level-0 pixels (regions thicker).
    """

    patch_vectors: np.ndarray
    region_vectors: np.ndarray
    patch_width: float
    region_width: float


def _row_runs(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start and stop index of every run of True along the rows of a 2-D boolean array."""
    padded = np.zeros((edges.shape[0], edges.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = edges
    rows, cols = np.nonzero(np.diff(padded, axis=1))  # row-major: starts and stops alternate per row
    return rows[0::2], cols[0::2], cols[1::2]


def outline_segments(occupied: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Line segments outlining every occupied cell of a grid, merged into straight runs.

    Parameters
    ----------
    occupied
        ``(rows, cols)`` boolean: which cells to outline.
    ys, xs
        ``rows + 1`` and ``cols + 1`` coordinates of the cell boundaries.

    Returns
    -------
    numpy.ndarray
        ``(M, 2, 2)`` float64 segments ``[[y0, x0], [y1, x1]]``: the horizontal boundaries
        (top to bottom), then the vertical ones (left to right); a boundary shared by two
        cells is drawn once, collinear neighbouring edges are merged into one segment.
    """
    occ = np.asarray(occupied, dtype=bool)
    rows, cols = occ.shape
    ys, xs = np.asarray(ys, dtype=np.float64), np.asarray(xs, dtype=np.float64)
    pad = np.zeros((rows + 2, cols + 2), dtype=bool)
    pad[1:-1, 1:-1] = occ
    horizontal = pad[:-1, 1:-1] | pad[1:, 1:-1]  # (rows + 1, cols): boundary above row r
    vertical = pad[1:-1, :-1] | pad[1:-1, 1:]  # (rows, cols + 1): boundary left of column c
    r, a, b = _row_runs(horizontal)
    c, a2, b2 = _row_runs(vertical.T)
    h = np.stack([ys[r], xs[a], ys[r], xs[b]], axis=1)
    v = np.stack([ys[a2], xs[c], ys[b2], xs[c]], axis=1)
    return np.concatenate([h, v]).reshape(-1, 2, 2)


def _boundaries(n: int, step: float, *, k: int = 1, clip: int | None = None) -> np.ndarray:
    """Level-0 coordinates ``round(g * step)`` of ``n`` grid lines ``g = 0, k, 2k, ...``."""
    cells = np.arange(n) * k
    if clip is not None:
        cells = np.minimum(cells, clip)
    xy = np.stack([cells, np.zeros_like(cells)], axis=1)
    return geometry.grid_to_level0(xy, step)[:, 0].astype(np.float64)


def _as_vectors(segs: np.ndarray) -> np.ndarray:
    return np.stack([segs[:, 0], segs[:, 1] - segs[:, 0]], axis=1)


def grid_outlines(tiling: Tiling) -> GridOutlines:
    """The outlines of a tiling's kept patches and of their regions (no napari: run it in the worker).

    The segments lie on the level-0 grid boundaries ``round(g * s)``; partial regions at
    the slide's edge are clipped to the patch grid.
    """
    n_rows, n_cols = tiling.grid_shape
    s = float(tiling.patch_size_level0)
    k = int(tiling.params.region_size)
    occ = np.zeros((n_rows, n_cols), dtype=bool)
    if tiling.n_patches:
        occ[tiling.grid_xy[:, 1], tiling.grid_xy[:, 0]] = True
    patch_segs = outline_segments(occ, _boundaries(n_rows + 1, s), _boundaries(n_cols + 1, s))
    r_rows, r_cols = tiling.region_grid_shape
    rocc = np.zeros((r_rows, r_cols), dtype=bool)
    if tiling.n_regions:
        rocc[tiling.region_xy[:, 1], tiling.region_xy[:, 0]] = True
    rys = _boundaries(r_rows + 1, s, k=k, clip=n_rows)
    rxs = _boundaries(r_cols + 1, s, k=k, clip=n_cols)
    region_segs = outline_segments(rocc, rys, rxs)
    return GridOutlines(_as_vectors(patch_segs), _as_vectors(region_segs), max(1.0, 0.03 * s), max(2.0, 0.1 * s))


def _grid_layer(viewer: ViewerModel, slide_layer: Layer, what: str, vectors: np.ndarray, colour: str,
                width: float) -> Vectors:
    """Add a Vectors layer of outlines, or update the existing one in place.

    No remove/re-add: removing a layer makes napari run a full garbage collection.
    """
    name = _derived_name(slide_layer, what)
    meta = _derived(viewer, slide_layer, what, (1.0, 1.0), corner=True)
    mpp, units = layer_mpp(slide_layer), _units(slide_layer)
    layer = _by_name(viewer, name)

    if isinstance(layer, Vectors):
        layer.data = vectors
        if layer.edge_width != width:
            layer.edge_width = width
        layer.metadata.update(meta)
        _place(layer, (1.0, 1.0), mpp, corner=True, units=units)
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    with adding_quietly(viewer):
        return viewer.add_vectors(
            vectors,
            name=name,
            edge_color=colour,
            edge_width=width,
            vector_style="line",
            opacity=0.9,
            metadata=meta,
            units=units,
            **placement((1.0, 1.0), mpp, corner=True),
        )


def show_grids(viewer: ViewerModel, slide_layer: Layer, tiling: Tiling | GridOutlines) -> tuple[Vectors, Vectors]:
    """Show the kept patches' grid and their regions' grid as outline layers.

    Parameters
    ----------
    viewer, slide_layer
        The viewer and the slide layer the grids belong to.
    tiling
        The :class:`~napari_regional_mil.tiling.Tiling`, or better its
        :class:`GridOutlines` computed in the worker (then the GUI thread only adds or
        updates two layers).

    Returns
    -------
    tuple
        ``(patch_grid_layer, region_grid_layer)``.
    """
    outlines = tiling if isinstance(tiling, GridOutlines) else grid_outlines(tiling)
    patches = _grid_layer(viewer, slide_layer, "patch grid", outlines.patch_vectors, _PATCH_COLOUR,
                          outlines.patch_width)
    regions = _grid_layer(viewer, slide_layer, "region grid", outlines.region_vectors, _REGION_COLOUR,
                          outlines.region_width)
    return patches, regions


def show_grid_rgba(viewer: ViewerModel, slide_layer: Layer, rgba: np.ndarray, step_level0: float, what: str) -> Image:
    """Show an ``(rows, cols, 4)`` RGBA image on a grid of ``step_level0``-px cells.

    Pixel ``(gy, gx)`` is centred on the centre of grid cell ``(gx, gy)``; transparent
    pixels (alpha 0) show the slide through.
    """
    name = _derived_name(slide_layer, what)
    meta = _derived(viewer, slide_layer, what, (step_level0, step_level0), corner=False)
    layer = _by_name(viewer, name)
    if layer is not None:
        viewer.layers.remove(layer)
    with adding_quietly(viewer):
        return viewer.add_image(
            rgba, rgb=True, name=name, opacity=0.6, metadata=meta, interpolation2d="nearest",
            units=_units(slide_layer), **placement((step_level0, step_level0), layer_mpp(slide_layer), corner=False),
        )
