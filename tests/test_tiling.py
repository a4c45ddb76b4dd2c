"""Tiling: the patch grid convention, tissue patches, regions, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_regional_mil.errors import SlideError, TilingError
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tiling import TilingParams, tile_slide, tissue_fraction_grid
from napari_regional_mil.tissue import detect_tissue


@pytest.fixture(scope="module")
def odd_tiling(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=32)
    with open_slide(path) as slide:
        tissue = detect_tissue(slide, min_area_um2=0, fill_holes=False, closing_um=2)  # keeps the 16 um hole
        params = TilingParams(patch_size=32, target_mpp=0.5, region_size=4)
        return tile_slide(slide, tissue, params), tissue


def test_tiling_finds_exactly_the_tissue_cells(odd_tiling, odd_patch_types):
    tiling, _ = odd_tiling
    assert tiling.grid_shape == (7, 11) and tiling.slide_dimensions == (352, 224)
    assert tiling.patch_size_level0 == 32.0 and tiling.slide_mpp == 0.5
    kept = ~np.isnan(tiling.patch_grid_image())
    np.testing.assert_array_equal(kept, odd_patch_types >= 0)
    # row-major order, (x, y) columns, coords follow the grid
    rows, cols = np.nonzero(odd_patch_types >= 0)
    np.testing.assert_array_equal(tiling.grid_xy, np.stack([cols, rows], 1))
    np.testing.assert_array_equal(tiling.coords_px, tiling.grid_xy * 32)
    assert tiling.grid_xy.dtype == np.int32 and tiling.coords_px.dtype == np.int64
    assert tiling.tissue_fraction.dtype == np.float32 and (tiling.tissue_fraction >= 0.5).all()


def test_regions(odd_tiling):
    tiling, _ = odd_tiling
    assert tiling.region_grid_shape == (2, 3)
    expected_regions = np.unique(tiling.grid_xy[:, 1] // 4 * 3 + tiling.grid_xy[:, 0] // 4)
    np.testing.assert_array_equal(tiling.region_xy[:, 1] * 3 + tiling.region_xy[:, 0], expected_regions)
    np.testing.assert_array_equal(tiling.region_xy[tiling.region_index], tiling.grid_xy // 4)
    for r in range(tiling.n_regions):
        members = tiling.patches_of_region(r)
        assert (tiling.grid_xy[members] // 4 == tiling.region_xy[r]).all()
    assert sum(len(tiling.patches_of_region(r)) for r in range(tiling.n_regions)) == tiling.n_patches
    image = tiling.region_grid_image(np.arange(tiling.n_regions))
    assert image[tuple(tiling.region_xy[-1, ::-1])] == tiling.n_regions - 1


def test_user_edited_mask(synthetic_slide, odd_patch_types, odd_tiling):
    tiling, tissue = odd_tiling
    painted = tissue.mask.astype(np.uint8)
    painted[:, : 5 * 32] = 0  # erase the left part of the slide
    path = synthetic_slide(odd_patch_types, patch_px=32)
    params = TilingParams(patch_size=32, target_mpp=0.5, region_size=4)
    with open_slide(path) as slide:
        edited = tile_slide(slide, tissue.with_mask(painted), params)
        plain = tile_slide(slide, painted, params)  # a bare array covering the slide also works
        coarse = tile_slide(slide, painted[::4, ::4], params)  # at any resolution
    assert edited.grid_xy[:, 0].min() == 5
    np.testing.assert_array_equal(edited.grid_xy, plain.grid_xy)
    np.testing.assert_array_equal(edited.grid_xy, coarse.grid_xy)
    assert edited.n_patches < tiling.n_patches


def test_grid_convention_at_other_mpp(synthetic_slide):
    types = np.zeros((5, 9), int)  # all tissue, 9 x 5 cells of 24 px -> 216 x 120 px
    path = synthetic_slide(types, patch_px=24)
    with open_slide(path) as slide:
        tissue = detect_tissue(slide, min_area_um2=0)
        tiling = tile_slide(slide, tissue, TilingParams(patch_size=13, target_mpp=0.7, region_size=4))
    s = 13 * 0.7 / 0.5
    assert tiling.patch_size_level0 == pytest.approx(s)
    assert tiling.grid_shape == (math.floor(120 / s), math.floor(216 / s))
    gx, gy = tiling.grid_xy[:, 0], tiling.grid_xy[:, 1]
    np.testing.assert_array_equal(tiling.coords_px, np.stack([np.rint(gx * s), np.rint(gy * s)], 1))
    assert tiling.n_patches == tiling.grid_shape[0] * tiling.grid_shape[1]


def test_tissue_fraction_is_area_weighted():
    mask = np.zeros((4, 6), bool)
    mask[:, :3] = True  # left half of a 60 x 40 px slide at downsample 10
    frac = tissue_fraction_grid(mask, (10.0, 10.0), (2, 3), 20.0)
    np.testing.assert_allclose(frac, [[1, 0.5, 0], [1, 0.5, 0]])
    frac = tissue_fraction_grid(mask, (10.0, 10.0), (1, 2), 25.0)  # cells [0,25) [25,50)
    np.testing.assert_allclose(frac, [[1.0, 0.2]])


def test_small_svs_is_smaller_than_one_patch(testslides_dir):
    with open_slide(testslides_dir / "small.svs") as slide:
        tissue = detect_tissue(slide)
        with pytest.raises(TilingError) as info:
            tile_slide(slide, tissue)
    assert str(info.value).endswith(
        "small.svs: slide is smaller than one patch (16 x 16 px at 0.499 um/px; one patch is 257 x 257 px)"
    )


def test_no_tissue(synthetic_slide):
    path = synthetic_slide(np.full((5, 9), -1), patch_px=32)
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        with pytest.raises(TilingError, match="no tissue"):
            tile_slide(slide, tissue, TilingParams(patch_size=32, region_size=4))


def test_cmu1_default_tiling(testslides_dir):
    with open_slide(testslides_dir / "CMU-1-Small-Region.svs") as slide:
        tiling = tile_slide(slide, detect_tissue(slide))
    assert tiling.patch_size_level0 == pytest.approx(256 * 0.5 / 0.499)
    assert tiling.grid_shape == (11, 8)
    assert 20 < tiling.n_patches < 60 and tiling.n_regions == 2


def test_kidney_needs_mpp_then_tiles_the_piece(testslides_dir):
    with open_slide(testslides_dir / "kidney-48-5.tif") as slide:
        tissue = detect_tissue(slide)
        with pytest.raises(SlideError, match="mpp"):
            tile_slide(slide, tissue)
        tiling = tile_slide(slide, tissue, TilingParams(patch_size=32, target_mpp=0.5, region_size=4), mpp=1.0)
    assert 2 <= tiling.n_patches < 40
    centre = tiling.coords_px.mean(axis=0) + 8
    assert 250 < centre[0] < 450 and 450 < centre[1] < 620


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (TilingParams(region_size=3), r"k\*k must lie in 10..1000"),
        (TilingParams(region_size=32), r"k\*k must lie in 10..1000"),
        (TilingParams(patch_size=0), "patch size"),
        (TilingParams(target_mpp=0.0), "target mpp"),
        (TilingParams(target_mpp=float("nan")), "target mpp"),
        (TilingParams(tissue_threshold=1.5), "tissue threshold"),
    ],
)
def test_bad_params(testslides_dir, params, problem):
    with open_slide(testslides_dir / "CMU-1-Small-Region.svs") as slide, pytest.raises(TilingError, match=problem):
        tile_slide(slide, np.ones((4, 3), bool), params)
