"""Attention heatmaps: the first model's patch and region attention laid out on the grids.

A prediction (:class:`~napari_regional_mil.training.prediction.SlidePrediction`) gives one
attention value per patch (selected-patch path) and one per region (all-regions path), in
the cache's order. :class:`AttentionMaps` puts them back on the patch grid and the region
grid as float32 images (NaN where no tissue patch/region is), normalises them for display
and says where each image lies in napari's world coordinates, so that it overlays the slide
layer (``scale = (mpp_y, mpp_x)``) at every zoom.

Placement (napari uses pixel-*centre* coordinates): level-0 pixel ``i`` has its centre at
world ``i * mpp``. The patch at grid ``gx`` covers level-0 pixels ``[gx*s, gx*s + s)``
(``s = patch_size_level0``), so its centre lies at ``(gx*s + (s-1)/2) * mpp``; a grid image
with ``scale = s*mpp`` and ``translate = (s-1)/2 * mpp`` puts its pixel ``gx`` exactly
there. The region grid is the same with the step ``k*s``.

Everything here is numpy; no Qt, no napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import CacheError

if TYPE_CHECKING:
    from .embedding.types import SlideEmbeddings
    from .training.prediction import SlidePrediction

__all__ = [
    "NORMALISATIONS",
    "AttentionMaps",
    "GridPlacement",
    "contrast_limits",
    "grid_image",
    "normalise",
]

#: Display normalisations of attention values (see :func:`normalise`).
NORMALISATIONS = ("rank", "minmax", "log", "raw")


def normalise(values: np.ndarray, mode: str = "rank") -> np.ndarray:
    """Normalise attention values for display; NaNs stay NaN.

    Parameters
    ----------
    values
        Any float array (patch or region attention, class evidence).
    mode
        ``"raw"``: unchanged. ``"minmax"``: linear to [0, 1]. ``"rank"`` (alias
        ``"percentile"``): the fraction of the other values below each value, in [0, 1]
        (ties share their mean rank); raw gated attention is dominated by a few patches
        and looks uniformly cold otherwise. ``"log"``: ``log10`` of the values (those
        <= 0 are clipped to the smallest positive one), then min-max to [0, 1].

    Returns
    -------
    numpy.ndarray
        float32, same shape. A constant input maps to 0.5 (minmax, rank, log).
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    x = v[ok]
    if mode == "percentile":
        mode = "rank"
    if mode == "raw":
        out[ok] = x
    elif mode in ("minmax", "log"):
        if mode == "log" and x.size:
            pos = x[x > 0]
            floor = pos.min() if pos.size else 1.0
            x = np.log10(np.maximum(x, floor))
        if x.size:
            lo, hi = x.min(), x.max()
            out[ok] = (x - lo) / (hi - lo) if hi > lo else 0.5
    elif mode == "rank":
        if x.size > 1:
            order = np.argsort(x, kind="stable")
            ranks = np.zeros(x.size)
            ranks[order] = np.arange(x.size)
            # ties share the mean rank of their group
            _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
            sums = np.bincount(inverse, weights=ranks)
            out[ok] = (sums / counts)[inverse] / (x.size - 1)
        elif x.size == 1:
            out[ok] = 0.5
    else:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {NORMALISATIONS}")
    return out.astype(np.float32)


