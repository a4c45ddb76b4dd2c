"""The napari reader and sample-data contributions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil import _sample_data
from napari_regional_mil._reader import napari_get_reader


def test_manifest_commands_resolve():
    from npe2 import PluginManager
    from npe2.manifest.utils import import_python_name

    from napari_regional_mil import _reader

    pm = PluginManager.instance()
    pm.discover()
    for key, expected in [
        ("napari-regional-mil.get_reader", _reader.napari_get_reader),
        ("napari-regional-mil.sample_slide", _sample_data.make_sample_slide),
    ]:
        assert import_python_name(pm.get_command(key).python_name) is expected
    [reader] = list(pm.get_manifest("napari-regional-mil").contributions.readers)
    assert "*.svs" in reader.filename_patterns and "*.tif" in reader.filename_patterns


def test_reader_gives_multiscale_layer_data(synthetic_slide, odd_patch_types):
    path = synthetic_slide(odd_patch_types, patch_px=24, mpp=0.5)
    reader = napari_get_reader(str(path))
    assert callable(reader)
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"]
    assert kwargs["contrast_limits"] == (0, 255) and kwargs["scale"] == (0.5, 0.5)
    assert [d.shape for d in data] == [(168, 264, 3), (84, 132, 3), (42, 66, 3)]
    assert kwargs["metadata"]["slide_path"] == str(path) and kwargs["metadata"]["mpp"] == (0.5, 0.5)
    assert kwargs["metadata"]["slide_info"]["level_dimensions"] == [[264, 168], [132, 84], [66, 42]]


def test_reader_returns_none_for_what_it_cannot_open(tmp_path):
    (tmp_path / "text.svs").write_text("not a slide")
    assert napari_get_reader(str(tmp_path / "text.svs")) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None
    assert napari_get_reader([]) is None


def test_reader_warns_without_mpp(testslides_dir):
    reader = napari_get_reader(str(testslides_dir / "kidney-48-5.tif"))
    with pytest.warns(UserWarning, match="kidney-48-5.tif.*mpp"):
        [(data, kwargs, _)] = reader(str(testslides_dir / "kidney-48-5.tif"))
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["metadata"]["mpp"] is None
    assert any("mpp" in w for w in kwargs["metadata"]["warnings"])
    assert [d.shape[:2] for d in data] == [(901, 1493), (450, 746)]


@pytest.mark.gui
def test_viewer_open_cmu1(make_napari_viewer, testslides_dir):
    viewer = make_napari_viewer()
    [layer] = viewer.open(testslides_dir / "CMU-1-Small-Region.svs", plugin="napari-regional-mil")
    assert layer.multiscale and layer.rgb and len(layer.data) == 3
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert layer.data[0].chunksize == (240, 240, 3)
    assert tuple(layer.contrast_limits) == (0, 255)
    assert layer.name == "CMU-1-Small-Region"
    assert layer.metadata["slide_info"]["vendor"] == "aperio"
    assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")
    # 2967 x 2220 px at 0.499 um/px; napari's world extent spans pixel centres
    np.testing.assert_allclose(layer.extent.world[1] - layer.extent.world[0], np.array([2966, 2219]) * 0.499)


@pytest.mark.gui
def test_viewer_open_boxes_multiscale(make_napari_viewer, testslides_dir):
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="352.78"):
        [layer] = viewer.open(testslides_dir / "boxes.tiff", plugin="napari-regional-mil")
    assert layer.multiscale and len(layer.data) == 4
    assert tuple(layer.scale) == (1.0, 1.0)
    assert [d.chunksize[:2] for d in layer.data][:2] == [(64, 64), (64, 64)]


def test_sample_slide(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_REGIONAL_MIL_CACHE", str(tmp_path))
    monkeypatch.setattr(_sample_data, "_SHAPE", (21, 27))  # a small one for the test
    [(data, kwargs, kind)] = _sample_data.make_sample_slide()
    assert kind == "image" and kwargs["multiscale"] and kwargs["scale"] == (0.5, 0.5)
    assert data[0].shape == (21 * 32, 27 * 32, 3) and data[0].chunksize == (256, 256, 3)
    path = _sample_data.sample_slide_path()
    assert path.parent == tmp_path and path.exists()
    mtime = path.stat().st_mtime_ns
    again = _sample_data.make_sample_slide()
    assert path.stat().st_mtime_ns == mtime  # cached, not rewritten
    top = np.asarray(again[0][0][-1])
    assert top.min() < 200 and np.median(top) > 200  # tissue on white glass


@pytest.mark.gui
def test_damaged_tiles_become_one_napari_warning(make_napari_viewer, shown_notes, tmp_path, synthetic_slide,
                                                 odd_patch_types):
    from test_slide_backends import _damage_tile

    path = tmp_path / "damaged.tiff"
    _damage_tile(synthetic_slide(odd_patch_types, patch_px=24), path, 6)
    viewer = make_napari_viewer()
    [layer] = viewer.open(path, plugin="napari-regional-mil")
    for _ in range(2):  # the renderer reads the damaged tile twice: still one notification
        assert (layer.data[0][64:128, 64:128].compute() == 128).all()
    layer.data[1].compute()
    damaged = [(kind, msg) for kind, msg in shown_notes if "damaged tiles" in msg]
    assert len(damaged) == 1 and damaged[0][0] == "show_warning"
    assert damaged[0][1].startswith(f"{path}: damaged tiles at level 0 are shown as flat grey (")
