"""Tissue with the pathologist's hand in it: detection options, mask files, QuPath annotations, the cache key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from napari_regional_mil.annotations import (
    apply_annotations,
    read_annotations,
    regions_mask,
)
from napari_regional_mil.cli import main
from napari_regional_mil.errors import TilingError
from napari_regional_mil.masks import load_mask, save_mask
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tissue import TissueMask, TissueOptions, detect_tissue
from napari_regional_mil.tissue_source import TissueSource


def _polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(rings: list, kind: str = "Polygon", name: str = "Tumor") -> dict:
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": rings},
            "properties": {"objectType": "annotation", "classification": {"name": name, "color": [255, 0, 0]}}}


def _write(path, features) -> object:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


# --- detection options -------------------------------------------------------------------------


def test_fixed_threshold_min_area_and_closing(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=32)
    with open_slide(path) as slide:
        low = detect_tissue(slide, TissueOptions(method="threshold-saturation", threshold=0.05, min_area_um2=0))
        high = detect_tissue(slide, TissueOptions(method="threshold-saturation", threshold=0.6, min_area_um2=0))
        od = detect_tissue(slide, TissueOptions(method="threshold-od", min_area_um2=0))
        small = detect_tissue(slide, min_area_um2=0, fill_holes=False, closing_um=0)
        large = detect_tissue(slide, min_area_um2=20_000, fill_holes=False, closing_um=0)
    assert low.method == "threshold-saturation" and low.threshold == 0.05 and high.threshold == 0.6
    assert od.threshold == 0.08 and od.tissue_fraction > 0.3  # the default fixed cut on optical density
    assert high.mask.sum() < 0.5 * low.mask.sum()  # a higher cut keeps less
    assert (low.mask | high.mask).sum() == low.mask.sum()  # ...and only less
    _, n_small = ndimage.label(small.mask)
    _, n_large = ndimage.label(large.mask)
    assert n_large < n_small  # pieces under 20,000 um^2 dropped (the 16 x 16 um island among them)
    assert not large.mask[:32, 10 * 32 :].any()


def test_closing_joins_nearby_tissue(synthetic_slide):
    types = np.full((6, 10), -1)
    types[1:5, 1:4] = 0
    types[1:5, 6:9] = 0  # two blocks 2 cells (32 um) apart
    with open_slide(synthetic_slide(types, patch_px=32)) as slide:
        apart = detect_tissue(slide, min_area_um2=0, closing_um=0)
        joined = detect_tissue(slide, min_area_um2=0, closing_um=40)
    assert ndimage.label(apart.mask)[1] == 2 and ndimage.label(joined.mask)[1] == 1


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"method": "magic"}, "tissue method must be one of otsu-saturation"),
    ({"threshold": -1}, "threshold must be a number >= 0"),
    ({"min_area_um2": -5}, "minimum tissue area"),
    ({"closing_um": float("nan")}, "closing size"),
])
def test_bad_options(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        TissueOptions(**kwargs)


# --- mask files --------------------------------------------------------------------------------


def test_mask_round_trip_and_checks(tmp_path):
    mask = np.zeros((30, 40), bool)
    mask[5:20, 8:30] = True
    path = save_mask(tmp_path / "m.png", mask, slide_dimensions=(4000, 3000), slide_name="s")
    loaded = load_mask(path, slide_dimensions=(4000, 3000))
    np.testing.assert_array_equal(loaded.mask, mask)
    assert loaded.downsample == (100.0, 100.0) and loaded.method == "user"
    with pytest.raises(TilingError, match=r"m.png: the mask was made for a 4000 x 3000 px slide, not this 4001"):
        load_mask(path, slide_dimensions=(4001, 3000))
    Image.fromarray(np.where(mask, 200, 0).astype(np.uint8)).save(tmp_path / "painted.png")  # painted elsewhere
    assert load_mask(tmp_path / "painted.png", slide_dimensions=(400, 300)).mask.sum() == mask.sum()
    with pytest.raises(TilingError, match=r"painted.png: the mask \(40 x 30 px\) does not have the slide's aspect"):
        load_mask(tmp_path / "painted.png", slide_dimensions=(400, 400))
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(TilingError, match=r"empty\.png: the mask marks no tissue"):
        load_mask(tmp_path / "empty.png", slide_dimensions=(400, 300))
    (tmp_path / "text.png").write_text("no")
    with pytest.raises(TilingError, match=r"text\.png: not a readable mask image"):
        load_mask(tmp_path / "text.png", slide_dimensions=(400, 300))
    with pytest.raises(TilingError, match=r"missing\.png: no such tissue mask file"):
        load_mask(tmp_path / "missing.png", slide_dimensions=(400, 300))


# --- QuPath annotations ------------------------------------------------------------------------


def test_annotations_rasterise_with_holes_and_multipolygons(tmp_path):
    outer = _polygon(100, 100, 500, 300)
    hole = _polygon(200, 150, 300, 250)
    path = _write(tmp_path / "a.geojson", [
        _feature([outer, hole]),
        _feature([[_polygon(600, 50, 700, 150)], [_polygon(600, 350, 650, 390)]], kind="MultiPolygon", name="Pen"),
    ])
    regions = read_annotations(path, slide_dimensions=(800, 400))
    assert [r.name for r in regions] == ["Tumor", "Pen", "Pen"] and len(regions[0].holes) == 1
    raster = regions_mask(regions, (40, 80), (10.0, 10.0))  # one mask pixel = 10 level-0 px
    assert raster[10:30, 10:50].sum() == 20 * 40 - 10 * 10  # the rectangle less its hole
    assert not raster[15:25, 20:30].any() and raster[5:15, 60:70].all() and raster[35:39, 60:65].all()
    tissue = TissueMask(np.ones((40, 80), bool), (10.0, 10.0))
    inside = apply_annotations(tissue, regions, mode="include")
    outside = apply_annotations(tissue, regions, mode="exclude")
    np.testing.assert_array_equal(inside.mask, raster)
    np.testing.assert_array_equal(outside.mask, ~raster)
    assert inside.method.endswith("annotations-include")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", r"not JSON \(line 1"),
        (
            {"type": "FeatureCollection", "features": [_feature([[0, 0], [5, 5]], kind="LineString")]},
            r"feature 0 is a LineString, not a polygon; only Polygon and MultiPolygon",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}],
            },
            r"feature 0 is a Point, not a polygon",
        ),
        ({"type": "FeatureCollection", "features": []}, r"holds no polygon annotations"),
        (
            {"type": "FeatureCollection", "features": [_feature([_polygon(5000, 5000, 6000, 6000)])]},
            r"no annotation lies on the slide \(800 x 400 px; the annotations span x 5000..6000",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature([[[0, 0], [1, 1]]])]},
            r"feature 0 has a polygon ring that is not",
        ),
        ({"hello": 1}, r"not a GeoJSON FeatureCollection"),
    ],
)
def test_bad_annotation_files_one_line(tmp_path, content, problem):
    path = tmp_path / "bad.geojson"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(TilingError, match=problem) as err:
        read_annotations(path, slide_dimensions=(800, 400))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# --- where the mask comes from, and the cache key ----------------------------------------------


def test_tissue_source_per_slide_files(tmp_path, synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24)  # 264 x 168 px
    with open_slide(path) as slide:
        detected = detect_tissue(slide)
        folder = tmp_path / "masks"
        folder.mkdir()
        painted = detected.mask.copy()
        painted[:, : painted.shape[1] // 2] = False
        save_mask(folder / f"{path.stem}.png", painted, slide_dimensions=(264, 168))
        notes = tmp_path / "notes"
        notes.mkdir()
        _write(notes / f"{path.stem}.geojson", [_feature([_polygon(0, 0, 264, 84)])])  # the top half
        assert TissueSource().is_default and not TissueSource(TissueOptions(closing_um=4)).is_default
        from_mask = TissueSource(mask=folder).resolve(slide)
        np.testing.assert_array_equal(from_mask.mask, painted)
        both = TissueSource(mask=folder, annotations=notes, annotations_as="exclude").resolve(slide)
        rows = both.mask.shape[0]
        assert not both.mask[: rows // 2 - 1].any() and both.mask[rows // 2 + 1 :].sum() > 0
        with pytest.raises(TilingError, match=rf"notes: no tissue mask file for slide {path.stem}"):
            TissueSource(mask=notes).resolve(slide)
        with pytest.raises(TilingError, match="no tissue lies inside the included annotations"):
            _write(tmp_path / "glass.geojson", [_feature([_polygon(0, 0, 20, 20)])])
            TissueSource(annotations=tmp_path / "glass.geojson").resolve(slide)


def test_embed_with_mask_and_annotations_cli(tmp_path, embed_slide_path, capsys):
    args = ["embed", str(embed_slide_path), "--patch-size", "32", "--region-size", "4", "--batch-size", "16"]
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    assert main([*args, "--out", str(tmp_path / "pen"), "--annotations", str(_write(
        tmp_path / "pen.geojson", [_feature([_polygon(60, 30, 300, 200)], name="Pen")])), "--annotations-as",
        "exclude"]) == 0
    out = capsys.readouterr().out
    default = next((tmp_path / "default").glob("*.zarr"))
    pen = next((tmp_path / "pen").glob("*.zarr"))
    assert default.name != pen.name  # the mask used is part of the key
    from napari_regional_mil.embedding import load_slide_embeddings

    a, b = load_slide_embeddings(default), load_slide_embeddings(pen)
    assert b.n_patches < a.n_patches and f"{b.n_patches} patches" in out
    xy = b.coords_px + 16  # patch centres: none inside the excluded rectangle
    assert not ((xy[:, 0] > 60) & (xy[:, 0] < 300) & (xy[:, 1] > 30) & (xy[:, 1] < 200)).any()
    attrs = json.loads((pen / "zarr.json").read_text())["attributes"]
    assert attrs["tissue_source"]["annotations_as"] == "exclude" and attrs["user_tissue_mask"] is True
    # the same flags again: the same cache, found (nothing computed)
    assert main([*args, "--out", str(tmp_path / "pen"), "--annotations", str(tmp_path / "pen.geojson"),
                 "--annotations-as", "exclude"]) == 0
    assert "already cached" in capsys.readouterr().out


def test_embed_refuses_bad_annotations_and_caches_nothing(tmp_path, embed_slide_path, capsys):
    bad = tmp_path / "lines.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature([[0, 0], [50, 50]], kind="LineString")]}))
    code = main(["embed", str(embed_slide_path), "--out", str(tmp_path / "c"), "--annotations", str(bad),
                 "--patch-size", "32", "--region-size", "4"])
    err = capsys.readouterr().err
    assert code != 0 and f"error: {bad}: feature 0 is a LineString" in err and "Traceback" not in err
    assert not list((tmp_path / "c").glob("*.zarr*")) if (tmp_path / "c").exists() else True
    code = main(["embed", str(embed_slide_path), "--out", str(tmp_path / "c"), "--tissue-mask",
                 str(tmp_path / "nope.png"), "--patch-size", "32", "--region-size", "4"])
    assert code != 0 and "nope.png: no such tissue mask file" in capsys.readouterr().err
