"""Tiling: the patch grid at a target mpp, tissue patches, and regions of k x k patches.

(The data records are the contract between slide I/O, embedding, the first model and
the heatmaps; see ``docs/architecture.md``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import TilingError
from .geometry import grid_to_level0, patch_size_level0
from .slide import Slide
from .tissue import TissueMask

__all__ = ["Tiling", "TilingParams", "tile_slide", "tissue_fraction_grid", "validate_params"]


@dataclass(frozen=True)
class TilingParams:
    """How a slide is cut into patches and regions.

    Parameters
    ----------
    patch_size
        Patch side in pixels *at* ``target_mpp`` (default 256 px).
    target_mpp
        Microns per pixel the patches are read at (default 0.5 um/px).
    region_size
        k: a region is a k x k block of the patch grid (default 8; k*k must lie in
        10..1000 patches, as the method says).
    tissue_threshold
        A patch is kept when its tissue fraction is at least this (default 0.5).
    """

    patch_size: int = 256
    target_mpp: float = 0.5
    region_size: int = 8
    tissue_threshold: float = 0.5


@dataclass(frozen=True, eq=False)
class Tiling:
    """The kept patches of one slide and the regions they form.

    All ``(N, 2)``/``(R, 2)`` arrays are ``(x, y)`` = (column, row). Patches are ordered
    row-major on the grid; regions row-major on the region grid.

    Parameters
    ----------
    params
        The tiling parameters.
    slide_mpp
        Level-0 microns per pixel used (from the slide or the user).
    slide_dimensions
        ``(width, height)`` of level 0 in pixels.
    patch_size_level0
        Patch side in level-0 pixels: ``patch_size * target_mpp / slide_mpp`` (float).
    grid_shape
        ``(n_rows, n_cols)`` of the full patch grid over the slide.
    coords_px
        ``(N, 2)`` int64 level-0 top-left corner of each kept patch.
    grid_xy
        ``(N, 2)`` int32 grid cell of each kept patch.
    tissue_fraction
        ``(N,)`` float32 tissue fraction of each kept patch.
    region_index
        ``(N,)`` int32 index into ``region_xy``.
    region_xy
        ``(R, 2)`` int32 region-grid cell of each region that holds a kept patch.
    """

    params: TilingParams
    slide_mpp: float
    slide_dimensions: tuple[int, int]
    patch_size_level0: float
    grid_shape: tuple[int, int]
    coords_px: np.ndarray
    grid_xy: np.ndarray
    tissue_fraction: np.ndarray
    region_index: np.ndarray
    region_xy: np.ndarray

    @property
    def n_patches(self) -> int:
        """Number of kept (tissue) patches."""
        return int(self.coords_px.shape[0])

    @property
    def n_regions(self) -> int:
        """Number of regions holding at least one kept patch."""
        return int(self.region_xy.shape[0])

    @property
    def region_grid_shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)`` of the full region grid."""
        k = self.params.region_size
        return (-(-self.grid_shape[0] // k), -(-self.grid_shape[1] // k))

    def patches_of_region(self, region: int) -> np.ndarray:
        """Indices of the kept patches that lie in region ``region``."""
        return np.flatnonzero(self.region_index == region)

    def patch_grid_image(self, values: np.ndarray | None = None, *, fill: float = np.nan) -> np.ndarray:
        """``(n_rows, n_cols)`` float32 image of per-patch ``values`` (default 1) on the patch grid.

        Cells without a kept patch hold ``fill``. Show it with
        :func:`napari_regional_mil.geometry.grid_layer_transform` of ``patch_size_level0``.
        """
        out = np.full(self.grid_shape, fill, np.float32)
        vals = np.ones(self.n_patches, np.float32) if values is None else np.asarray(values, np.float32)
        if vals.shape != (self.n_patches,):
            raise ValueError(f"values must have shape ({self.n_patches},), got {vals.shape}")
        out[self.grid_xy[:, 1], self.grid_xy[:, 0]] = vals
        return out

    def region_grid_image(self, values: np.ndarray | None = None, *, fill: float = np.nan) -> np.ndarray:
        """``(n_region_rows, n_region_cols)`` float32 image of per-region ``values`` (default 1)."""
        out = np.full(self.region_grid_shape, fill, np.float32)
        vals = np.ones(self.n_regions, np.float32) if values is None else np.asarray(values, np.float32)
        if vals.shape != (self.n_regions,):
            raise ValueError(f"values must have shape ({self.n_regions},), got {vals.shape}")
        out[self.region_xy[:, 1], self.region_xy[:, 0]] = vals
        return out


def validate_params(params: TilingParams) -> None:
    """Raise :class:`TilingError` for tiling parameters the method does not allow."""
    k = params.region_size
    if not isinstance(params.patch_size, (int, np.integer)) or params.patch_size < 1:
        raise TilingError(f"patch size must be a positive whole number of pixels, got {params.patch_size!r}")
    if not (isinstance(params.target_mpp, (int, float, np.number)) and math.isfinite(params.target_mpp)
            and params.target_mpp > 0):
        raise TilingError(f"target mpp must be a positive number of microns per pixel, got {params.target_mpp!r}")
    if not isinstance(k, (int, np.integer)) or not 10 <= k * k <= 1000:
        raise TilingError(
            f"region size k={k!r} gives {k * k if isinstance(k, (int, np.integer)) else '?'} patches per region; "
            "k*k must lie in 10..1000 (k = 4..31)"
        )
    if not 0.0 <= params.tissue_threshold <= 1.0:
        raise TilingError(f"tissue threshold must lie in 0..1, got {params.tissue_threshold!r}")


def _overlap_weights(n_cells: int, step: float, n_pixels: int, pixel: float) -> np.ndarray:
    """``(n_cells, n_pixels)`` fraction of each grid cell covered by each mask pixel (1-D)."""
    idx = np.arange(n_cells + 1, dtype=np.float64)
    edges = np.rint(idx * step)
    a, b = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_pixels + 1, dtype=np.float64) * pixel
    p0, p1 = pix[None, :-1], pix[None, 1:]
    overlap = np.clip(np.minimum(b, p1) - np.maximum(a, p0), 0.0, None)
    return (overlap / np.maximum(b - a, 1e-12)).astype(np.float32)


def tissue_fraction_grid(
    mask: np.ndarray, downsample: tuple[float, float], grid_shape: tuple[int, int], step: float
) -> np.ndarray:
    """Area-weighted tissue fraction of every patch-grid cell, ``(n_rows, n_cols)`` float32.

    Parameters
    ----------
    mask
        ``(h, w)`` tissue mask (bool or labels, > 0 is tissue) covering level 0.
    downsample
        ``(x, y)`` level-0 px per mask pixel.
    grid_shape
        ``(n_rows, n_cols)`` of the patch grid.
    step
        Patch side in level-0 px.
    """
    m = (np.asarray(mask) > 0).astype(np.float32)
    wy = _overlap_weights(grid_shape[0], step, m.shape[0], float(downsample[1]))
    wx = _overlap_weights(grid_shape[1], step, m.shape[1], float(downsample[0]))
    return np.clip(wy @ m @ wx.T, 0.0, 1.0)


def tile_slide(
    slide: Slide, tissue: TissueMask | np.ndarray, params: TilingParams = TilingParams(), *, mpp: float | None = None
) -> Tiling:
    """Cut a slide into patches at ``params.target_mpp``, keep tissue patches, group regions.

    Follows the grid convention of ``docs/architecture.md``: ``floor(W / s)`` x
    ``floor(H / s)`` whole patches from level-0 (0, 0), ``s = patch_size * target_mpp /
    slide_mpp``; a patch is kept when its tissue fraction (area-weighted from the mask) is
    at least ``params.tissue_threshold``; its region is ``grid_xy // k``.

    Parameters
    ----------
    slide
        An opened :class:`~napari_regional_mil.slide.Slide`.
    tissue
        A :class:`~napari_regional_mil.tissue.TissueMask`, or a 2-D array (bool, or
        labels with tissue > 0, e.g. painted in napari) covering the whole slide.
    params
        Patch size, target mpp, region size k, tissue threshold.
    mpp
        Level-0 microns per pixel to use instead of the slide's.

    Raises
    ------
    TilingError
        Bad parameters, a slide smaller than one patch, or no tissue patch.
    SlideError
        The slide's mpp is unknown and ``mpp`` was not given.
    """
    validate_params(params)
    path = getattr(slide, "path", "slide")
    slide_mpp = float(mpp) if mpp is not None else float(slide.mpp)
    if not (math.isfinite(slide_mpp) and slide_mpp > 0):
        raise TilingError(f"{path}: slide mpp must be a positive number, got {mpp!r}")
    width, height = (int(v) for v in slide.info.dimensions)
    step = patch_size_level0(params.patch_size, params.target_mpp, slide_mpp)
    n_cols, n_rows = math.floor(width / step), math.floor(height / step)
    if n_cols < 1 or n_rows < 1:
        side = math.ceil(step - 1e-9)
        raise TilingError(
            f"{path}: slide is smaller than one patch ({width} x {height} px at {slide_mpp:.3g} um/px; "
            f"one patch is {side} x {side} px)"
        )
    if isinstance(tissue, TissueMask):
        mask, downsample = np.asarray(tissue.mask), (float(tissue.downsample[0]), float(tissue.downsample[1]))
    else:
        mask = np.asarray(tissue)
        if mask.ndim != 2 or mask.size == 0:
            raise TilingError(f"{path}: tissue mask must be a non-empty 2-D array, got shape {mask.shape}")
        downsample = (width / mask.shape[1], height / mask.shape[0])
    fraction = tissue_fraction_grid(mask, downsample, (n_rows, n_cols), step)
    keep = fraction >= params.tissue_threshold
    rows, cols = np.nonzero(keep)  # row-major order
    if rows.size == 0:
        raise TilingError(
            f"{path}: no tissue found (no patch has a tissue fraction >= {params.tissue_threshold:g})"
        )
    grid_xy = np.stack([cols, rows], axis=1).astype(np.int32)
    k = int(params.region_size)
    n_region_cols = -(-n_cols // k)
    region_cells = grid_xy // k
    key = region_cells[:, 1].astype(np.int64) * n_region_cols + region_cells[:, 0]
    unique_keys, region_index = np.unique(key, return_inverse=True)
    region_xy = np.stack([unique_keys % n_region_cols, unique_keys // n_region_cols], axis=1).astype(np.int32)
    return Tiling(
        params=params,
        slide_mpp=slide_mpp,
        slide_dimensions=(width, height),
        patch_size_level0=step,
        grid_shape=(n_rows, n_cols),
        coords_px=grid_to_level0(grid_xy, step),
        grid_xy=grid_xy,
        tissue_fraction=fraction[rows, cols].astype(np.float32),
        region_index=region_index.astype(np.int32).ravel(),
        region_xy=region_xy,
    )
