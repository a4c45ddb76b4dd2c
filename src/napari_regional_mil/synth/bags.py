"""Synthetic bags of any size: tissue-microarray cores, biopsies, whole slides (no images).

A bag is a random set of cells of a square patch grid; each patch is one of three tissue
types (a random prototype plus Gaussian noise); a positive bag also holds a few
*witness* patches of a fourth type, scattered. Used to check that the first model's
defaults train as well on bags of a handful of patches (TMA cores, small biopsies) as on
whole slides (``benchmarks/small_bags.py``, ``tests/test_small_bags.py``).
"""

from __future__ import annotations

import numpy as np

from ..embedding.h5io import regions_from_grid
from ..embedding.store import pool_regions
from ..embedding.types import SlideEmbeddings

__all__ = ["BAG_SIZES", "synthetic_bag", "synthetic_bags"]

#: Typical sizes: ``(fewest, most patches), (fewest, most witnesses)`` of a positive bag.
BAG_SIZES = {
    "tma": ((6, 30), (1, 2)),
    "biopsy": ((40, 200), (2, 6)),
    "wsi": ((300, 600), (10, 30)),
}


def synthetic_bag(
    name: str,
    *,
    positive: bool,
    n_patches: int,
    n_witnesses: int,
    rng: np.random.Generator,
    dim: int = 16,
    noise: float = 0.6,
    region_size: int = 8,
    prototype_seed: int = 7,
) -> SlideEmbeddings:
    """One bag on a patch grid with regions of ``region_size`` x ``region_size`` patches."""
    prototypes = np.random.default_rng(prototype_seed).standard_normal((4, dim)).astype(np.float32)
    side = int(np.ceil(np.sqrt(n_patches * 1.3)))
    cells = rng.permutation(side * side)[:n_patches]
    grid = np.stack([cells % side, cells // side], axis=1).astype(np.int32)
    grid = grid[np.lexsort((grid[:, 0], grid[:, 1]))]  # row-major, as the architecture orders patches
    types = rng.integers(0, 3, n_patches)
    if positive:
        types[rng.choice(n_patches, size=min(n_witnesses, n_patches), replace=False)] = 3
    features = prototypes[types] + noise * rng.standard_normal((n_patches, dim)).astype(np.float32)
    region_index, region_xy = regions_from_grid(grid, region_size)
    mean, peak = pool_regions(features, region_index, len(region_xy))
    meta = {"patch_size": 256, "target_mpp": 0.5, "region_size": region_size, "patch_size_level0": 256.0,
            "slide_mpp": 0.5, "embedding_dim": dim, "encoder": "synthetic"}
    return SlideEmbeddings(
        name, features, coords_px=grid.astype(np.int64) * 256, grid_xy=grid, region_index=region_index,
        region_xy=region_xy, regional_embeddings={"mean": mean, "max": peak}, meta=meta,
    )


def synthetic_bags(
    n_bags: int, *, kind: str = "tma", seed: int = 0, dim: int = 16, region_size: int = 8
) -> list[tuple[SlideEmbeddings, int]]:
    """``n_bags`` bags of one :data:`BAG_SIZES` kind, alternately negative and positive: ``(bag, label)``."""
    (low, high), (w_low, w_high) = BAG_SIZES[kind]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_bags):
        positive = i % 2 == 1
        bag = synthetic_bag(
            f"{kind}_{i:03d}", positive=positive, n_patches=int(rng.integers(low, high + 1)),
            n_witnesses=int(rng.integers(w_low, w_high + 1)), rng=rng, dim=dim, region_size=region_size,
        )
        out.append((bag, int(positive)))
    return out
