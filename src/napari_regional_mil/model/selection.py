"""Patch selection in a training step ([0174]-[0175], [0181]) and grid neighbours ([0189]).

At inference the first model uses every patch; selection is a training-time choice of
which patches one step sees (an augmentation that also keeps steps cheap).

Strategies (:data:`~.config.SELECTION_STRATEGIES`):

``"random"``
    a random subset.
``"max_coverage"``
    one patch from as many regions as possible, then a second round, ... ([0175]).
``"equal_per_region"``
    ``patches_per_region`` patches from each of several regions ([0181], preferred). A bag
    with fewer regions than ``count // patches_per_region`` (tissue-microarray cores, small
    biopsies) takes ``ceil(count / regions)`` patches from each, so a step sees about
    ``count`` patches and a bag of at most ``count`` patches is seen whole
    (``benchmarks/small_bags.py``: without this, the regional model's AUROC on
    6-30-patch cores fell from 1.00 to 0.85).
``"uniform"``
    covers the tissue as uniformly as possible ([0175]): farthest-point sampling on the
    patch grid from a random first patch (each next patch is the one farthest from every
    patch chosen so far), then :data:`LLOYD_ITERATIONS` steps of Lloyd relaxation (each
    selected patch moves to the patch nearest the centroid of the tissue patches closest
    to it), which removes farthest-point sampling's pull towards the tissue's border.
    The largest tissue disc without a selected patch stays within 1.5x that of an ideal
    square grid of the same count (``tests/test_selection.py``; random selection is
    about 2x to 2.5x).
``"weighted"``
    more patches where a weight is higher ([0175]): patches are drawn without
    replacement with probability proportional to ``max(w, 0.1 * mean(w))`` (the floor
    keeps every patch reachable). The weight is the patch's tissue fraction
    (``weight_source="tissue"``, from the embedding cache) or the attention the patch
    received the last time a training step selected it (``weight_source="attention"``,
    kept by :class:`PatchSelector`; patches not yet seen weigh the mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..embedding.types import SlideEmbeddings
from .config import SelectionConfig

__all__ = [
    "LLOYD_ITERATIONS",
    "WEIGHT_FLOOR",
    "PatchSelector",
    "SelectionInputs",
    "farthest_point_order",
    "grid_neighbours",
    "select_patches",
    "uniform_sample",
]

#: Floor of the "weighted" strategy: a patch weighs at least this fraction of the mean weight.
WEIGHT_FLOOR = 0.1
#: Lloyd relaxation steps after farthest-point sampling in the "uniform" strategy.
LLOYD_ITERATIONS = 5


def _rank_within_region(order: np.ndarray, region_index: np.ndarray) -> np.ndarray:
    """For patches visited in ``order``, how many patches of the same region came before."""
    regions = region_index[order]
    by_region = np.argsort(regions, kind="stable")
    sorted_regions = regions[by_region]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_regions)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_regions.size]))
    rank = np.zeros(order.size, dtype=np.int64)
    rank[by_region] = np.arange(order.size) - run_start
    return rank


def select_patches(
    config: SelectionConfig,
    n_patches: int,
    *,
    region_index: np.ndarray | None,
    rng: np.random.Generator,
    grid_xy: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Select the patches one training step sees.

    Parameters
    ----------
    config
        The selection strategy and counts.
    n_patches
        Bag size N.
    region_index
        ``(N,)`` region of each patch, or ``None`` (bags without regions, or models
        without the regional parts: ``"max_coverage"`` and ``"equal_per_region"`` fall
        back to ``"random"``).
    rng
        The random generator (seeded by the training loop).
    grid_xy
        ``(N, 2)`` patch-grid cells ``(x, y)``, for ``"uniform"`` (``None``: random).
    weights
        ``(N,)`` non-negative weights, for ``"weighted"`` (``None``: equal weights).

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices of the selected patches (at least one).
    """
    if n_patches < 1:
        raise ValueError("cannot select patches from an empty bag")
    count = int(rng.integers(config.min_patches, config.max_patches + 1))
    count = min(count, n_patches)
    if config.strategy == "uniform":
        if grid_xy is None:
            return np.sort(rng.choice(n_patches, size=count, replace=False)).astype(np.int64)
        return np.sort(uniform_sample(grid_xy, count, rng=rng)).astype(np.int64)
    if config.strategy == "weighted":
        return np.sort(_weighted_sample(weights, n_patches, count, rng)).astype(np.int64)
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
        present = np.unique(region_index)
        m = max(1, min(present.size, count // config.patches_per_region))
        # a bag of few regions (a TMA core, a small biopsy) gives each chosen region a larger
        # share, so the step still sees about ``count`` patches (all of a bag that small)
        per_region = max(config.patches_per_region, -(-count // m))
        regions = rng.choice(present, size=m, replace=False)
        keep = np.isin(region_index[order], regions) & (rank < per_region)
        chosen = order[keep]
    return np.sort(chosen).astype(np.int64)


def farthest_point_order(grid_xy: np.ndarray, count: int, *, rng: np.random.Generator) -> np.ndarray:
    """Farthest-point sampling: ``count`` patches spread as evenly as possible over the grid.

    Parameters
    ----------
    grid_xy
        ``(N, 2)`` grid cells ``(x, y)`` of the patches.
    count
        Patches to pick (capped by N).
    rng
        Picks the first patch and breaks ties between equally far patches.

    Returns
    -------
    numpy.ndarray
        int64 patch indices in the order they were picked.
    """
    xy = np.asarray(grid_xy, dtype=np.float64)
    n = xy.shape[0]
    count = min(int(count), n)
    x, y = xy[:, 0].copy(), xy[:, 1].copy()
    # squared grid distances are integers: a jitter below 1 only breaks ties; it is kept
    # inside ``nearest`` (min(a + j, b + j) = min(a, b) + j), so argmax needs no temporary
    jitter = rng.random(n) * 0.5
    first = int(rng.integers(n))
    nearest = (x - x[first]) ** 2 + (y - y[first]) ** 2 + jitter
    dx, dy = np.zeros(n), np.zeros(n)
    chosen = np.zeros(count, dtype=np.int64)
    chosen[0] = first
    for j in range(1, count):
        nxt = int(np.argmax(nearest))
        chosen[j] = nxt
        np.subtract(x, x[nxt], out=dx)
        np.multiply(dx, dx, out=dx)
        np.subtract(y, y[nxt], out=dy)
        np.multiply(dy, dy, out=dy)
        dx += dy
        dx += jitter
        np.minimum(nearest, dx, out=nearest)
    return chosen


def uniform_sample(grid_xy: np.ndarray, count: int, *, rng: np.random.Generator) -> np.ndarray:
    """``count`` patches covering the grid evenly: farthest-point sampling, then Lloyd relaxation.

    Parameters
    ----------
    grid_xy
        ``(N, 2)`` grid cells ``(x, y)`` of the patches.
    count
        Patches to pick (capped by N).
    rng
        Seeds the farthest-point sampling (first patch, ties).

    Returns
    -------
    numpy.ndarray
        ``count`` distinct int64 patch indices (unsorted).
    """
    xy = np.asarray(grid_xy, dtype=np.float64)
    chosen = farthest_point_order(xy, count, rng=rng)
    if chosen.size < 2 or chosen.size == xy.shape[0]:
        return chosen
    every_patch = cKDTree(xy)
    for _ in range(LLOYD_ITERATIONS):
        _, owner = cKDTree(xy[chosen]).query(xy)
        members = np.bincount(owner, minlength=chosen.size)
        centroids = np.stack(
            [np.bincount(owner, xy[:, d], chosen.size) / np.maximum(members, 1) for d in (0, 1)], axis=1
        )
        _, moved = every_patch.query(centroids)
        moved = np.where(members > 0, moved, chosen)
        if np.unique(moved).size < moved.size or np.array_equal(moved, chosen):
            break  # two centroids share a nearest patch, or converged: keep the last distinct set
        chosen = moved.astype(np.int64)
    return chosen


def _weighted_sample(weights: np.ndarray | None, n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` of ``n`` patches without replacement, probability ~ ``max(w, floor * mean(w))``."""
    if weights is None:
        return rng.choice(n, size=count, replace=False)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights have shape {w.shape}, expected ({n},)")
    w = np.where(np.isfinite(w), np.maximum(w, 0.0), 0.0)
    mean = float(w.mean())
    if mean <= 0:
        return rng.choice(n, size=count, replace=False)
    w = np.maximum(w, WEIGHT_FLOOR * mean)
    # Gumbel top-k: the same law as drawing one patch after another without replacement
    keys = np.log(w) - np.log(-np.log(rng.random(n)))
    if count >= n:
        return np.arange(n)
    return np.argpartition(-keys, count - 1)[:count]


@dataclass(frozen=True, eq=False)
class SelectionInputs:
    """What a selection strategy reads of one slide (see :meth:`PatchSelector.inputs_needed`).

    Parameters
    ----------
    n_patches
        Bag size N.
    region_index
        ``(N,)`` region of each patch, or ``None``.
    grid_xy
        ``(N, 2)`` patch-grid cells, or ``None``.
    tissue_fraction
        ``(N,)`` tissue fraction of each patch, or ``None``.
    """

    n_patches: int
    region_index: np.ndarray | None = None
    grid_xy: np.ndarray | None = None
    tissue_fraction: np.ndarray | None = None


class PatchSelector:
    """The selection of a training run: every training bag's inputs, and the attention weights.

    Parameters
    ----------
    config
        The selection strategy and counts.
    embeddings
        The training slides' embeddings (grid and tissue fraction are read from them and
        kept), or ``None`` when each step passes the slide's :class:`SelectionInputs`
        (streaming from the caches; ``sizes`` then gives the bag sizes).
    regions
        Whether the model uses regions (without them the region strategies fall back
        to ``"random"``, as for bags without coordinates).
    sizes
        The bag sizes, when ``embeddings`` is ``None``.

    Notes
    -----
    With ``strategy="weighted"`` and ``weight_source="attention"``, :meth:`observe` stores
    the attention each selected patch received in its step, scaled so the step's mean is
    1; the next selection from that slide (in the next epoch) is weighted by it. Patches
    never selected yet weigh 1 (the mean), so the first epoch is uniform random. Given
    the same inputs, kept or passed per step, the selections are the same.
    """

    def __init__(
        self,
        config: SelectionConfig,
        embeddings: Sequence[SlideEmbeddings] | None,
        *,
        regions: bool,
        sizes: Sequence[int] | None = None,
    ) -> None:
        self.config = config
        self.regions = regions
        if embeddings is None:
            if sizes is None:
                raise ValueError("give the training slides' embeddings or their sizes")
            self._sizes = [int(n) for n in sizes]
            self._inputs: list[SelectionInputs] | None = None
        else:
            self._sizes = [e.n_patches for e in embeddings]
            self._inputs = [self._inputs_of(e) for e in embeddings]
        self._weights: list[np.ndarray | None] = [None] * len(self._sizes)
        if self._attention_weighted:
            self._weights = [np.ones(n) for n in self._sizes] if embeddings is not None else self._weights

    @property
    def _attention_weighted(self) -> bool:
        return self.config.strategy == "weighted" and self.config.weight_source == "attention"

    def inputs_needed(self) -> frozenset[str]:
        """The arrays of a slide this selection reads: ``region_index``, ``grid_xy``, ``tissue_fraction``."""
        needed = set()
        if self.regions and self.config.strategy in ("max_coverage", "equal_per_region"):
            needed.add("region_index")
        if self.config.strategy == "uniform":
            needed.add("grid_xy")
        if self.config.strategy == "weighted" and self.config.weight_source == "tissue":
            needed.add("tissue_fraction")
        return frozenset(needed)

    def _inputs_of(self, e: SlideEmbeddings) -> SelectionInputs:
        needed = self.inputs_needed()
        region_index = None
        if "region_index" in needed and e.has_regions:
            region_index = np.asarray(e.region_index, dtype=np.int64)
        grid = e.grid_xy if "grid_xy" in needed else None
        tissue = e.tissue_fraction if "tissue_fraction" in needed else None
        return SelectionInputs(
            e.n_patches, region_index, None if grid is None else np.asarray(grid),
            None if tissue is None else np.asarray(tissue, np.float64),
        )

    def inputs(self, e: SlideEmbeddings) -> SelectionInputs:
        """The :class:`SelectionInputs` of one slide (what :meth:`select` reads of it)."""
        return self._inputs_of(e)

    def select(self, i: int, rng: np.random.Generator, inputs: SelectionInputs | None = None) -> np.ndarray:
        """Sorted int64 indices of the patches bag ``i`` shows in this step.

        ``inputs`` is bag ``i``'s :class:`SelectionInputs` when the selector keeps none.
        """
        if inputs is None:
            if self._inputs is None:
                raise ValueError("this selector keeps no inputs: pass the slide's SelectionInputs")
            inputs = self._inputs[i]
        weights = self._weights[i]
        if self._attention_weighted and weights is None:
            weights = self._weights[i] = np.ones(self._sizes[i])
        elif self.config.strategy == "weighted" and self.config.weight_source == "tissue":
            weights = inputs.tissue_fraction
        return select_patches(
            self.config,
            self._sizes[i],
            region_index=inputs.region_index,
            rng=rng,
            grid_xy=inputs.grid_xy,
            weights=weights,
        )

    def observe(self, i: int, selected: np.ndarray, attention: np.ndarray) -> None:
        """Record the attention of bag ``i``'s selected patches (``weight_source="attention"``)."""
        if not self._attention_weighted:
            return
        weights = self._weights[i]
        if weights is None:
            weights = self._weights[i] = np.ones(self._sizes[i])
        attention = np.asarray(attention, dtype=np.float64)
        weights[np.asarray(selected)] = attention * attention.size / max(float(attention.sum()), 1e-12)

    def weights(self, i: int) -> np.ndarray | None:
        """The current weights of bag ``i`` (``None``: equal)."""
        if self.config.strategy == "weighted" and self.config.weight_source == "tissue" and self._inputs is not None:
            weights = self._inputs[i].tissue_fraction
        else:
            weights = self._weights[i]
        return None if weights is None else weights.copy()


def grid_neighbours(grid_xy: np.ndarray, n: int, *, rows: np.ndarray | None = None) -> np.ndarray:
    """The ``n`` nearest other patches on the grid of every patch (or of the patches ``rows``).

    Parameters
    ----------
    grid_xy
        ``(N, 2)`` grid cells ``(x, y)`` of the patches.
    n
        Neighbours per patch.
    rows
        Only these patches' neighbours (int indices; a training step's selected patches);
        row ``j`` of the result is then patch ``rows[j]``'s, equal to the full result's row.

    Returns
    -------
    numpy.ndarray
        ``(N, n)`` (or ``(len(rows), n)``) int64 patch indices, nearest first (ties broken
        by row, then column offset); ``-1`` where fewer than ``n`` patches lie within
        ``ceil(sqrt(n)) + 1`` cells.
    """
    grid_xy = np.asarray(grid_xy, dtype=np.int64)
    n_patches = grid_xy.shape[0]
    centres = np.arange(n_patches) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.full((centres.size, n), -1, dtype=np.int64)
    if n == 0 or n_patches == 0 or centres.size == 0:
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
    candidates = np.full((centres.size, offsets.shape[0]), -1, dtype=np.int64)
    for j, (ox, oy) in enumerate(offsets):
        x, y = local[centres, 0] + ox, local[centres, 1] + oy
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        candidates[inside, j] = lookup[y[inside], x[inside]]
    first_valid = np.argsort(candidates < 0, axis=1, kind="stable")[:, :n]
    picked = np.take_along_axis(candidates, first_valid, axis=1)
    out[:, : picked.shape[1]] = picked
    return out
