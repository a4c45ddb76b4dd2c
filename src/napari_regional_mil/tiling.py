"""Tiling: the patch grid at a target mpp, tissue patches, and regions of k x k patches.

(The data records are the contract between slide I/O, embedding, the first model and
the heatmaps; see ``docs/architecture.md``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TilingParams", "Tiling"]


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
