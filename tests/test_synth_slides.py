"""Synthetic H&E-like textures and the streaming pyramidal TIFF writer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import tiffslide

from napari_regional_mil.synth.slides import (
    pyramid_shapes,
    render_patch_types,
    write_synthetic_slide,
)
from napari_regional_mil.synth.textures import (
    TISSUE_TYPES,
    make_tissue_layout,
    texture_bank,
)


def _read_level(path, level):
    with tiffslide.TiffSlide(path) as s:
        return s.read_region((0, 0), level, s.level_dimensions[level], as_array=True)


def test_odd_slide_opens_with_levels_and_mpp(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24, mpp=0.5)
    with tiffslide.TiffSlide(path) as s:
        assert s.dimensions == (11 * 24, 7 * 24)
        assert s.level_dimensions == ((264, 168), (132, 84), (66, 42))
        assert s.level_downsamples == (1.0, 2.0, 4.0)
        assert s.properties["tiffslide.mpp-x"] == pytest.approx(0.5)
        assert s.properties["tiffslide.mpp-y"] == pytest.approx(0.5)
        assert s.properties["tiffslide.vendor"] is None
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.compression == tifffile.COMPRESSION.JPEG
        assert page.description == ""  # metadata=None: no shaped JSON description
        assert len(page.subifds) == 2


def test_pixels_follow_patch_types(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24, mpp=0.5)
    img = _read_level(path, 0).astype(np.float32)
    ref = render_patch_types(odd_patch_types, (0, 0, 264, 168), patch_px=24, mpp=0.5)
    assert np.abs(img - ref).mean() < 6  # JPEG q90
    cells = img.reshape(7, 24, 11, 24, 3).mean(axis=(1, 3))
    background = odd_patch_types == -1
    assert (cells[background] > 235).all()
    assert (cells[~background].min(axis=-1) < 232).all()  # every tissue cell is coloured


def test_level1_is_downsampled_level0(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24, mpp=0.5)
    l0 = _read_level(path, 0).astype(np.float32)
    l1 = _read_level(path, 1).astype(np.float32)
    assert np.abs(l0.reshape(84, 2, 132, 2, 3).mean(axis=(1, 3)) - l1).mean() < 8


def test_rendering_is_tile_independent_and_deterministic(odd_patch_types):
    whole = render_patch_types(odd_patch_types, (0, 0, 264, 168), patch_px=24)
    part = render_patch_types(odd_patch_types, (13, 29, 101, 50), patch_px=24)
    np.testing.assert_array_equal(whole[29:79, 13:114], part)
    np.testing.assert_array_equal(whole, render_patch_types(odd_patch_types, (0, 0, 264, 168), patch_px=24))
    # another seed, other textures (at 2 um/px, where texture banks are cheap to build)
    a = render_patch_types(odd_patch_types, (0, 0, 264, 168), patch_px=24, mpp=2.0, seed=3)
    b = render_patch_types(odd_patch_types, (0, 0, 264, 168), patch_px=24, mpp=2.0, seed=4)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, render_patch_types(odd_patch_types, (0, 0, 264, 168), patch_px=24, mpp=2.0,
                                                        seed=3))


def test_write_is_deterministic_and_atomic(tmp_path, odd_patch_types):
    a = write_synthetic_slide(tmp_path / "a.tif", odd_patch_types, patch_px=24, tile=64, min_level_size=64)
    b = write_synthetic_slide(tmp_path / "b.tif", odd_patch_types, patch_px=24, tile=64, min_level_size=64)
    np.testing.assert_array_equal(_read_level(a, 0), _read_level(b, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]  # no temp files left


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="patch_types"):
        write_synthetic_slide(tmp_path / "x.tif", np.zeros((3,), int))
    with pytest.raises(ValueError, match="patch_types"):
        write_synthetic_slide(tmp_path / "x.tif", np.full((2, 2), 17))
    with pytest.raises(ValueError, match="tile"):
        write_synthetic_slide(tmp_path / "x.tif", np.zeros((2, 2), int), tile=100)
    assert not list(tmp_path.iterdir())


def test_pyramid_shapes_halve_until_small():
    assert pyramid_shapes(10_000, 6_001, min_level_size=512) == [
        (10000, 6001), (5000, 3001), (2500, 1501), (1250, 751), (625, 376)
    ]
    assert pyramid_shapes(100, 60, min_level_size=512) == [(100, 60)]


def _stats(tex: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean colour and high-frequency energy (mean |Laplacian| of the grey image)."""
    grey = tex.astype(np.float32).mean(axis=-1)
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return tex.reshape(-1, 3).astype(np.float32).mean(axis=0), float(np.abs(lap).mean())


def test_tissue_types_differ_in_colour_and_texture():
    assert len(TISSUE_TYPES) >= 5 and len(set(TISSUE_TYPES)) == len(TISSUE_TYPES)
    bank = texture_bank(0, 0.5)
    stats = {name: _stats(bank.window(i, 0, 0, 512, 512)) for i, name in enumerate(TISSUE_TYPES)}
    bg_mean, _ = _stats(bank.window(-1, 0, 0, 512, 512))
    assert (bg_mean > 238).all()
    for name, (mean, _) in stats.items():
        assert np.linalg.norm(mean - bg_mean) > 15, name
    # necrosis and mucin: similar colour, different texture
    (m_nec, hf_nec), (m_muc, hf_muc) = stats["necrosis"], stats["mucin"]
    assert np.linalg.norm(m_nec - m_muc) < 15
    assert hf_nec > 3 * hf_muc
    # the other pairs differ clearly in mean colour
    names = [n for n in TISSUE_TYPES if n != "mucin"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.linalg.norm(stats[a][0] - stats[b][0]) > 12, (a, b)


def test_make_tissue_layout_blobs():
    layout = make_tissue_layout((41, 63), np.random.default_rng(5))
    assert layout.shape == (41, 63)
    assert 0.3 < (layout >= 0).mean() < 0.6
    assert len(np.unique(layout[layout >= 0])) >= 4
    assert (layout[0, :] == -1).mean() > 0.5  # tissue away from the border
    np.testing.assert_array_equal(layout, make_tissue_layout((41, 63), np.random.default_rng(5)))
