"""Heatmap maths: grids, normalisations, placement in napari world coordinates, queries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_regional_mil.embedding.types import SlideEmbeddings
from napari_regional_mil.errors import CacheError
from napari_regional_mil.heatmap import (
    AttentionMaps,
    GridPlacement,
    contrast_limits,
    grid_image,
    normalise,
)

N_ROWS, N_COLS, K, S = 7, 11, 3, 37.5  # the grid of the ``attention_case`` fixture


@pytest.fixture
def make_case(attention_case):
    assert attention_case.grid == (N_ROWS, N_COLS, K, S)
    return attention_case

def test_patch_and_region_images_hold_values_at_their_cells(make_case):
    emb, pred = make_case()
    maps = AttentionMaps.from_prediction(emb, pred)
    img = maps.patch_image("raw")
    assert img.shape == (N_ROWS, N_COLS) and img.dtype == np.float32
    i = int(np.flatnonzero((emb.grid_xy[:, 0] == 5) & (emb.grid_xy[:, 1] == 2))[0])
    assert img[2, 5] == pytest.approx(pred.patch_attention[i])
    assert img[6, 10] == pytest.approx(pred.patch_attention[-1])
    assert np.isnan(img[3, 4])  # no tissue there
    assert np.isfinite(img).sum() == emb.n_patches
    reg = maps.region_image("raw")
    assert reg.shape == (3, 4)
    for r, (rx, ry) in enumerate(emb.region_xy):
        assert reg[ry, rx] == pytest.approx(pred.region_attention[r])
    ev = maps.evidence_image("positive", "raw")
    assert ev[2, 5] == pytest.approx(pred.class_evidence[i, 1])


def test_region_attention_on_the_patch_grid_is_cut_at_the_grid(make_case):
    """Drawn on the patch grid, a region cut by the slide's edge (the 7 x 11 grid leaves a last
    row of 1 patch and a last column of 2 in 3 x 3 regions) ends where the grid ends."""
    emb, pred = make_case()
    maps = AttentionMaps.from_prediction(emb, pred)
    img = maps.region_image_on_patch_grid("raw")
    assert img.shape == (N_ROWS, N_COLS) and img.dtype == np.float32
    for r, (rx, ry) in enumerate(emb.region_xy):
        block = img[ry * K : (ry + 1) * K, rx * K : (rx + 1) * K]
        assert np.all(block == pytest.approx(pred.region_attention[r]))
    has_region = np.zeros((3, 4), bool)
    has_region[emb.region_xy[:, 1], emb.region_xy[:, 0]] = True
    expected = np.repeat(np.repeat(has_region, K, 0), K, 1)[:N_ROWS, :N_COLS]
    assert np.array_equal(np.isfinite(img), expected)
    on_tissue = maps.region_image_on_patch_grid("raw", tissue_only=True)
    assert np.array_equal(np.isfinite(on_tissue), np.isfinite(maps.patch_image("raw")))
    assert np.nanmax(maps.region_image_on_patch_grid("minmax")) == pytest.approx(1.0)


def test_grid_image_is_row_column():
    img = grid_image(np.array([[3, 1]]), np.array([2.0]), (2, 5))
    assert img[1, 3] == 2.0 and np.isfinite(img).sum() == 1


def test_placement_puts_each_pixel_on_its_patch_centre(make_case):
    emb, pred = make_case()
    mpp = (0.3, 0.45)  # anisotropic, so a swapped axis fails
    maps = AttentionMaps.from_prediction(emb, pred, mpp=mpp)
    (sy, sx), (ty, tx) = maps.patch.scale, maps.patch.translate
    for gx, gy in [(0, 0), (10, 6), (5, 2)]:
        # patch (gx, gy) covers level-0 px [gx*S, gx*S + S); pixel i's centre is at i*mpp
        centre_x = (gx * S + (S - 1) / 2) * mpp[1]
        centre_y = (gy * S + (S - 1) / 2) * mpp[0]
        assert (gy * sy + ty, gx * sx + tx) == pytest.approx((centre_y, centre_x))
    (rsy, rsx), (rty, rtx) = maps.region.scale, maps.region.translate
    assert (rsy, rsx) == pytest.approx((K * S * mpp[0], K * S * mpp[1]))
    # region (3, 2) spans patches 9..11 x 6..8; its centre
    assert (2 * rsy + rty, 3 * rsx + rtx) == pytest.approx(
        ((6 * S + (K * S - 1) / 2) * mpp[0], (9 * S + (K * S - 1) / 2) * mpp[1])
    )


def test_world_lookup_finds_patch_and_region(make_case):
    emb, pred = make_case()
    maps = AttentionMaps.from_prediction(emb, pred, mpp=(0.3, 0.45))
    i = int(np.flatnonzero((emb.grid_xy[:, 0] == 5) & (emb.grid_xy[:, 1] == 2))[0])
    y, x = maps.patch_centre_world(i)
    assert maps.patch_at((y, x)) == i
    # near the patch's corners, still inside it
    assert maps.patch_at((y - 0.45 * S * 0.3, x + 0.45 * S * 0.45)) == i
    assert maps.region_at((y, x)) == emb.region_index[i]
    hole = maps.patch.cell_centre_world(4, 3)
    assert maps.patch_at(hole) is None
    assert maps.region_at(hole) is not None  # the region exists even where a patch has no tissue
    assert maps.patch_at((-50.0, -50.0)) is None and maps.region_at((1e6, 1e6)) is None
    gx, gy = GridPlacement(S, (0.3, 0.45)).world_to_cell(maps.patch.cell_centre_world(7, 4))
    assert (gx, gy) == (7, 4)
    # a whole region's centre is its cell's centre; a partial one's is clipped to the grid
    r = int(np.flatnonzero((emb.region_xy[:, 0] == 1) & (emb.region_xy[:, 1] == 0))[0])
    assert maps.region_centre_world(r) == pytest.approx(maps.region.cell_centre_world(1, 0))
    r = int(np.flatnonzero((emb.region_xy[:, 0] == 3) & (emb.region_xy[:, 1] == 2))[0])
    assert maps.region_centre_world(r) == pytest.approx(maps.patch.cell_centre_world(9.5, 6.0))


def test_top_patches_of_a_region_are_its_highest_attention_patches(make_case):
    emb, pred = make_case()
    maps = AttentionMaps.from_prediction(emb, pred)
    region = int(np.bincount(emb.region_index).argmax())
    members = np.flatnonzero(emb.region_index == region)
    top = maps.top_patches(region, k=3)
    assert len(top) == min(3, len(members))
    assert set(top) <= set(members)
    att = pred.patch_attention
    assert list(att[top]) == sorted(att[members], reverse=True)[: len(top)]
    assert len(maps.top_patches(region, k=100)) == len(members)


def test_normalisations():
    v = np.array([0.01, 0.5, np.nan, 0.01, 0.001, 2.0])
    raw = normalise(v, "raw")
    assert raw[1] == pytest.approx(0.5) and np.isnan(raw[2])
    mm = normalise(v, "minmax")
    assert np.nanmin(mm) == 0 and np.nanmax(mm) == 1 and mm[1] == pytest.approx((0.5 - 0.001) / 1.999)
    rank = normalise(v, "rank")
    # sorted: 0.001, 0.01, 0.01, 0.5, 2.0 -> ranks 0, 1.5, 1.5, 3, 4 (ties share) over 4
    assert rank[[4, 0, 3, 1, 5]] == pytest.approx([0, 0.375, 0.375, 0.75, 1])
    assert np.array_equal(normalise(v, "percentile"), rank, equal_nan=True)
    lg = normalise(v, "log")
    assert lg[4] == 0 and lg[5] == 1 and lg[0] == pytest.approx((-2 + 3) / (np.log10(2) + 3))
    assert np.all(normalise(np.array([0.2, 0.2]), "minmax") == 0.5)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(v, "zscore")


def test_rank_spreads_peaky_attention_over_the_range(make_case):
    emb, pred = make_case()
    maps = AttentionMaps.from_prediction(emb, pred)
    raw = maps.patch_image("raw")
    rank = maps.patch_image("rank")
    # raw gated attention: most patches near 0 ("uniformly cold"); rank uses the full range
    assert np.nanmedian(raw / np.nanmax(raw)) < 0.2
    assert np.nanmedian(rank) == pytest.approx(0.5, abs=0.05)
    assert np.array_equal(np.isnan(raw), np.isnan(rank))


def test_contrast_limits():
    assert contrast_limits(np.array([0.2, 0.4]), "rank") == (0.0, 1.0)
    assert contrast_limits(np.array([0.2, np.nan, 0.4]), "raw") == pytest.approx((0.2, 0.4))
    assert contrast_limits(np.array([-1.0, 3.0]), "raw") == (-3.0, 3.0)


def test_models_without_regions_or_evidence(make_case):
    emb, pred = make_case(evidence=False, regional=False)
    maps = AttentionMaps.from_prediction(emb, pred)
    assert not maps.has_region_attention and maps.evidence_classes == ()
    assert np.isnan(maps.region_attention_of_patches()).all()
    with pytest.raises(ValueError):
        maps.region_image()


def test_mismatched_prediction_or_missing_grid_is_a_cache_error(make_case):
    emb, pred = make_case()
    stale = dataclasses.replace(pred, patch_attention=pred.patch_attention[:-1])
    with pytest.raises(CacheError, match=r"case: the prediction has \d+ patches but the embeddings have"):
        AttentionMaps.from_prediction(emb, stale)
    stale = dataclasses.replace(pred, region_attention=pred.region_attention[:-1])
    with pytest.raises(CacheError, match="regions"):
        AttentionMaps.from_prediction(emb, stale)
    bare = SlideEmbeddings(slide_name="bag", features=emb.features)
    with pytest.raises(CacheError, match="no patch grid"):
        AttentionMaps.from_prediction(bare, pred)
    no_meta = dataclasses.replace(emb, meta={})
    with pytest.raises(CacheError, match="lacks patch_size_level0, region_size, slide_mpp"):
        AttentionMaps.from_prediction(no_meta, pred)
