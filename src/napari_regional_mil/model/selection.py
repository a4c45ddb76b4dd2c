"""Patch selection in a training step ([0174]-[0175], [0181]) and grid neighbours ([0189]).

At inference the first model uses every patch; selection is a training-time choice of
which patches one step sees (an augmentation that also keeps steps cheap).
"""

from __future__ import annotations

import numpy as np

from .config import SelectionConfig

__all__ = ["select_patches", "grid_neighbours"]


def _rank_within_region(order: np.ndarray, region_index: np.ndarray) -> np.ndarray:
    """For patches visited in ``order``, how many patches of the same region came before."""
    regions = region_index[order]
    by_region = np.argsort(regions, kind="stable")
    sorted_regions = regions[by_region]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_regions)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_regions.size]))
    rank = np.empty(order.size, dtype=np.int64)
    rank[by_region] = np.arange(order.size) - run_start
    return rank


def select_patches(
    config: SelectionConfig,
    n_patches: int,
    *,
    region_index: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Select the patches one training step sees.

    Parameters
    ----------
    config
        The selection strategy and counts.
    n_patches
        Bag size N.
    region_index
        ``(N,)`` region of each patch, or ``None`` (bags without coordinates: the
        strategy falls back to ``"random"``).
    rng
        The random generator (seeded by the training loop).

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices of the selected patches (at least one).
    """
    if n_patches < 1:
        raise ValueError("cannot select patches from an empty bag")
    count = int(rng.integers(config.min_patches, config.max_patches + 1))
    count = min(count, n_patches)
    if region_index is None or config.strategy == "random":
        return np.sort(rng.choice(n_patches, size=count, replace=False)).astype(np.int64)
    region_index = np.asarray(region_index, dtype=np.int64)
    n_regions = int(region_index.max()) + 1
    order = rng.permutation(n_patches)
    rank = _rank_within_region(order, region_index)
    region_order = rng.permutation(n_regions)[region_index[order]]
    if config.strategy == "max_coverage":
        # one patch from every region (in random region order), then a second round, ...
        key = rank * n_regions + region_order
        chosen = order[np.argsort(key, kind="stable")[:count]]
    else:  # equal_per_region
        per_region = config.patches_per_region
        present = np.unique(region_index)
        m = max(1, min(present.size, count // per_region))
        regions = rng.choice(present, size=m, replace=False)
        keep = np.isin(region_index[order], regions) & (rank < per_region)
        chosen = order[keep]
    return np.sort(chosen).astype(np.int64)


def grid_neighbours(grid_xy: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` nearest other patches on the grid of every patch.

    Parameters
    ----------
    grid_xy
        ``(N, 2)`` grid cells ``(x, y)`` of the patches.
    n
        Neighbours per patch.

    Returns
    -------
    numpy.ndarray
        ``(N, n)`` int64 patch indices, nearest first (ties broken by row, then column
        offset); ``-1`` where fewer than ``n`` patches lie within ``ceil(sqrt(n)) + 1``
        cells.
    """
    grid_xy = np.asarray(grid_xy, dtype=np.int64)
    n_patches = grid_xy.shape[0]
    out = np.full((n_patches, n), -1, dtype=np.int64)
    if n == 0 or n_patches == 0:
        return out
    origin = grid_xy.min(axis=0)
    local = grid_xy - origin
    width, height = local.max(axis=0) + 1
    lookup = np.full((height, width), -1, dtype=np.int64)
    lookup[local[:, 1], local[:, 0]] = np.arange(n_patches)
    radius = int(np.ceil(np.sqrt(n))) + 1
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    offsets = np.stack([dx.ravel(), dy.ravel()], axis=1)
    offsets = offsets[(offsets != 0).any(axis=1)]
    dist = (offsets**2).sum(axis=1)
    offsets = offsets[np.lexsort((offsets[:, 0], offsets[:, 1], dist))]
    candidates = np.full((n_patches, offsets.shape[0]), -1, dtype=np.int64)
    for j, (ox, oy) in enumerate(offsets):
        x, y = local[:, 0] + ox, local[:, 1] + oy
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        candidates[inside, j] = lookup[y[inside], x[inside]]
    first_valid = np.argsort(candidates < 0, axis=1, kind="stable")[:, :n]
    picked = np.take_along_axis(candidates, first_valid, axis=1)
    out[:, : picked.shape[1]] = picked
    return out
