"""The synthetic stand-ins of the shared test slides: Aperio SVS pyramids that both backends read,
and (with the real files present) the same properties as the real slides."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TESTSLIDES
from napari_regional_mil.slide import open_slide
from vendor_standins import STANDINS, write_aperio_svs, write_standins


@pytest.fixture(scope="module")
def aperio_pyramid(tmp_path_factory):
    """A 3-level Aperio SVS (4x downsamples, 240 px JPEG tiles), 1000 x 1300 px, with thumbnail, label, macro."""
    rng = np.random.default_rng(2)
    image = np.full((1300, 1000, 3), 236, np.uint8)
    image[200:1100, 300:700] = rng.integers(90, 200, (900, 400, 3), dtype=np.uint8)
    return write_aperio_svs(tmp_path_factory.mktemp("aperio") / "pyramid.svs", image, mpp=0.2527, app_mag=40,
                            levels=3)


def test_an_aperio_pyramid_reads_the_same_with_tiffslide_and_openslide(aperio_pyramid):
    with open_slide(aperio_pyramid) as ts, open_slide(aperio_pyramid, backend="openslide") as osl:
        for info in (ts.info, osl.info):
            assert info.vendor == "aperio"
            assert info.dimensions == (1000, 1300) and info.tile_size == (240, 240)
            assert info.level_dimensions == ((1000, 1300), (250, 325), (63, 82))  # Aperio's 4x levels
            assert info.mpp == pytest.approx((0.2527, 0.2527)) and info.objective_power == 40
            assert set(info.associated_images) == {"thumbnail", "label", "macro"}
        for level in (0, 1):  # level 2's downsample is not a whole number: the backends round it differently
            np.testing.assert_array_equal(ts.read_region((288, 176), level, (57, 41)),
                                          osl.read_region((288, 176), level, (57, 41)))
        assert ts.associated_image("label").shape == osl.associated_image("label").shape == (120, 100, 3)


def _facts(path):
    with open_slide(path) as slide:
        info = slide.info
        return {
            "vendor": info.vendor, "dimensions": info.dimensions, "levels": info.level_dimensions,
            "tile": info.tile_size, "mpp": None if info.mpp is None else tuple(round(v, 3) for v in info.mpp),
            "objective": info.objective_power, "associated": set(info.associated_images),
            "warns_mpp": any("mpp" in w or "microns per pixel" in w for w in info.warnings),
        }


@pytest.mark.skipif(not TESTSLIDES.is_dir(), reason=f"compares the stand-ins with the real slides ({TESTSLIDES})")
def test_the_standins_have_the_properties_of_the_real_slides(tmp_path):
    standins = write_standins(tmp_path)
    for name in STANDINS:
        assert _facts(standins / name) == _facts(TESTSLIDES / name), name
