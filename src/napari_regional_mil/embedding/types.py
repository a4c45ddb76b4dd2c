"""The record every consumer of cached embeddings works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SlideEmbeddings"]


@dataclass(frozen=True, eq=False)
class SlideEmbeddings:
    """Patch and regional embeddings of one slide, as the first model consumes them.

    All ``(N, 2)``/``(R, 2)`` arrays are ``(x, y)`` = (column, row): level-0 pixels for
    ``coords_px``, patch-grid cells for ``grid_xy``, region-grid cells for
    ``region_xy``. Patches are ordered row-major on the grid, regions row-major on the
    region grid.

    Parameters
    ----------
    slide_name
        The slide's name (file stem) as the cohort CSV names it.
    features
        ``(N, D)`` float32 patch embeddings of the second model (frozen encoder).
    coords_px
        ``(N, 2)`` int64 level-0 top-left corner of each patch, or ``None`` for a bag of
        features without coordinates (imported from another tool).
    grid_xy
        ``(N, 2)`` int32 patch-grid cell of each patch, or ``None``.
    region_index
        ``(N,)`` int32 index into ``region_xy`` of each patch's region, or ``None``.
    region_xy
        ``(R, 2)`` int32 region-grid cell of each region, or ``None``.
    regional_embeddings
        Pooled regional embeddings by pooling name (``"mean"``, ``"max"``), each
        ``(R, D)`` float32; empty without regions.
    tissue_fraction
        ``(N,)`` float32 tissue fraction of each patch, or ``None``.
    context_embeddings
        Extra per-region embeddings from encoders at other scales, by encoder name,
        each ``(R, D_k)`` float32 (several-scales extension; may be empty).
    meta
        Provenance: ``slide_path``, ``slide_mpp``, ``target_mpp``, ``patch_size``,
        ``patch_size_level0``, ``region_size``, ``encoder``, ``encoder_hash``,
        ``embedding_dim``, ``format_version``, ``cache_key`` (whatever is known).
    """

    slide_name: str
    features: np.ndarray
    coords_px: np.ndarray | None = None
    grid_xy: np.ndarray | None = None
    region_index: np.ndarray | None = None
    region_xy: np.ndarray | None = None
    regional_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    tissue_fraction: np.ndarray | None = None
    context_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_patches(self) -> int:
        """Number of patches (instances) in the bag."""
        return int(self.features.shape[0])

    @property
    def n_regions(self) -> int:
        """Number of regions (0 for a bag without coordinates)."""
        return 0 if self.region_xy is None else int(self.region_xy.shape[0])

    @property
    def embedding_dim(self) -> int:
        """Dimension of the patch embeddings."""
        return int(self.features.shape[1])

    @property
    def has_regions(self) -> bool:
        """Whether the bag knows its grid and regions (so the regional model applies)."""
        return self.grid_xy is not None and self.region_index is not None and self.n_regions > 0
