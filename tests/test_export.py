"""Exports: QuPath GeoJSON, heatmap TIFF, per-patch CSV (read back and checked)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import tifffile

from napari_regional_mil.export import (
    ExportError,
    export_csv,
    export_geojson,
    export_heatmap_tiff,
)
from napari_regional_mil.heatmap import AttentionMaps

N_ROWS, N_COLS, K, S = 7, 11, 3, 37.5  # the grid of the ``attention_case`` fixture


@pytest.fixture
def make_case(attention_case):
    assert attention_case.grid == (N_ROWS, N_COLS, K, S)
    return attention_case


@pytest.fixture
def maps(make_case):
    emb, pred = make_case(seed=1)
    return AttentionMaps.from_prediction(emb, pred)


def _bounds(feature):
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert feature["geometry"]["type"] == "Polygon" and len(ring) == 5
    assert np.array_equal(ring[0], ring[-1])  # closed ring
    return ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()


def test_geojson_round_trip(tmp_path, maps):
    emb, pred = maps.embeddings, maps.prediction
    path = export_geojson(tmp_path / "case.geojson", maps)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    feats = data["features"]
    patches = [f for f in feats if f["properties"]["classification"]["name"] == "Patch"]
    regions = [f for f in feats if f["properties"]["classification"]["name"] == "Region"]
    assert len(patches) == emb.n_patches and len(regions) == emb.n_regions
    for i in (0, emb.n_patches // 2, emb.n_patches - 1):
        f = patches[i]
        props = f["properties"]
        assert props["objectType"] == "tile" and props["isLocked"] is True
        x, y = emb.coords_px[i]
        assert _bounds(f) == pytest.approx((x, y, x + S, y + S))
        m = props["measurements"]
        assert m["attention"] == pytest.approx(pred.patch_attention[i])
        assert m["region_attention"] == pytest.approx(pred.region_attention[emb.region_index[i]])
        assert m["prob_positive"] == pytest.approx(0.7) and m["prob_negative"] == pytest.approx(0.3)
        assert m["tissue_fraction"] == pytest.approx(emb.tissue_fraction[i])
        assert m["evidence_positive"] == pytest.approx(pred.class_evidence[i, 1])
    for r, f in enumerate(regions):
        rx, ry = emb.region_xy[r]
        x1 = min((rx + 1) * K, N_COLS) * S
        y1 = min((ry + 1) * K, N_ROWS) * S
        assert _bounds(f) == pytest.approx((round(rx * K * S), round(ry * K * S), round(x1), round(y1)))
        m = f["properties"]["measurements"]
        assert m["region_attention"] == pytest.approx(pred.region_attention[r])
        members = emb.region_index == r
        assert m["attention"] == pytest.approx(pred.patch_attention[members].sum())
        assert m["n_patches"] == members.sum()
    # every patch lies inside its region's rectangle
    for i in range(emb.n_patches):
        px0, py0, px1, py1 = _bounds(patches[i])
        rx0, ry0, rx1, ry1 = _bounds(regions[emb.region_index[i]])
        assert rx0 <= px0 and ry0 <= py0 and px1 <= rx1 + 1 and py1 <= ry1 + 1


def test_geojson_omits_missing_values_and_is_strict_json(tmp_path, make_case):
    emb, pred = make_case(seed=2, evidence=False, regional=False)
    maps = AttentionMaps.from_prediction(emb, pred)
    path = export_geojson(tmp_path / "a.geojson", maps)
    text = path.read_text()
    assert "NaN" not in text
    feats = json.loads(text)["features"]
    assert all("region_attention" not in f["properties"]["measurements"] for f in feats)
    assert all("evidence_positive" not in f["properties"]["measurements"] for f in feats)


def test_csv_round_trip(tmp_path, maps):
    emb, pred = maps.embeddings, maps.prediction
    path = export_csv(tmp_path / "scores.csv", maps)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == emb.n_patches
    assert list(rows[0])[:6] == ["patch", "x", "y", "grid_x", "grid_y", "region"]
    for i in (0, 7, emb.n_patches - 1):
        row = rows[i]
        assert int(row["patch"]) == i
        assert (int(row["x"]), int(row["y"])) == tuple(emb.coords_px[i])
        assert (int(row["grid_x"]), int(row["grid_y"])) == tuple(emb.grid_xy[i])
        assert int(row["region"]) == emb.region_index[i]
        assert float(row["attention"]) == pred.patch_attention[i]  # repr: exact round trip
        assert float(row["region_attention"]) == pytest.approx(pred.region_attention[emb.region_index[i]])
        assert float(row["tissue_fraction"]) == pytest.approx(emb.tissue_fraction[i])
        assert float(row["prob_positive"]) == pytest.approx(0.7)
        assert float(row["evidence_negative"]) == pytest.approx(pred.class_evidence[i, 0])


def test_heatmap_tiff_is_calibrated_patch_grid_stack(tmp_path, maps):
    path = export_heatmap_tiff(tmp_path / "heat.tif", maps, normalisation="rank")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        data = tif.asarray()
        labels = tif.imagej_metadata["Labels"]
        page = tif.pages[0]
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
    assert data.shape == (4, N_ROWS, N_COLS) and data.dtype == np.float32
    assert labels == ["attention", "region_attention", "evidence_negative", "evidence_positive"]
    assert np.array_equal(data[0], maps.patch_image("rank"), equal_nan=True)
    # region channel: each patch carries its region's (normalised) value
    reg = maps.region_image("rank")
    gx, gy = maps.embeddings.grid_xy[5]
    assert data[1, gy, gx] == pytest.approx(reg[gy // K, gx // K])
    assert np.array_equal(np.isnan(data[1]), np.isnan(data[0]))
    um_per_px = maps.patch.scale[1]
    assert xres[1] / xres[0] == pytest.approx(um_per_px, rel=1e-5)
    assert yres[1] / yres[0] == pytest.approx(maps.patch.scale[0], rel=1e-5)


def test_failed_export_leaves_nothing(tmp_path, maps, monkeypatch):
    with pytest.raises(ExportError, match="does not exist"):
        export_csv(tmp_path / "missing" / "x.csv", maps)
    target = tmp_path / "out.geojson"
    target.write_text("old")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    for export in (export_geojson, export_csv, export_heatmap_tiff):
        with pytest.raises(ExportError, match=r"out\.geojson: cannot write"):
            export(target, maps)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.geojson"]  # no temp file left
