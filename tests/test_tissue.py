"""Tissue detection on real and synthetic slides."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_regional_mil.slide import open_slide
from napari_regional_mil.tissue import TissueMask, detect_tissue


@pytest.mark.parametrize("method", ["otsu-saturation", "otsu-od", "threshold-saturation", "threshold-od"])
def test_cmu1_tissue(testslides_dir, method):
    with open_slide(testslides_dir / "CMU-1-Small-Region.svs") as slide:
        tissue = detect_tissue(slide, method=method)
    assert tissue.shape == (1483, 1110)
    assert tissue.downsample == pytest.approx((2220 / 1110, 2967 / 1483))
    assert tissue.mpp == pytest.approx((0.499 * 2, 0.499 * 2967 / 1483))
    assert 0.25 < tissue.tissue_fraction < 0.6
    # glass on the left and right, a band of tissue down the middle
    assert not tissue.mask[:400, :300].any() and not tissue.mask[:, -60:].any()
    assert tissue.mask[600:1300, 550:650].mean() > 0.95


@pytest.mark.parametrize("method", ["otsu-saturation", "otsu-od"])
def test_kidney_small_piece_found(testslides_dir, method):
    with open_slide(testslides_dir / "kidney-48-5.tif") as slide:
        tissue = detect_tissue(slide, method=method)
    assert tissue.mpp is None and tissue.downsample == (1.0, 1.0)
    _labels, n = ndimage.label(tissue.mask)
    assert n == 1  # the piece; dust and specks are removed
    ys, xs = np.nonzero(tissue.mask)
    assert 250 < xs.mean() < 450 and 450 < ys.mean() < 620  # where the piece lies
    assert 2000 < tissue.mask.sum() < 20000


def test_synthetic_background_excluded(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=32)
    with open_slide(path) as slide:
        tissue = detect_tissue(slide, min_area_um2=0, fill_holes=False, closing_um=2)  # 8 um would close the hole
    frac = tissue.mask.reshape(7, 32, 11, 32).mean(axis=(1, 3))
    assert (frac[odd_patch_types >= 0] > 0.9).all()  # every type, fat included
    assert (frac[odd_patch_types < 0] < 0.2).all()


def test_fill_holes_and_min_area(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=32)
    with open_slide(path) as slide:
        filled = detect_tissue(slide, min_area_um2=0, fill_holes=True)
        cleaned = detect_tissue(slide, min_area_um2=1000, fill_holes=False)
    hole = filled.mask[3 * 32 : 4 * 32, 5 * 32 : 6 * 32]
    assert hole.all()  # the one-cell hole is enclosed by tissue
    island = cleaned.mask[:32, 10 * 32 :]  # a 16 x 16 um island < 1000 um^2... 256 um^2
    assert not island.any()
    assert cleaned.mask[64:96, 64:96].all()


def test_empty_slide_gives_empty_mask(synthetic_slide):
    path = synthetic_slide(np.full((5, 9), -1))
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
    assert tissue.mask.shape == (160, 288) and not tissue.mask.any()


def test_with_mask_accepts_painted_labels():
    tissue = TissueMask(np.zeros((4, 6), bool), (2.0, 2.0), (1.0, 1.0))
    painted = np.zeros((4, 6), np.uint8)
    painted[1:3, 2:5] = 1
    edited = tissue.with_mask(painted)
    assert edited.method == "user" and edited.mask.dtype == bool and edited.mask.sum() == 6
    assert edited.downsample == tissue.downsample
    with pytest.raises(ValueError, match="shape"):
        tissue.with_mask(np.zeros((3, 6)))


def test_bad_method_rejected(testslides_dir):
    with open_slide(testslides_dir / "small.svs") as slide, pytest.raises(ValueError, match="method"):
        detect_tissue(slide, method="magic")
