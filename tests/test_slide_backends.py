"""Reader backends behind one interface: tiffslide, OpenSlide, wsidicom; the one suffix list.

Every backend is tested on slides written here (a synthetic pyramid as generic TIFF,
as a Ventana BIF and as a DICOM WSI folder) and on the shared test slides when present.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from napari_regional_mil.errors import SlideError
from napari_regional_mil.slide import formats, open_slide
from napari_regional_mil.synth.dicom_wsi import halved_pyramid, write_dicom_wsi
from napari_regional_mil.synth.slides import render_patch_types

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def level0(odd_patch_types) -> np.ndarray:
    """Level 0 of the odd-sized synthetic slide (168 x 264 px), rendered in memory."""
    rows, cols = odd_patch_types.shape
    return render_patch_types(odd_patch_types, (0, 0, cols * 24, rows * 24), patch_px=24)


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory, level0) -> Path:
    """The synthetic pyramid as a DICOM WSI folder (one JPEG TILED_FULL instance per level)."""
    return write_dicom_wsi(tmp_path_factory.mktemp("dicom") / "slide", halved_pyramid(level0), mpp=0.5, tile=64)


def write_bif(path: Path, image: np.ndarray, *, mpp: float = 0.25) -> Path:
    """A small Ventana BIF: iScan XMP on a label page, level pages with tile-joint metadata."""
    h, w = image.shape[:2]
    rows, cols = -(-h // 128), -(-w // 128)
    iscan = f'<?xml version="1.0"?><iScan Z-layers="1" Magnification="40" ScanRes="{mpp}"></iScan>'.encode()
    assert rows >= 2 and cols >= 2, "OpenSlide needs a horizontal and a vertical tile joint"
    joint = (
        '<TileJointInfo FlagJoined="1" Direction="{}" Tile1="1" Tile2="{}" OverlapX="0" OverlapY="0" Confidence="100"/>'
    )
    joints = joint.format("RIGHT", 2) + joint.format("UP", 2 * cols)  # tiles numbered serpentine from the bottom
    encode = (f'<?xml version="1.0"?><EncodeInfo Ver="2"><SlideStitchInfo><ImageInfo AOIScanned="1" AOIIndex="0" '
              f'Width="128" Height="128" NumRows="{rows}" NumCols="{cols}" Pos-X="0" Pos-Y="0">{joints}</ImageInfo>'
              '</SlideStitchInfo><AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin></EncodeInfo>').encode()
    common = {"photometric": "rgb", "metadata": None, "software": "ScanOutputManager 1.1"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(image[:48, :64], description="Label_Image", extratags=[(700, "B", len(iscan), iscan, True)],
                  **common)
        tif.write(image, tile=(128, 128), compression="jpeg", compressionargs={"level": 95},
                  description="level=0 mag=40 quality=95", extratags=[(700, "B", len(encode), encode, True)], **common)
        tif.write(np.ascontiguousarray(image[::2, ::2]), tile=(128, 128), compression="jpeg",
                  compressionargs={"level": 95}, description="level=1 mag=20 quality=95", **common)
    return path


# --- the one suffix list ------------------------------------------------------------------------


def test_manifest_reader_patterns_are_the_one_list():
    manifest = yaml.safe_load((REPO / "napari.yaml").read_text())
    [reader] = manifest["contributions"]["readers"]
    assert reader["filename_patterns"] == formats.reader_patterns()
    assert reader["accepts_directories"] is True  # a DICOM folder is one slide
    assert {".mrxs", ".bif", ".dcm", ".svs", ".ndpi", ".vms"} <= set(formats.SLIDE_SUFFIXES)


def test_dialogs_and_tables_use_the_one_list():
    from napari_regional_mil.pretrain import sampling
    from napari_regional_mil.training import cohort_table

    assert cohort_table.SLIDE_SUFFIXES == formats.SLIDE_SUFFIXES
    assert sampling.SLIDE_SUFFIXES == formats.SLIDE_SUFFIXES
    assert formats.dialog_filter().startswith("Slides (*.svs *.tif ") and "*.mrxs" in formats.dialog_filter()
    assert "*.dcm" in formats.dialog_filter()


def test_slide_names_and_folder_listing(tmp_path, dicom_folder):
    assert formats.slide_name("/x/CMU-1.SVS") == "CMU-1"
    assert formats.slide_name("a/b.ome.tiff") == "b"
    assert formats.slide_name(str(dicom_folder) + "/") == "slide"
    assert formats.slide_name("synth_000") == "synth_000"
    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "b.MRXS").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.svs").write_bytes(b"x")
    shutil.copytree(dicom_folder, tmp_path / "dicom_slide")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.ndpi").write_bytes(b"x")
    assert [p.name for p in formats.find_slides(tmp_path)] == ["a.svs", "b.MRXS", "dicom_slide"]
    assert [p.name for p in formats.find_slides(tmp_path, recursive=True)] == ["a.svs", "b.MRXS", "dicom_slide",
                                                                               "c.ndpi"]
    assert formats.find_slides(tmp_path / "dicom_slide") == [tmp_path / "dicom_slide"]


# --- the same contract from every backend --------------------------------------------------------


def test_openslide_and_tiffslide_agree_on_the_synthetic_pyramid(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24)
    with open_slide(path) as ts, open_slide(path, backend="openslide") as osl:
        assert ts.info.backend == "tiffslide" and osl.info.backend == "openslide"
        assert ts.info.dimensions == osl.info.dimensions == (264, 168)
        assert ts.info.mpp == osl.info.mpp == (0.5, 0.5)
        assert osl.info.vendor is None  # generic TIFF, as with tiffslide
        # OpenSlide reads only the first IFD (no SubIFDs): the display pyramid is halved lazily
        assert osl.info.level_count == 1 and [p.shape for p in osl.display_pyramid()] == [(168, 264, 3)]
        a = ts.display_pyramid()[0][30:97, 41:150].compute()
        b = osl.display_pyramid()[0][30:97, 41:150].compute()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ts.read_region((41, 30), 0, (109, 67)), osl.read_region((41, 30), 0, (109, 67)))


def test_openslide_on_shared_svs(testslides_dir):
    with open_slide(testslides_dir / "CMU-1-Small-Region.svs", backend="openslide") as osl, \
            open_slide(testslides_dir / "CMU-1-Small-Region.svs") as ts:
        info = osl.info
        assert info.backend == "openslide" and info.vendor == "aperio"
        assert info.dimensions == (2220, 2967) and info.mpp == pytest.approx((0.499, 0.499))
        assert info.objective_power == 20 and info.tile_size == (240, 240)
        assert set(info.associated_images) == {"thumbnail", "label", "macro"}
        assert osl.associated_image("label").shape == ts.associated_image("label").shape
        pyramid = osl.display_pyramid()
        assert pyramid[0].chunksize == (240, 240, 3) and len(pyramid) == 3
        np.testing.assert_array_equal(pyramid[0][1500:1523, 1000:1037].compute(),
                                      ts.read_region((1000, 1500), 0, (37, 23)))
        assert "openslide.vendor" in info.properties


def test_openslide_cannot_read_strips_says_so(testslides_dir):
    with pytest.raises(SlideError, match=r"kidney-48-5.tif: OpenSlide does not read this file"):
        open_slide(testslides_dir / "kidney-48-5.tif", backend="openslide")


def test_ventana_bif_goes_to_openslide_by_content(tmp_path, level0):
    image = np.ascontiguousarray(np.pad(level0, ((0, 256 - 168), (0, 384 - 264), (0, 0)), constant_values=240))
    path = write_bif(tmp_path / "slide.tif", image)  # a .tif suffix: the content decides
    with open_slide(path) as slide:
        info = slide.info
        assert info.backend == "openslide" and info.vendor == "ventana"
        assert info.level_dimensions == ((384, 256), (192, 128))
        assert info.mpp == (0.25, 0.25) and info.objective_power == 40
        assert info.associated_images == ("macro",)
        region = slide.read_region((10, 20), 0, (200, 100)).astype(int)
        assert np.abs(region - image[20:120, 10:210]).mean() < 3  # JPEG q95
    with open_slide(path, backend="tiffslide") as slide:
        assert slide.info.backend == "tiffslide" and slide.info.level_dimensions[0] == (384, 256)


def test_dicom_folder_and_file(dicom_folder, level0):
    with open_slide(dicom_folder) as slide:
        info = slide.info
        assert info.backend == "wsidicom" and info.vendor == "dicom"
        assert info.level_dimensions == ((264, 168), (132, 84), (66, 42))
        assert info.level_downsamples == (1.0, 2.0, 4.0)
        assert info.mpp == (0.5, 0.5) and info.mpp_source == "slide" and info.tile_size == (64, 64)
        assert info.properties["dicom.manufacturer"] == "napari-regional-mil synth"
        pyramid = slide.display_pyramid()
        assert [p.shape for p in pyramid] == [(168, 264, 3), (84, 132, 3), (42, 66, 3)]
        assert pyramid[0].chunksize == (64, 64, 3)
        full = pyramid[0].compute().astype(int)
        assert np.abs(full - level0).mean() < 3  # JPEG q95 of the same pixels
        np.testing.assert_array_equal(slide.read_region((24, 48), 1, (37, 23)), pyramid[1][24:47, 12:49].compute())
        # a region reaching past the level's edge is padded with white, not an error
        edge = slide.read_region((240, 150), 0, (40, 30))
        assert edge.shape == (30, 40, 3) and (edge[20:, :] == 255).all()
    with open_slide(dicom_folder / "level_0.dcm") as one:
        assert one.info.backend == "wsidicom" and one.info.level_dimensions == ((264, 168),)


def test_dicom_reads_are_thread_safe(dicom_folder):
    with open_slide(dicom_folder) as slide:
        expected = {i: slide.read_region((i * 9, i * 5), 0, (70, 50)) for i in range(6)}
        results: dict[int, list[np.ndarray]] = {i: [] for i in range(6)}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for _ in range(4):
                    results[i].append(slide.read_region((i * 9, i * 5), 0, (70, 50)))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for i in range(6):
            for got in results[i]:
                np.testing.assert_array_equal(got, expected[i])


# --- bad input: one line naming the file and the problem ---------------------------------------


def test_dicom_folder_missing_a_concatenation_part(tmp_path, dicom_folder):
    import pydicom
    from wsidicom import ConcatenationByFrames, WsiDicom

    out = tmp_path / "concatenated"
    with WsiDicom.open(dicom_folder) as wsi:
        wsi.save(out, concatenation=ConcatenationByFrames(4))
    with open_slide(out) as slide:  # complete: opens
        assert slide.info.level_count == 3
    parts = [p for p in out.iterdir()
             if pydicom.dcmread(p, stop_before_pixels=True).get("InConcatenationNumber") == 2
             and pydicom.dcmread(p, stop_before_pixels=True).TotalPixelMatrixColumns == 264]
    parts[0].unlink()
    with pytest.raises(SlideError, match=r"missing an instance: level 0 holds 11 of its 15 frames") as err:
        open_slide(out)
    assert str(err.value).startswith(str(out)) and "\n" not in str(err.value)


def test_dicom_folder_missing_its_full_resolution_instance(tmp_path, dicom_folder):
    folder = shutil.copytree(dicom_folder, tmp_path / "no_base")
    (folder / "level_0.dcm").unlink()
    with pytest.raises(SlideError, match=r"no_base: DICOM WSI is missing an instance: its largest level is a "
                                         r"resampled one \(132 x 84 px\)"):
        open_slide(folder)


def test_truncated_bif(tmp_path, level0):
    path = write_bif(tmp_path / "slide.bif", np.ascontiguousarray(level0[:, :256]))
    data = path.read_bytes()
    (tmp_path / "cut.bif").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SlideError, match=r"cut.bif: file is truncated \(image data run to byte"):
        open_slide(tmp_path / "cut.bif")


def test_mirax_without_its_data_folder(tmp_path):
    mrxs = tmp_path / "scan.mrxs"
    mrxs.write_text("[GENERAL]\nSLIDE_VERSION=01.03\n")
    with pytest.raises(SlideError, match=r"scan.mrxs: MIRAX slide without its data folder \(scan/ must sit beside"):
        open_slide(mrxs)
    (tmp_path / "scan").mkdir()
    (tmp_path / "scan" / "Slidedat.ini").write_text("[GENERAL]\n")
    with pytest.raises(SlideError, match=r"scan: is the data folder of a MIRAX slide; open the .mrxs file"):
        open_slide(tmp_path / "scan")
    with pytest.raises(SlideError, match=r"scan.mrxs: ") as err:  # OpenSlide's own reason, one line
        open_slide(mrxs)
    assert "\n" not in str(err.value)


def test_unsupported_format_lists_the_supported_ones(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with pytest.raises(SlideError, match=r"photo.jpg: not a supported slide format .*supported: Aperio SVS \(.svs\);"
                                         r".*MIRAX.*DICOM WSI"):
        open_slide(tmp_path / "photo.jpg")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(SlideError, match=r"empty_folder: is a folder, not a slide file .*no DICOM files"):
        open_slide(tmp_path / "empty_folder")
    with pytest.raises(SlideError, match=r"unknown slide backend 'bioformats'; choose one of tiffslide, openslide"):
        open_slide(tmp_path / "photo.jpg", backend="bioformats")


# --- library warnings become one-line warnings -----------------------------------------------


def test_hamamatsu_warning_becomes_one_line(tmp_path, level0, recwarn, capfd):
    path = tmp_path / "scan.tif"  # (tifffile reads a .ndpi name as NDPI's 64-bit-offset variant)
    tifffile.imwrite(path, level0, tile=(64, 64), photometric="rgb", compression="jpeg", metadata=None,
                     extratags=[(65420, 4, 1, 1, True), (271, "s", 0, "Hamamatsu", True)])  # NDPI's marker tags
    with open_slide(path, mpp=0.5) as slide:
        assert slide.info.vendor == "hamamatsu"
        assert "scan.tif: tiffslide: hamamatsu-format metadata parsing only partially implemented!" in (
            slide.info.warnings)
        slide.read_region((0, 0), 0, (10, 10))  # per-thread handles do not repeat it either
    assert not [w for w in recwarn if "hamamatsu" in str(w.message)]
    assert "hamamatsu" not in capfd.readouterr().err


# --- damaged tiles are contained ---------------------------------------------------------------


def _damage_tile(src: Path, dst: Path, index: int) -> tuple[int, int]:
    """Copy ``src`` to ``dst`` with level-0 tile ``index``'s bytes replaced by garbage; its (row, col)."""
    shutil.copyfile(src, dst)
    with tifffile.TiffFile(dst) as tif:
        page = tif.pages[0]
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        across = -(-page.imagewidth // page.tilewidth)
        tile = (index // across * page.tilelength, index % across * page.tilewidth)
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes([0xFF, 0xD8]) + bytes((7 * i) % 256 for i in range(count - 2)))  # a JPEG start, then noise
    return tile


def test_damaged_tile_is_flat_grey_counted_and_announced_once(tmp_path, synthetic_slide, odd_patch_types):
    from napari_regional_mil.slide import damage

    good = synthetic_slide(odd_patch_types, patch_px=24)
    y, x = _damage_tile(good, tmp_path / "damaged.tiff", 6)  # level 0: 5 x 3 tiles of 64 px
    notices: list[damage.DamageNotice] = []
    damage.add_listener(notices.append)
    try:
        with open_slide(good) as ref, open_slide(tmp_path / "damaged.tiff") as slide:
            level = slide.display_pyramid()[0]
            full = level.compute()  # no exception reaches the caller (napari's renderer)
            again = level[y : y + 10, x : x + 10].compute()
            assert (full[y : y + 64, x : x + 64] == damage.GREY).all() and (again == damage.GREY).all()
            rest = np.ones(full.shape[:2], bool)
            rest[y : y + 64, x : x + 64] = False
            np.testing.assert_array_equal(full[rest], ref.display_pyramid()[0].compute()[rest])
            assert slide.damage.counts == {0: 1} and slide.damage.total == 1
            # the halved levels read through the guarded level 0: no error there either
            assert slide.display_pyramid()[1].compute().shape == (84, 132, 3)
            with pytest.raises(SlideError, match=rf"damaged.tiff: cannot read region at \({x + 6}, {y + 6}\)"):
                slide.read_region((x + 6, y + 6), 0, (20, 20))  # patch reads report the damage
    finally:
        damage.remove_listener(notices.append)
    assert len(notices) == 1 and notices[0].level == 0
    assert notices[0].message.startswith(
        f"{tmp_path / 'damaged.tiff'}: damaged tiles at level 0 are shown as flat grey"
    )


def test_damaged_tile_without_listener_is_a_warning(tmp_path, synthetic_slide, odd_patch_types, monkeypatch):
    from napari_regional_mil.slide import damage

    monkeypatch.setattr(damage, "_LISTENERS", [])  # the reader's listener, added by earlier tests, is not here

    _damage_tile(synthetic_slide(odd_patch_types, patch_px=24), tmp_path / "damaged.tiff", 0)
    with (open_slide(tmp_path / "damaged.tiff", check_pixels=False) as slide,
          pytest.warns(damage.DamagedTileWarning, match="damaged.tiff: damaged tiles at level 0")):
        slide.display_pyramid()[0][:10, :10].compute()


def test_a_read_across_tiles_greys_only_the_damaged_tile(tmp_path, synthetic_slide, odd_patch_types, monkeypatch):
    """A read spanning several tiles (a fused dask slice, a band of strips) is narrowed down to the damaged tile."""
    from napari_regional_mil.slide import damage

    monkeypatch.setattr(damage, "_LISTENERS", [])  # without listeners a damaged tile is a warning
    from napari_regional_mil.slide.pyramid import GuardedLevel

    good = synthetic_slide(odd_patch_types, patch_px=24)
    y, x = _damage_tile(good, tmp_path / "damaged.tiff", 7)
    with open_slide(good) as ref, open_slide(tmp_path / "damaged.tiff", check_pixels=False) as slide:
        log = damage.DamageLog(slide.path)
        level = GuardedLevel(slide.backend._arrays[0], 0, log, (64, 64))
        with pytest.warns(damage.DamagedTileWarning):
            block = level[30:150, 20:250]
        expected = ref.display_pyramid()[0][30:150, 20:250].compute()
        inside = np.zeros(block.shape[:2], bool)
        inside[max(0, y - 30) : y + 64 - 30, x - 20 : x + 64 - 20] = True
        assert (block[inside] == damage.GREY).all()
        np.testing.assert_array_equal(block[~inside], expected[~inside])
        assert log.counts == {0: 1}


def test_display_chunks_are_tiles_grouped_only_on_huge_levels():
    from napari_regional_mil.slide.pyramid import display_chunks

    assert display_chunks((240, 240), (2967, 2220, 3)) == (240, 240)  # 130 chunks: the tiles
    assert display_chunks((256, 256), (15000, 15000, 3)) == (256, 256)  # 3,481 chunks: the tiles
    assert display_chunks((256, 256), (60000, 60000, 3)) == (1024, 1024)  # 55,225 tiles: 4 x 4 per chunk
    assert display_chunks((256, 256), (200000, 100000, 3)) == (1024, 1024)  # never more than 4 x 4
    assert display_chunks((16, 1493), (901, 1493, 3)) == (16, 1493)  # strips
