"""Patch selection strategies and grid neighbours of the first model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.selection import grid_neighbours, select_patches


def _grid(n_rows=11, n_cols=7, k=3, holes=True):
    gy, gx = np.mgrid[:n_rows, :n_cols]
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    if holes:  # drop a few background cells so regions differ in size
        grid = grid[(grid[:, 0] + 2 * grid[:, 1]) % 9 != 0]
    region_id = (grid[:, 1] // k) * 100 + grid[:, 0] // k
    _, region_index = np.unique(region_id, return_inverse=True)
    return grid, region_index


def test_random_count_within_range_and_unique():
    _, region_index = _grid()
    rng = np.random.default_rng(0)
    cfg = SelectionConfig(strategy="random", min_patches=5, max_patches=9)
    counts = set()
    for _ in range(50):
        sel = select_patches(cfg, region_index.size, region_index=region_index, rng=rng)
        assert 5 <= sel.size <= 9 and np.unique(sel).size == sel.size
        assert np.all(np.diff(sel) > 0)
        counts.add(sel.size)
    assert len(counts) > 2  # the count is random


def test_max_coverage_takes_one_patch_per_region_first():
    _, region_index = _grid()
    n_regions = region_index.max() + 1
    rng = np.random.default_rng(1)
    few = select_patches(
        SelectionConfig(strategy="max_coverage", min_patches=n_regions - 2, max_patches=n_regions - 2),
        region_index.size,
        region_index=region_index,
        rng=rng,
    )
    assert np.unique(region_index[few]).size == few.size  # all in different regions
    many = select_patches(
        SelectionConfig(strategy="max_coverage", min_patches=n_regions + 3, max_patches=n_regions + 3),
        region_index.size,
        region_index=region_index,
        rng=rng,
    )
    counts = np.bincount(region_index[many], minlength=n_regions)
    assert counts.min() >= 1 and counts.max() == 2 and (counts == 2).sum() == 3


def test_equal_per_region_selects_n_from_m_regions():
    _, region_index = _grid()
    rng = np.random.default_rng(2)
    cfg = SelectionConfig(strategy="equal_per_region", min_patches=12, max_patches=12, patches_per_region=3)
    sel = select_patches(cfg, region_index.size, region_index=region_index, rng=rng)
    counts = np.bincount(region_index[sel])
    sizes = np.bincount(region_index)
    used = np.flatnonzero(counts)
    assert used.size == 4
    assert np.all(counts[used] == np.minimum(3, sizes[used]))


def test_region_strategies_fall_back_to_random_without_regions():
    rng = np.random.default_rng(3)
    sel = select_patches(SelectionConfig(min_patches=4, max_patches=4), 10, region_index=None, rng=rng)
    assert sel.size == 4


def test_selection_is_reproducible_by_seed():
    _, region_index = _grid()
    cfg = SelectionConfig(strategy="equal_per_region", min_patches=6, max_patches=20, patches_per_region=2)
    a = [select_patches(cfg, region_index.size, region_index=region_index, rng=np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(a[0], a[1])


def test_grid_neighbours_nearest_first_and_only_existing_patches():
    grid, _ = _grid()
    nb = grid_neighbours(grid, 4)
    assert nb.shape == (grid.shape[0], 4)
    lookup = {tuple(c): i for i, c in enumerate(grid)}
    for i, (x, y) in enumerate(grid):
        valid = nb[i][nb[i] >= 0]
        assert i not in valid
        # a 4-neighbour on the grid, when present, is always chosen before a diagonal one
        four = [lookup[c] for c in ((x, y - 1), (x - 1, y), (x + 1, y), (x, y + 1)) if c in lookup]
        assert set(four) <= set(valid.tolist())
        assert np.all(np.diff(((grid[valid] - [x, y]) ** 2).sum(axis=1)) >= 0)  # nearest first


def test_grid_neighbours_axes_not_swapped():
    grid = np.array([[0, 0], [1, 0], [0, 2]])  # (x, y): (1, 0) is adjacent to (0, 0); (0, 2) is 2 rows down
    nb = grid_neighbours(grid, 1)
    assert nb[0, 0] == 1 and nb[2, 0] == 0


@pytest.mark.parametrize(
    "kwargs",
    [dict(strategy="everything"), dict(min_patches=0), dict(min_patches=5, max_patches=3), dict(n_neighbours=-1)],
)
def test_invalid_selection_config(kwargs):
    with pytest.raises(ValueError):
        SelectionConfig(**kwargs)


def test_model_config_round_trip_and_validation():
    cfg = ModelConfig(input_dim=7, n_classes=3, context_dims={"x20": 5}, selection=SelectionConfig(n_neighbours=2))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.without_regions().model_type == "abmil" and not cfg.without_regions().context_dims
    with pytest.raises(ValueError):
        ModelConfig(input_dim=7, model_type="transformer")
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**cfg.to_dict(), "surprise": 1})
