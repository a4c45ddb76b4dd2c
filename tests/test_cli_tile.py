"""``napari-regional-mil tile``: coordinates without embedding (TRIDENT coords h5, QuPath GeoJSON), read back."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from napari_regional_mil.annotations import read_annotations, regions_mask
from napari_regional_mil.cli import main
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tiling import TilingParams, tile_slide
from napari_regional_mil.tissue import detect_tissue

ARGS = ["--patch-size", "32", "--region-size", "4"]


def test_tile_writes_trident_coords_and_qupath_geojson(tmp_path, embed_slide_path, capsys):
    assert main(["tile", str(embed_slide_path), "--out", str(tmp_path / "out"), *ARGS]) == 0
    out = capsys.readouterr().out
    with open_slide(embed_slide_path) as slide:
        tiling = tile_slide(slide, detect_tissue(slide), TilingParams(patch_size=32, region_size=4))
    name = embed_slide_path.stem
    assert f"{name}: {tiling.n_patches} patches of 32 level-0 px in {tiling.n_regions} regions" in out
    with h5py.File(tmp_path / "out" / f"{name}_patches.h5", "r") as fh:
        coords = fh["coords"]
        np.testing.assert_array_equal(coords[:], tiling.coords_px)
        assert coords.dtype == np.int64 and coords.shape == (tiling.n_patches, 2)
        assert coords.attrs["patch_size"] == 32 and coords.attrs["patch_level"] == 0
        assert coords.attrs["patch_size_level0"] == 32 and coords.attrs["overlap"] == 0
        assert coords.attrs["level0_magnification"] == 20.0 and coords.attrs["target_magnification"] == 20.0
        assert coords.attrs["name"] == name
        np.testing.assert_array_equal(fh["grid_xy"][:], tiling.grid_xy)
        np.testing.assert_array_equal(fh["region_xy"][:][fh["region_index"][:]], tiling.grid_xy // 4)
    collection = json.loads((tmp_path / "out" / f"{name}_patches.geojson").read_text())
    kinds = [f["properties"]["classification"]["name"] for f in collection["features"]]
    assert kinds.count("Patch") == tiling.n_patches and kinds.count("Region") == tiling.n_regions
    assert all(f["properties"]["objectType"] == "tile" for f in collection["features"])
    # read back as annotations: the patch rectangles cover exactly the kept grid cells
    patches = [f for f in collection["features"] if f["properties"]["classification"]["name"] == "Patch"]
    (tmp_path / "patches.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": patches}))
    polygons = read_annotations(tmp_path / "patches.geojson", slide_dimensions=tiling.slide_dimensions)
    cells = regions_mask(polygons, tiling.grid_shape, (32.0, 32.0))
    np.testing.assert_array_equal(cells, ~np.isnan(tiling.patch_grid_image()))


def test_tile_with_exclusions_and_formats(tmp_path, embed_slide_path, capsys):
    pen = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [300, 0], [300, 416], [0, 416], [0, 0]]]}, "properties": {}}
    notes = tmp_path / "pen.geojson"
    notes.write_text(json.dumps({"type": "FeatureCollection", "features": [pen]}))
    assert main(["tile", str(embed_slide_path), "--out", str(tmp_path / "h5"), "--format", "h5", *ARGS,
                 "--annotations", str(notes), "--annotations-as", "exclude"]) == 0
    [written] = list((tmp_path / "h5").iterdir())
    with h5py.File(written, "r") as fh:
        assert (fh["coords"][:, 0] >= 300 - 32).all()  # nothing left of the pen mark (patches may straddle it)


def test_tile_bad_input_one_line_nothing_written(tmp_path, embed_slide_path, capsys):
    code = main(["tile", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o"), *ARGS])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == f"error: {tmp_path / 'missing.svs'}: no such file"
    assert not list((tmp_path / "o").iterdir())
    outside = tmp_path / "far.geojson"
    outside.write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[9000, 9000], [9100, 9000], [9100, 9100], [9000, 9000]]]}}]))
    code = main(["tile", str(embed_slide_path), "--out", str(tmp_path / "o"), *ARGS, "--annotations", str(outside)])
    err = capsys.readouterr().err
    assert code == 1 and "far.geojson: no annotation lies on the slide" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "o").iterdir())
    with pytest.raises(SystemExit):
        main(["tile", str(embed_slide_path)])  # --out is required