def contrast_limits(data: np.ndarray, mode: str) -> tuple[float, float]:
    """Contrast limits for an image normalised with ``mode``.

    ``(0, 1)`` for the normalised modes; the finite range of ``data`` for ``"raw"``
    (symmetric around 0 when the data has both signs, as class evidence does).
    """
    if mode != "raw":
        return (0.0, 1.0)
    finite = np.asarray(data)[np.isfinite(data)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo < 0 < hi:
        m = max(-lo, hi)
        return (-m, m)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def grid_image(cells_xy: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scatter per-cell values into an ``(n_rows, n_cols)`` float32 image, NaN elsewhere.

    Parameters
    ----------
    cells_xy
        ``(N, 2)`` ``(x, y)`` grid cells.
    values
        ``(N,)`` values.
    shape
        ``(n_rows, n_cols)``.
    """
    img = np.full(shape, np.nan, dtype=np.float32)
    xy = np.asarray(cells_xy, dtype=np.int64)
    img[xy[:, 1], xy[:, 0]] = np.asarray(values, dtype=np.float32)
    return img


@dataclass(frozen=True)
class GridPlacement:
    """Where a grid image lies in napari world coordinates (microns, ``(y, x)``).

    Parameters
    ----------
    step_level0
        Side of one grid cell in level-0 pixels (``s`` for patches, ``k*s`` for regions).
    mpp
        ``(mpp_y, mpp_x)`` of level 0.
    """

    step_level0: float
    mpp: tuple[float, float]

    @property
    def scale(self) -> tuple[float, float]:
        """Napari ``scale`` (um per grid pixel), ``(y, x)``."""
        return (self.step_level0 * self.mpp[0], self.step_level0 * self.mpp[1])

    @property
    def translate(self) -> tuple[float, float]:
        """Napari ``translate`` (um), ``(y, x)``: pixel 0 sits on the centre of cell 0."""
        half = (self.step_level0 - 1.0) / 2.0
        return (half * self.mpp[0], half * self.mpp[1])

    def cell_centre_world(self, gx: float, gy: float) -> tuple[float, float]:
        """World ``(y, x)`` of the centre of grid cell ``(gx, gy)``."""
        sy, sx = self.scale
        ty, tx = self.translate
        return (gy * sy + ty, gx * sx + tx)

    def world_to_cell(self, world_yx: tuple[float, float]) -> tuple[int, int]:
        """The grid cell ``(gx, gy)`` that holds world point ``(y, x)`` (may be outside)."""
        # level-0 pixel-corner coordinate of a world point is world/mpp + 0.5
        y = world_yx[0] / self.mpp[0] + 0.5
        x = world_yx[1] / self.mpp[1] + 0.5
        return (int(np.floor(x / self.step_level0)), int(np.floor(y / self.step_level0)))


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """One slide's prediction laid out on its patch and region grids.

    Build it with :meth:`from_prediction`. Images are produced on demand in any
    normalisation, so a viewer can switch without re-running the model.

    Parameters
    ----------
    embeddings, prediction
        The slide's cached embeddings and the first model's output on them.
    grid_shape
        ``(n_rows, n_cols)`` of the patch grid.
    region_size
        k (a region is k x k patches).
    patch
        Placement of the patch grid.
    region
        Placement of the region grid.
    """

    embeddings: SlideEmbeddings
    prediction: SlidePrediction
    grid_shape: tuple[int, int]
    region_size: int
    patch: GridPlacement
    region: GridPlacement
    _patch_lut: np.ndarray = field(repr=False)
    _region_lut: np.ndarray = field(repr=False)
    _grid_xy: np.ndarray = field(repr=False)
    _region_xy: np.ndarray = field(repr=False)
    _region_index: np.ndarray = field(repr=False)

    @classmethod
    def from_prediction(
        cls,
        embeddings: SlideEmbeddings,
        prediction: SlidePrediction,
        *,
        mpp: tuple[float, float] | float | None = None,
        grid_shape: tuple[int, int] | None = None,
    ) -> AttentionMaps:
        """Lay out ``prediction`` on the grids of ``embeddings``.

        Parameters
        ----------
        embeddings
            Must know its grid (``grid_xy``, ``region_index``, ``region_xy``) and carry
            ``patch_size_level0``, ``region_size`` and ``slide_mpp`` in ``meta``.
        prediction
            From the first model on these embeddings (same patch order).
        mpp
            Level-0 ``(mpp_y, mpp_x)`` (or one number); default ``meta["slide_mpp"]``.
            Pass the slide layer's scale so the maps follow it.
        grid_shape
            ``(n_rows, n_cols)``; default ``meta["grid_shape"]``, else the extent of the
            patches.

        Raises
        ------
        CacheError
            The embeddings have no grid, lack the metadata, or do not match the
            prediction (a stale cache).
        """
        name = embeddings.slide_name
        grid_xy, region_index, region_xy = embeddings.grid_xy, embeddings.region_index, embeddings.region_xy
        if not embeddings.has_regions or grid_xy is None or region_index is None or region_xy is None:
            raise CacheError(f"{name}: the embeddings have no patch grid/regions, so no heatmap can be drawn")
        meta = embeddings.meta
        missing = [key for key in ("patch_size_level0", "region_size") if key not in meta]
        if mpp is None and "slide_mpp" not in meta:
            missing.append("slide_mpp")
        if missing:
            raise CacheError(f"{name}: the embeddings' metadata lacks {', '.join(missing)}")
        n = embeddings.n_patches
        if prediction.patch_attention.shape != (n,):
            raise CacheError(
                f"{name}: the prediction has {prediction.patch_attention.shape[0]} patches "
                f"but the embeddings have {n}"
            )
        if prediction.region_attention is not None and prediction.region_attention.shape != (embeddings.n_regions,):
            raise CacheError(
                f"{name}: the prediction has {prediction.region_attention.shape[0]} regions "
                f"but the embeddings have {embeddings.n_regions}"
            )
        mpp_array = np.asarray(meta["slide_mpp"] if mpp is None else mpp, dtype=np.float64)
        mpp_y, mpp_x = (mpp_array, mpp_array) if mpp_array.ndim == 0 else (mpp_array[0], mpp_array[1])
        mpp_yx = (float(mpp_y), float(mpp_x))
        if grid_shape is None:
            grid_shape = meta.get("grid_shape")
        if grid_shape is None:
            grid_shape = (int(grid_xy[:, 1].max()) + 1, int(grid_xy[:, 0].max()) + 1)
        grid_shape = (int(grid_shape[0]), int(grid_shape[1]))
        s = float(meta["patch_size_level0"])
        k = int(meta["region_size"])
        patch_lut = np.full(grid_shape, -1, dtype=np.int64)
        patch_lut[grid_xy[:, 1], grid_xy[:, 0]] = np.arange(n)
        region_shape = (-(-grid_shape[0] // k), -(-grid_shape[1] // k))
        region_lut = np.full(region_shape, -1, dtype=np.int64)
        region_lut[region_xy[:, 1], region_xy[:, 0]] = np.arange(embeddings.n_regions)
        return cls(
            embeddings=embeddings,
            prediction=prediction,
            grid_shape=grid_shape,
            region_size=k,
            patch=GridPlacement(s, mpp_yx),
            region=GridPlacement(k * s, mpp_yx),
            _patch_lut=patch_lut,
            _region_lut=region_lut,
            _grid_xy=np.asarray(grid_xy),
            _region_xy=np.asarray(region_xy),
            _region_index=np.asarray(region_index),
        )

    # -- sizes ------------------------------------------------------------------------------
    @property
    def region_grid_shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)`` of the region grid."""
        rows, cols = self._region_lut.shape
        return (rows, cols)

    @property
    def grid_xy(self) -> np.ndarray:
        """``(N, 2)`` patch-grid cell ``(x, y)`` of each patch (the embeddings')."""
        return self._grid_xy

    @property
    def region_xy(self) -> np.ndarray:
        """``(R, 2)`` region-grid cell ``(x, y)`` of each region (the embeddings')."""
        return self._region_xy

    @property
    def region_index(self) -> np.ndarray:
        """``(N,)`` the region of each patch (row of :attr:`region_xy`; the embeddings')."""
        return self._region_index

    @property
    def has_region_attention(self) -> bool:
        """Whether the model has an all-regions path (the regional model)."""
        return self.prediction.region_attention is not None

    @property
    def evidence_classes(self) -> tuple[str, ...]:
        """Class names with per-patch evidence (empty when the model gives none)."""
        return () if self.prediction.class_evidence is None else tuple(self.prediction.class_names)

    # -- per-patch values -------------------------------------------------------------------
    def region_attention_of_patches(self) -> np.ndarray:
        """``(N,)`` the attention of each patch's region (NaN without a regional path)."""
        if self.prediction.region_attention is None:
            return np.full(self.embeddings.n_patches, np.nan, dtype=np.float32)
        return np.asarray(self.prediction.region_attention, np.float32)[self._region_index]

    # -- images -----------------------------------------------------------------------------
    def patch_image(self, normalisation: str = "rank") -> np.ndarray:
        """Per-patch attention on the patch grid, ``(n_rows, n_cols)`` float32, NaN off tissue."""
        values = normalise(self.prediction.patch_attention, normalisation)
        return grid_image(self._grid_xy, values, self.grid_shape)

    def region_image(self, normalisation: str = "rank") -> np.ndarray:
        """Per-region attention on the region grid, float32, NaN where no region is.

        Raises ``ValueError`` when the model has no regional path.
        """
        if self.prediction.region_attention is None:
            raise ValueError("the model has no region attention (not a regional model)")
        values = normalise(self.prediction.region_attention, normalisation)
        return grid_image(self._region_xy, values, self.region_grid_shape)

    def region_image_on_patch_grid(self, normalisation: str = "rank", *, tissue_only: bool = False) -> np.ndarray:
        """Per-region attention drawn on the patch grid, ``(n_rows, n_cols)`` float32.

        Every cell of a region holds the region's attention, so a region cut by the slide's
        edge (fewer than k rows or columns of patches) ends where the patch grid, and so the
        slide, ends. NaN where no region is; with ``tissue_only``, also off the tissue patches.
        Raises ``ValueError`` when the model has no regional path.
        """
        if self.prediction.region_attention is None:
            raise ValueError("the model has no region attention (not a regional model)")
        rows, cols = self.grid_shape
        k = self.region_size
        lut = self._region_lut[np.arange(rows)[:, None] // k, np.arange(cols)[None, :] // k]
        values = np.asarray(normalise(self.prediction.region_attention, normalisation), np.float32)
        img = np.where(lut >= 0, values[np.maximum(lut, 0)], np.float32(np.nan)).astype(np.float32)
        if tissue_only:
            img[self._patch_lut < 0] = np.nan
        return img

    def evidence_image(self, class_name: str, normalisation: str = "raw") -> np.ndarray:
        """Per-patch evidence for ``class_name`` on the patch grid (when the model has it)."""
        if self.prediction.class_evidence is None:
            raise ValueError("the model gives no per-class evidence")
        c = list(self.prediction.class_names).index(class_name)
        values = normalise(self.prediction.class_evidence[:, c], normalisation)
        return grid_image(self._grid_xy, values, self.grid_shape)

    # -- queries ----------------------------------------------------------------------------
    def patch_at(self, world_yx: tuple[float, float]) -> int | None:
        """Index of the tissue patch under world point ``(y, x)`` (um), or ``None``."""
        gx, gy = self.patch.world_to_cell(world_yx)
        if 0 <= gy < self.grid_shape[0] and 0 <= gx < self.grid_shape[1]:
            idx = int(self._patch_lut[gy, gx])
            return idx if idx >= 0 else None
        return None

    def region_at(self, world_yx: tuple[float, float]) -> int | None:
        """Index of the region under world point ``(y, x)`` (um), or ``None``."""
        rx, ry = self.region.world_to_cell(world_yx)
        rows, cols = self.region_grid_shape
        if 0 <= ry < rows and 0 <= rx < cols:
            idx = int(self._region_lut[ry, rx])
            return idx if idx >= 0 else None
        return None

    def top_patches(self, region: int, k: int = 8) -> np.ndarray:
        """Indices of the ``k`` patches of ``region`` with the highest attention, best first."""
        members = np.flatnonzero(self._region_index == region)
        att = np.asarray(self.prediction.patch_attention)[members]
        order = np.argsort(-att, kind="stable")[: max(0, int(k))]
        return members[order]

    def patch_centre_world(self, patch: int) -> tuple[float, float]:
        """World ``(y, x)`` (um) of the centre of patch ``patch``."""
        gx, gy = self._grid_xy[patch]
        return self.patch.cell_centre_world(float(gx), float(gy))

    def region_centre_world(self, region: int) -> tuple[float, float]:
        """World ``(y, x)`` (um) of the centre of region ``region`` (clipped to the grid)."""
        k = self.region_size
        rx, ry = (int(v) for v in self._region_xy[region])
        rows, cols = self.grid_shape
        gx = (rx * k + min((rx + 1) * k, cols) - 1) / 2
        gy = (ry * k + min((ry + 1) * k, rows) - 1) / 2
        return self.patch.cell_centre_world(gx, gy)

    def patch_box_level0(self, patch: int) -> tuple[int, int, int]:
        """``(x, y, size)`` of patch ``patch`` in level-0 pixels (for reading a thumbnail)."""
        s = self.patch.step_level0
        if self.embeddings.coords_px is not None:
            x, y = (int(v) for v in self.embeddings.coords_px[patch])
        else:
            gx, gy = self._grid_xy[patch]
            x, y = round(gx * s), round(gy * s)
        return (x, y, round(s))
