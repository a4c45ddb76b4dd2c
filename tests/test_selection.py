"""Patch selection strategies and grid neighbours of the first model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_regional_mil.embedding.types import SlideEmbeddings
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.selection import (
    WEIGHT_FLOOR,
    PatchSelector,
    grid_neighbours,
    select_patches,
)


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
    a = [
        select_patches(cfg, region_index.size, region_index=region_index, rng=np.random.default_rng(7))
        for _ in range(2)
    ]
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


def _tissue(shape: str) -> np.ndarray:
    """Grid cells ``(x, y)`` of tissue-like shapes (odd, non-square)."""
    if shape == "rectangle":
        gy, gx = np.mgrid[:23, :37]
        return np.stack([gx.ravel(), gy.ravel()], 1)
    gy, gx = np.mgrid[:41, :53]
    g = np.stack([gx.ravel(), gy.ravel()], 1)
    if shape == "ellipse_with_hole":
        outer = ((g[:, 0] - 26) / 25.0) ** 2 + ((g[:, 1] - 20) / 19.0) ** 2 <= 1
        hole = ((g[:, 0] - 30) / 7.0) ** 2 + ((g[:, 1] - 18) / 5.0) ** 2 <= 1
        return g[outer & ~hole]
    a = ((g[:, 0] - 12) / 11.0) ** 2 + ((g[:, 1] - 12) / 9.0) ** 2 <= 1
    b = ((g[:, 0] - 40) / 10.0) ** 2 + ((g[:, 1] - 28) / 12.0) ** 2 <= 1
    return g[a | b]  # two tissue pieces


def _largest_empty_disc(grid: np.ndarray, selected: np.ndarray) -> float:
    """Radius of the largest disc centred on tissue that holds no selected patch."""
    distance, _ = cKDTree(grid[selected]).query(grid)
    return float(distance.max())


def _ideal_grid_disc(n_patches: int, count: int) -> float:
    """The same for an ideal square grid of ``count`` points over ``n_patches`` cells of tissue."""
    return np.sqrt(n_patches / count) / np.sqrt(2)


@pytest.mark.parametrize("shape", ["rectangle", "ellipse_with_hole", "two_pieces"])
@pytest.mark.parametrize("count", [4, 8, 16, 40, 120])
def test_uniform_covers_the_tissue_like_an_ideal_grid(shape, count):
    grid = _tissue(shape)
    ideal = _ideal_grid_disc(len(grid), count)
    cfg = SelectionConfig(strategy="uniform", min_patches=count, max_patches=count)
    rand = SelectionConfig(strategy="random", min_patches=count, max_patches=count)
    uniform, random = [], []
    for seed in range(12):
        sel = select_patches(cfg, len(grid), region_index=None, rng=np.random.default_rng(seed), grid_xy=grid)
        assert sel.size == count and np.unique(sel).size == count
        uniform.append(_largest_empty_disc(grid, sel))
        sel = select_patches(
            rand, len(grid), region_index=None, rng=np.random.default_rng(seed), grid_xy=grid
        )
        random.append(_largest_empty_disc(grid, sel))
    assert max(uniform) <= 1.5 * ideal
    if count >= 8:  # the measure tells the strategies apart: random leaves far larger holes
        assert np.mean(random) > 1.5 * ideal > np.mean(uniform)


def test_uniform_varies_between_steps_and_is_reproducible_by_seed():
    grid = _tissue("two_pieces")
    cfg = SelectionConfig(strategy="uniform", min_patches=10, max_patches=30)
    draws = [
        select_patches(cfg, len(grid), region_index=None, rng=np.random.default_rng(s), grid_xy=grid)
        for s in range(6)
    ]
    assert len({tuple(d) for d in draws}) == 6
    again = select_patches(cfg, len(grid), region_index=None, rng=np.random.default_rng(0), grid_xy=grid)
    assert np.array_equal(draws[0], again)


def test_uniform_without_a_grid_falls_back_to_random():
    cfg = SelectionConfig(strategy="uniform", min_patches=5, max_patches=5)
    sel = select_patches(cfg, 12, region_index=None, rng=np.random.default_rng(0))
    assert sel.size == 5 and np.unique(sel).size == 5


def _selection_rates(cfg, weights, draws=600, seed=0):
    rng = np.random.default_rng(seed)
    hits = np.zeros(weights.size)
    for _ in range(draws):
        hits[select_patches(cfg, weights.size, region_index=None, rng=rng, weights=weights)] += 1
    return hits / draws


def test_weighted_selects_in_proportion_to_the_weight():
    grid = _tissue("rectangle")
    weights = np.where(grid[:, 0] < 18, 1.0, 0.25)  # left part: 4x the weight
    cfg = SelectionConfig(strategy="weighted", min_patches=8, max_patches=8)
    rates = _selection_rates(cfg, weights)
    ratio = rates[weights == 1.0].mean() / rates[weights == 0.25].mean()
    assert 3.3 < ratio < 4.7
    plain = _selection_rates(SelectionConfig(strategy="random", min_patches=8, max_patches=8), weights)
    assert 0.8 < plain[weights == 1.0].mean() / plain[weights == 0.25].mean() < 1.25


def test_weighted_floor_keeps_zero_weight_patches_reachable():
    weights = np.r_[np.ones(100), np.zeros(100)]
    cfg = SelectionConfig(strategy="weighted", min_patches=4, max_patches=4)
    rates = _selection_rates(cfg, weights, draws=1500)
    assert rates[100:].sum() > 0
    expected = 1.0 / (WEIGHT_FLOOR * weights.mean())  # 20
    assert 0.7 * expected < rates[:100].mean() / rates[100:].mean() < 1.3 * expected


def _embeddings(grid, tissue):
    region_id = (grid[:, 1] // 4) * 100 + grid[:, 0] // 4
    _, region_index = np.unique(region_id, return_inverse=True)
    return SlideEmbeddings(
        slide_name="s",
        features=np.zeros((len(grid), 3), np.float32),
        grid_xy=grid.astype(np.int32),
        region_index=region_index.astype(np.int32),
        region_xy=np.zeros((region_index.max() + 1, 2), np.int32),
        tissue_fraction=tissue.astype(np.float32),
    )


def test_selector_weights_by_tissue_fraction_from_the_cache():
    grid = _tissue("rectangle")
    tissue = np.where(grid[:, 1] < 8, 0.2, 1.0)
    selector = PatchSelector(
        SelectionConfig(strategy="weighted", min_patches=6, max_patches=6, weight_source="tissue"),
        [_embeddings(grid, tissue)],
        regions=True,
    )
    rng = np.random.default_rng(0)
    hits = np.zeros(len(grid))
    for _ in range(500):
        hits[selector.select(0, rng)] += 1
    assert 3.8 < hits[tissue == 1.0].mean() / hits[tissue == 0.2].mean() < 6.2


def test_selector_weights_by_the_attention_of_the_previous_epoch():
    grid = _tissue("rectangle")
    selector = PatchSelector(
        SelectionConfig(strategy="weighted", min_patches=40, max_patches=40, weight_source="attention"),
        [_embeddings(grid, np.ones(len(grid)))],
        regions=True,
    )
    assert np.all(selector.weights(0) == 1.0)  # before any step: every patch weighs the mean
    rng = np.random.default_rng(1)
    first = selector.select(0, rng)
    attention = np.full(first.size, 0.5 / (first.size - 2))
    attention[:2] = 0.25  # two patches got half the attention of the step
    selector.observe(0, first, attention)
    weights = selector.weights(0)
    assert weights[first[:2]] == pytest.approx([0.25 * first.size] * 2)
    assert np.all(weights[np.setdiff1d(np.arange(len(grid)), first)] == 1.0)  # unseen: the mean
    hits = np.zeros(len(grid))
    for _ in range(200):
        hits[selector.select(0, rng)] += 1
    unseen = np.setdiff1d(np.arange(len(grid)), first)
    # weights 20 (the two), 1 (unseen), 0.53 (the rest of the first step)
    assert hits[first[:2]].min() > 4 * hits[unseen].mean()
    assert hits[unseen].mean() > 1.4 * hits[first[2:]].mean()


def test_selector_keeps_region_strategies_random_for_models_without_regions():
    grid = _tissue("rectangle")
    emb = _embeddings(grid, np.ones(len(grid)))
    cfg = SelectionConfig(strategy="max_coverage", min_patches=10, max_patches=10)
    with_regions = PatchSelector(cfg, [emb], regions=True).select(0, np.random.default_rng(0))
    assert np.unique(emb.region_index[with_regions]).size == 10
    without = PatchSelector(cfg, [emb], regions=False).select(0, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    rng.integers(10, 11)  # the count draw comes first
    expected = np.sort(rng.choice(len(grid), size=10, replace=False))
    assert np.array_equal(without, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "everything"},
        {"weight_source": "gradient"},
        {"min_patches": 0},
        {"min_patches": 5, "max_patches": 3},
        {"n_neighbours": -1},
    ],
)
def test_invalid_selection_config(kwargs):
    with pytest.raises(ValueError):
        SelectionConfig(**kwargs)


def test_model_config_round_trip_and_validation():
    cfg = ModelConfig(
        input_dim=7, n_classes=3, context_dims={"x20": 5}, selection=SelectionConfig(n_neighbours=2)
    )
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.without_regions().model_type == "abmil" and not cfg.without_regions().context_dims
    with pytest.raises(ValueError):
        ModelConfig(input_dim=7, model_type="transformer")
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**cfg.to_dict(), "surprise": 1})


@pytest.mark.parametrize(
    "selection",
    [
        {"strategy": "uniform"},
        {"strategy": "weighted", "weight_source": "attention"},
        {"strategy": "weighted"},
    ],
    ids=["uniform", "weighted-attention", "weighted-tissue"],
)
def test_new_strategies_train_the_regional_model_on_the_context_task(labelled_synthetic, selection):
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.model.first_model import make_bag
    from napari_regional_mil.training.metrics import roc_auc
    from napari_regional_mil.training.predict import predict_bags
    from napari_regional_mil.training.train import TrainConfig, train_model

    train, classes = labelled_synthetic(24, seed=10)
    test, _ = labelled_synthetic(12, seed=11)
    cfg = ModelConfig(
        input_dim=train[0].embeddings.embedding_dim,
        hidden_dim=16,
        attention_dim=8,
        selection=SelectionConfig(min_patches=16, max_patches=48, **selection),
    )
    config = TrainConfig(epochs=15, min_epochs=15, val_fraction=0.0, learning_rate=3e-3, threads=1)
    result = run_job(train_model(train, class_names=classes, model_config=cfg, config=config))
    probs = predict_bags(result.model, [make_bag(s.embeddings, result.model.config) for s in test])
    assert roc_auc(probs, np.array([s.label for s in test])) >= 0.9
