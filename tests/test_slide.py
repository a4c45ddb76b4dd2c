"""Slide I/O: the shared real test slides, synthetic slides and a corpus of bad files."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

from napari_regional_mil.errors import RegionalMilError, SlideError
from napari_regional_mil.slide import DISPLAY_MIN_SIZE, open_slide


def test_cmu1_small_region(testslides_dir):
    with open_slide(testslides_dir / "CMU-1-Small-Region.svs") as slide:
        info = slide.info
        assert info.vendor == "aperio"
        assert info.dimensions == (2220, 2967)
        assert info.level_dimensions == ((2220, 2967),)
        assert info.mpp == pytest.approx((0.499, 0.499)) and info.mpp_source == "slide"
        assert slide.mpp == pytest.approx(0.499)
        assert info.objective_power == 20
        assert set(info.associated_images) == {"thumbnail", "label", "macro"}
        assert info.tile_size == (240, 240)
        assert info.warnings == ()
        label = slide.associated_image("label")
        assert label.ndim == 3 and label.shape[2] == 3 and label.dtype == np.uint8
        with pytest.raises(SlideError, match="no associated image 'nope'"):
            slide.associated_image("nope")
        pyramid = slide.display_pyramid()
        assert pyramid[0].shape == (2967, 2220, 3) and pyramid[0].chunksize == (240, 240, 3)
        # a single native level gets lazily halved levels down to <= DISPLAY_MIN_SIZE
        assert [p.shape[:2] for p in pyramid[1:]] == [(1483, 1110), (741, 555)]
        assert max(pyramid[-1].shape[:2]) <= DISPLAY_MIN_SIZE
        assert all(p.dtype == np.uint8 for p in pyramid)
        region = slide.read_region((1000, 1500), 0, (37, 23))
        np.testing.assert_array_equal(region, pyramid[0][1500:1523, 1000:1037].compute())
        low = pyramid[1][700:710, 500:520].compute().astype(int)
        ref = pyramid[0][1400:1420, 1000:1040].compute().reshape(10, 2, 20, 2, 3).mean(axis=(1, 3))
        assert np.abs(low - ref).max() <= 1
        assert slide.level_for_mpp(0.5) == 0 and slide.level_for_mpp(10.0) == 0


def test_small_svs_opens(testslides_dir):
    with open_slide(testslides_dir / "small.svs") as slide:
        assert slide.info.dimensions == (16, 16)
        assert slide.mpp == pytest.approx(0.499)
        assert len(slide.display_pyramid()) == 1
        assert slide.thumbnail(8).shape == (8, 8, 3)


def test_boxes_pyramid_without_real_mpp(testslides_dir):
    with open_slide(testslides_dir / "boxes.tiff") as slide:
        info = slide.info
        assert info.vendor is None and info.level_count == 4
        assert info.mpp is None and info.mpp_source == "none" and info.slide_mpp is None
        assert any("352.78" in w and "mpp" in w for w in info.warnings)
        with pytest.raises(SlideError, match=r"boxes\.tiff.*mpp="):
            _ = slide.mpp
        pyramid = slide.display_pyramid()
        assert [p.shape[:2] for p in pyramid] == [(250, 300), (125, 150), (62, 75), (31, 37)]
        assert pyramid[0].chunksize == (64, 64, 3)
    with open_slide(testslides_dir / "boxes.tiff", mpp=0.25) as slide:
        assert slide.mpp == 0.25 and slide.info.mpp_source == "user" and slide.info.warnings == ()
        assert slide.level_for_mpp(1.0) == 2  # downsample 4.02 -> 1.004 um/px is within 1 %
        assert slide.level_for_mpp(0.9) == 1


def test_kidney_strip_tiff_lazy_pyramid(testslides_dir):
    with open_slide(testslides_dir / "kidney-48-5.tif") as slide:
        info = slide.info
        assert info.dimensions == (1493, 901) and info.tile_size is None and info.level_count == 1
        assert info.mpp is None
        assert any("no microns per pixel" in w for w in info.warnings)
        with pytest.raises(SlideError, match="--mpp"):
            _ = slide.mpp
        pyramid = slide.display_pyramid()
        assert pyramid[0].chunksize[:2] == (901, 1024)  # not one 4 MB strip per chunk
        assert [p.shape[:2] for p in pyramid] == [(901, 1493), (450, 746)]
        # lazily built: a dask graph, not an ndarray; one chunk of level 1 reads only its block
        assert type(pyramid[1]).__name__ == "Array"
        block = pyramid[1][:10, :10].compute()
        full = slide.read_region((0, 0), 0, (20, 20)).reshape(10, 2, 10, 2, 3).mean(axis=(1, 3))
        assert np.abs(block.astype(int) - full).max() <= 1
    with open_slide(testslides_dir / "kidney-48-5.tif", mpp=0.5) as slide:
        assert slide.mpp == 0.5 and slide.info.mpp_source == "user"


def test_synthetic_pyramid_levels_and_chunks(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24)
    with open_slide(path) as slide:
        assert slide.info.level_dimensions == ((264, 168), (132, 84), (66, 42))
        assert slide.info.mpp == (0.5, 0.5)
        pyramid = slide.display_pyramid()
        assert [p.shape for p in pyramid] == [(168, 264, 3), (84, 132, 3), (42, 66, 3)]
        assert all(p.chunksize[:2] == (min(64, p.shape[0]), 64) for p in pyramid)
        assert slide.display_downsamples()[1] == (2.0, 2.0)
        assert slide.read_region((24, 48), 1, (5, 7)).shape == (7, 5, 3)


def test_read_region_is_thread_safe(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24)
    with open_slide(path) as slide:
        expected = {i: slide.read_region((i * 7, i * 5), 0, (40, 30)) for i in range(8)}
        results, errors = {}, []

        def work(i):
            try:
                for _ in range(5):
                    results[i] = slide.read_region((i * 7, i * 5), 0, (40, 30))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for i in range(8):
            np.testing.assert_array_equal(results[i], expected[i])
        assert slide.backend.thread_handle_count >= 2  # each thread its own handle
    with pytest.raises(SlideError, match="closed"):
        slide.display_pyramid()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, synthetic_slide, odd_patch_types):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.svs").write_bytes(b"")
    (root / "text.svs").write_text("this is not a slide\n")
    good = synthetic_slide(odd_patch_types, patch_px=24).read_bytes()
    (root / "truncated.tiff").write_bytes(good[: len(good) * 2 // 3])
    (root / "truncated_header.tiff").write_bytes(good[:200])
    tifffile.imwrite(root / "ome4d.ome.tif", np.zeros((2, 3, 64, 64, 3), np.uint8), ome=True, photometric="rgb")
    tifffile.imwrite(root / "gray.tif", np.zeros((64, 96), np.uint8), tile=(16, 16))
    tifffile.imwrite(root / "rgb16.tif", np.zeros((64, 96, 3), np.uint16), tile=(16, 16), photometric="rgb")
    tifffile.imwrite(root / "unknown_codec.tif", np.zeros((64, 96, 3), np.uint8), tile=(16, 16),
                     photometric="rgb", metadata=None)
    with tifffile.TiffFile(root / "unknown_codec.tif", mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(65000)  # a code imagecodecs cannot decode
    return root


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing.svs", "no such file"),
        ("empty.svs", r"empty file \(0 bytes\)"),
        ("text.svs", "not a supported slide format.*supported: Aperio SVS"),
        ("truncated.tiff", "truncated"),
        ("truncated_header.tiff", "truncated or corrupt"),
        ("ome4d.ome.tif", "5-D image 2 x 3 x 64 x 64 x 3"),
        ("gray.tif", "not an RGB image"),
        ("rgb16.tif", "not an 8-bit RGB image"),
        ("unknown_codec.tif", "unsupported compression"),
    ],
)
def test_bad_input_gives_one_line_slide_error(bad_files, name, problem):
    path = bad_files / name
    with pytest.raises(SlideError, match=problem) as info:
        open_slide(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert isinstance(info.value, RegionalMilError)


def test_folder_and_bad_user_mpp(tmp_path, testslides_dir):
    with pytest.raises(SlideError, match="is a folder"):
        open_slide(tmp_path)
    for bad in (0, -1.0, float("nan"), "abc"):
        with pytest.raises(SlideError, match="mpp must be"):
            open_slide(testslides_dir / "small.svs", mpp=bad)


def test_info_to_dict_is_json(testslides_dir):
    import json

    with open_slide(testslides_dir / "CMU-1-Small-Region.svs") as slide:
        data = json.loads(json.dumps(slide.info.to_dict()))
    assert data["dimensions"] == [2220, 2967] and data["mpp_source"] == "slide"
    assert data["properties"]["tiffslide.vendor"] == "aperio"
