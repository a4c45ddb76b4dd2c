"""Coordinate conversions between grid, level-0 px, microns and napari world."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil import geometry as geo


def test_grid_level0_round_trip_odd_step():
    step = 256 * 0.5 / 0.499  # 256.513... level-0 px
    cells = np.stack(np.meshgrid(np.arange(13), np.arange(7)), -1).reshape(-1, 2)  # (x, y)
    top_left = geo.grid_to_level0(cells, step)
    np.testing.assert_array_equal(top_left, np.rint(cells * step))
    np.testing.assert_array_equal(geo.level0_to_grid(top_left, step), cells)
    # the last pixel of every cell still belongs to it, the next pixel to the next cell
    last = geo.grid_to_level0(cells + 1, step) - 1
    np.testing.assert_array_equal(geo.level0_to_grid(last, step), cells)
    np.testing.assert_array_equal(geo.level0_to_grid(last + 1, step), cells + 1)


def test_level0_microns_world_round_trip():
    mpp = (0.25, 0.5)  # anisotropic, so a swapped axis fails
    xy = np.array([[0.0, 0.0], [10.5, 3.0], [1001.0, 17.25]])
    um = geo.level0_to_microns(xy, mpp)
    np.testing.assert_allclose(um, [[0, 0], [2.625, 1.5], [250.25, 8.625]])
    np.testing.assert_allclose(geo.microns_to_level0(um, mpp), xy)
    world = geo.level0_to_world(xy, mpp)
    np.testing.assert_allclose(world[1], [(3.0 - 0.5) * 0.5, (10.5 - 0.5) * 0.25])  # (y, x)
    np.testing.assert_allclose(geo.world_to_level0(world, mpp), xy)


def test_pixel_centre_of_the_slide_layer():
    # napari draws slide pixel (row r, col c) centred at world (r * mpp_y, c * mpp_x);
    # that pixel spans level-0 [c, c+1) x [r, r+1), whose centre is (c + 0.5, r + 0.5)
    world = geo.level0_to_world(np.array([[7 + 0.5, 3 + 0.5]]), (0.25, 0.5))
    np.testing.assert_allclose(world, [[3 * 0.5, 7 * 0.25]])


@pytest.mark.parametrize("step", [32.0, 256.513, 7.0])
def test_grid_layer_transform_covers_cells(step):
    mpp = (0.3, 0.45)
    t = geo.grid_layer_transform(step, mpp)
    assert t["scale"] == pytest.approx((step * 0.45, step * 0.3))
    assert t["translate"] == pytest.approx(((step - 1) / 2 * 0.45, (step - 1) / 2 * 0.3))
    # centre of grid-image pixel (r, c) == world of the cell centre (c + 0.5, r + 0.5) * step
    for r, c in [(0, 0), (4, 9), (6, 2)]:
        centre = np.array(t["translate"]) + np.array([r, c]) * np.array(t["scale"])
        cell_centre = geo.level0_to_world(np.array([[(c + 0.5) * step, (r + 0.5) * step]]), mpp)[0]
        np.testing.assert_allclose(centre, cell_centre)
        # its extent is exactly the cell: edges at c*step and (c+1)*step
        lo = centre - np.array(t["scale"]) / 2
        edge = geo.level0_to_world(np.array([[c * step, r * step]]), mpp)[0]
        np.testing.assert_allclose(lo, edge)


def test_grid_layer_transform_for_a_mask_downsample():
    t = geo.grid_layer_transform((2.0, 2.0013), (0.5, 0.5))  # (x, y) steps of a tissue mask
    assert t["scale"] == pytest.approx((2.0013 * 0.5, 1.0))
    assert t["translate"] == pytest.approx((1.0013 / 2 * 0.5, 0.25))


def test_cell_rectangles_and_grid_lines():
    step, mpp = 25.6, (0.5, 0.25)
    rects = geo.cell_rectangles(np.array([[2, 1], [0, 3]]), step, mpp)
    assert rects.shape == (2, 4, 2)
    x0, y0, x1, y1 = np.rint(2 * step), np.rint(1 * step), np.rint(3 * step), np.rint(2 * step)
    expected = geo.level0_to_world(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), mpp)
    np.testing.assert_allclose(rects[0], expected)
    lines = geo.grid_lines((3, 5), step, mpp)
    assert lines.shape == (5 + 1 + 3 + 1, 2, 2)
    # first vertical line: x = 0 from y = 0 to y = round(3 * step)
    np.testing.assert_allclose(lines[0], geo.level0_to_world(np.array([[0, 0], [0, np.rint(3 * step)]]), mpp))
    many = geo.cell_rectangles(np.stack(np.meshgrid(np.arange(100), np.arange(80)), -1).reshape(-1, 2), step, mpp)
    assert many.shape == (8000, 4, 2)


def test_patch_size_level0():
    assert geo.patch_size_level0(256, 0.5, 0.25) == 512.0
    assert geo.patch_size_level0(224, 0.5, 0.499) == pytest.approx(224.4489, rel=1e-5)
