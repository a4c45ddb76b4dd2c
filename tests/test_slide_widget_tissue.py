"""The Slide widget's tissue box: options, saving and loading a painted mask, QuPath annotations, the writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_regional_mil._widgets import _layers, _worker
from napari_regional_mil._widgets.slide_widget import SlideWidget
from napari_regional_mil.masks import load_mask

pytestmark = pytest.mark.gui

W, H = 832, 576  # the widget_slide fixture, level 0


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=20)


def _wait_job(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=timeout)
    qtbot.waitUntil(lambda: widget.job.status != "running", timeout=timeout)


@pytest.fixture
def opened(make_napari_viewer, widget_slide, qtbot):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.picker.set_text(str(widget_slide))
    widget.open_button.click()
    _wait_job(qtbot, widget)
    assert widget.slide_layer is not None
    return viewer, widget


def _tissue_layer(viewer, widget):
    return _layers.tissue_layer_of(viewer, widget.slide_layer)


def test_options_change_the_detected_tissue(opened, qtbot):
    viewer, widget = opened
    box = widget.tissue_box
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    default = _layers.read_tissue_mask(_tissue_layer(viewer, widget))
    assert _tissue_layer(viewer, widget).metadata["tissue_default"] is True
    box.method.setCurrentIndex(box.method.findData("threshold-saturation"))
    assert box.cutoff.isEnabled()
    box.cutoff.setValue(0.4)  # only the more saturated stain
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    strict = _layers.read_tissue_mask(_tissue_layer(viewer, widget))
    assert 0 < strict.sum() < 0.8 * default.sum()
    assert _tissue_layer(viewer, widget).metadata["tissue_default"] is False
    # embedding must use this mask although it was not painted on
    assert _layers.tissue_mask_of(viewer, widget.slide_layer, only_if_edited=True) is not None
    assert box.options().method == "threshold-saturation" and box.options().threshold == 0.4


def test_save_paint_load_round_trip(opened, qtbot, tmp_path):
    viewer, widget = opened
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    layer = _tissue_layer(viewer, widget)
    painted = layer.data.copy()
    painted[:, : painted.shape[1] // 3] = 0  # the pathologist erases the left third
    layer.data = painted
    widget.save_mask(tmp_path / "mask")  # ".png" is added
    _wait_job(qtbot, widget)
    saved = load_mask(tmp_path / "mask.png", slide_dimensions=(W, H))
    np.testing.assert_array_equal(saved.mask, painted > 0)
    layer.data = np.zeros_like(painted)
    widget.load_mask(tmp_path / "mask.png")
    _wait_job(qtbot, widget)
    np.testing.assert_array_equal(_layers.read_tissue_mask(_tissue_layer(viewer, widget)), painted > 0)


def test_load_mask_of_another_slide_notifies(opened, qtbot, tmp_path, shown_notes):
    viewer, widget = opened
    from napari_regional_mil.masks import save_mask

    save_mask(tmp_path / "other.png", np.ones((10, 10), bool), slide_dimensions=(1000, 1000))
    widget.load_mask(tmp_path / "other.png")
    _wait_job(qtbot, widget)
    assert widget.job.status == "failed"
    assert any("other.png: the mask was made for a 1000 x 1000 px slide" in msg for _, msg in shown_notes)
    assert _tissue_layer(viewer, widget) is None


def test_qupath_exclusions_remove_the_pen_mark(opened, qtbot, tmp_path):
    viewer, widget = opened
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    before = _layers.read_tissue_mask(_tissue_layer(viewer, widget))
    pen = [[0, 0], [W / 2, 0], [W / 2, H], [0, H], [0, 0]]  # the left half of the slide
    path = tmp_path / "pen.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [pen]},
         "properties": {"classification": {"name": "Pen"}}}]}))
    widget.import_annotations(path, mode="exclude")
    _wait_job(qtbot, widget)
    after = _layers.read_tissue_mask(_tissue_layer(viewer, widget))
    half = after.shape[1] // 2
    assert not after[:, : half - 1].any() and np.array_equal(after[:, half + 1 :], before[:, half + 1 :])


def test_napari_writer_saves_the_tissue_layer(opened, qtbot, tmp_path):
    viewer, widget = opened
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    layer = _tissue_layer(viewer, widget)
    written = layer.save(str(tmp_path / "from_napari.png"), plugin="napari-regional-mil")
    assert written == [str(tmp_path / "from_napari.png")]
    np.testing.assert_array_equal(load_mask(written[0], slide_dimensions=(W, H)).mask, layer.data > 0)
