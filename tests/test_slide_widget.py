"""The Slide dock widget on a real viewer: open, metadata, mpp, tissue, tiling, alignment."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Vectors

from napari_regional_mil._widgets import _layers, _worker
from napari_regional_mil._widgets.slide_widget import SlideWidget

pytestmark = pytest.mark.gui

MPP = 0.5  # of the widget_slide fixture
W, H = 832, 576


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=20)


def _edges(layer) -> np.ndarray:
    """World (y, x) min and max *edges* of an image/labels layer (napari extents are pixel centres)."""
    ext = np.asarray(layer.extent.world, dtype=float)
    half = np.asarray(layer.scale, dtype=float) / 2
    return np.stack([ext[0] - half, ext[1] + half])


def _wait_job(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=timeout)
    qtbot.waitUntil(lambda: widget.job.status != "running", timeout=timeout)


@pytest.fixture
def opened(make_napari_viewer, widget_slide):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.picker.set_text(str(widget_slide))
    widget.open_button.click()
    return viewer, widget


def test_open_shows_layer_and_metadata(opened, widget_slide):
    viewer, widget = opened
    layer = widget.slide_layer
    assert layer is not None and layer in viewer.layers
    assert layer.multiscale and layer.rgb and len(layer.data) == 2
    assert tuple(layer.contrast_limits) == (0, 255)
    np.testing.assert_allclose(layer.scale, (MPP, MPP))
    assert _layers.slide_path_of(layer) == widget_slide
    # the slide covers 416 x 288 um (edges), in (y, x)
    np.testing.assert_allclose(_edges(layer), [[-0.25, -0.25], [H * MPP - 0.25, W * MPP - 0.25]])
    assert "832 x 576 px" in widget.info.fields["size"].text()
    assert "0.5 µm/px (from the slide)" in widget.info.fields["mpp"].text()
    assert widget.info.fields["levels"].text().startswith("2")
    assert widget.current_mpp() == pytest.approx(MPP)
    assert not widget.mpp_warning.isVisibleTo(widget)
    assert widget.tissue_button.isEnabled() and widget.tile_button.isEnabled()


def test_detect_tissue_labels_align_with_slide(opened, qtbot):
    viewer, widget = opened
    widget.tissue_button.click()
    assert widget.cancel_button.isEnabled()
    _wait_job(qtbot, widget)
    tissue = _layers.tissue_layer_of(viewer, widget.slide_layer)
    assert tissue is not None and tissue.data.dtype == np.uint8
    np.testing.assert_allclose(_edges(tissue), _edges(widget.slide_layer), atol=1e-9)
    # world -> label: the centre of a tissue cell is tissue, the background corner is not
    cells_centre = lambda gx, gy: ((gy * 64 + 31.5) * MPP, (gx * 64 + 31.5) * MPP)  # noqa: E731
    assert tissue.get_value(cells_centre(4, 2), world=True) == 1
    assert tissue.get_value(cells_centre(10, 5), world=True) == 1
    assert tissue.get_value(cells_centre(0, 0), world=True) == 0
    assert tissue.get_value(cells_centre(12, 8), world=True) == 0
    assert not widget.cancel_button.isEnabled()


def test_tile_grids_align_with_tiling(opened, qtbot):
    viewer, widget = opened
    widget.fields.patch_size.setValue(64)
    widget.fields.region_size.setValue(4)
    widget.tile_button.click()
    _wait_job(qtbot, widget)
    tiling = widget.tiling
    assert tiling is not None and tiling.grid_shape == (9, 13)
    assert 40 <= tiling.n_patches <= 6 * 9  # the tissue blob
    assert f"{tiling.n_patches:,}</b> patches in <b>{tiling.n_regions:,}</b> regions" in widget.counts.text()
    patches = viewer.layers[f"patch grid ({widget.slide_layer.name})"]
    regions = viewer.layers[f"region grid ({widget.slide_layer.name})"]
    assert isinstance(patches, Vectors) and isinstance(regions, Vectors)
    gx, gy = tiling.grid_xy[:, 0], tiling.grid_xy[:, 1]
    s = tiling.patch_size_level0
    expect = np.array(
        [[(gy.min() * s - 0.5) * MPP, (gx.min() * s - 0.5) * MPP],
         [((gy.max() + 1) * s - 0.5) * MPP, ((gx.max() + 1) * s - 0.5) * MPP]]
    )
    np.testing.assert_allclose(patches.extent.world, expect, atol=1e-9)
    # the region outlines enclose the patch outlines and lie on multiples of k*s
    rext = np.asarray(regions.extent.world)
    assert np.all(rext[0] <= expect[0] + 1e-9) and np.all(rext[1] >= expect[1] - 1e-9)
    level0 = rext / MPP + 0.5
    assert np.allclose(np.mod(level0[0], 4 * s), 0)
    assert regions.edge_width > patches.edge_width
    # the parameters are recorded on the slide layer for the Embed widget
    assert _layers.tiling_params_of(widget.slide_layer) == tiling.params
    # tissue was detected on the way
    assert _layers.tissue_layer_of(viewer, widget.slide_layer) is not None


def test_tiling_uses_the_painted_mask(opened, qtbot):
    viewer, widget = opened
    widget.fields.patch_size.setValue(64)
    widget.fields.region_size.setValue(4)
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    tissue = _layers.tissue_layer_of(viewer, widget.slide_layer)
    assert _layers.tissue_mask_of(viewer, widget.slide_layer, only_if_edited=True) is None  # as detected
    # paint: erase everything, then tissue only over level-0 x in [0, 320), y in [0, 192)
    data = np.zeros_like(tissue.data)
    ds_x, ds_y = W / data.shape[1], H / data.shape[0]
    data[: int(round(192 / ds_y)), : int(round(320 / ds_x))] = 1
    tissue.data = data
    painted = _layers.tissue_mask_of(viewer, widget.slide_layer, only_if_edited=True)
    assert painted is not None and painted.method == "user"
    np.testing.assert_array_equal(painted.mask, data > 0)
    widget.tile_button.click()
    _wait_job(qtbot, widget)
    tiling = widget.tiling
    # the painted mask replaces the detection: exactly the 5 x 3 painted patches, background included
    assert {tuple(c) for c in tiling.grid_xy.tolist()} == {(x, y) for x in range(5) for y in range(3)}


def test_slide_without_mpp_warns_and_requires_it(make_napari_viewer, testslides_dir, qtbot, notes):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.open_path(testslides_dir / "kidney-48-5.tif")
    assert widget.current_mpp() is None
    assert widget.mpp.text().startswith("required")
    assert widget.mpp_warning.isVisibleTo(widget)
    assert "border" in widget.mpp.styleSheet()
    assert "unknown" in widget.info.fields["mpp"].text()
    widget.tile_button.click()
    assert any(sev == "error" and "mpp" in text for sev, text in notes)
    assert widget.job is None  # refused before any work
    widget.mpp.setValue(0.25)
    widget.mpp.editingFinished.emit()
    assert not widget.mpp_warning.isVisibleTo(widget)
    np.testing.assert_allclose(widget.slide_layer.scale, (0.25, 0.25))
    assert "0.25 µm/px (given by you)" in widget.info.fields["mpp"].text()
    assert _layers.layer_mpp(widget.slide_layer) == (0.25, 0.25)


@pytest.mark.parametrize("content", [b"", b"this is not a slide\n"])
def test_bad_file_is_a_notification(make_napari_viewer, tmp_path, notes, content):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    bad = tmp_path / "broken.svs"
    bad.write_bytes(content)
    assert widget.open_path(bad) is False
    errors = [text for sev, text in notes if sev == "error"]
    assert len(errors) == 1 and "broken.svs" in errors[0] and "\n" not in errors[0]
    assert len(viewer.layers) == 0 and widget.slide is None
    assert widget.open_path(tmp_path / "missing.svs") is False
    assert len([1 for sev, _ in notes if sev == "error"]) == 2
    # still usable afterwards
    assert not widget.tissue_button.isEnabled()


def test_picks_up_a_reader_layer(make_napari_viewer, widget_slide):
    pytest.importorskip("napari_regional_mil._reader")
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    layers = viewer.open(widget_slide, plugin="napari-regional-mil")
    assert widget.slide_layer is layers[0]
    assert "832 x 576 px" in widget.info.fields["size"].text()
    assert widget.picker.text() == str(widget_slide)


@pytest.mark.parametrize("name, cls", [("Slide", "SlideWidget"), ("Embed", "EmbedWidget")])
def test_manifest_widgets_get_the_real_viewer(make_napari_viewer, name, cls):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-regional-mil", name)
    assert type(widget).__name__ == cls
    assert widget.viewer is viewer  # not napari's public-only proxy


def test_overlays_are_not_slide_layers(opened, qtbot):
    viewer, widget = opened
    widget.tissue_button.click()
    _wait_job(qtbot, widget)
    rgba = np.zeros((3, 4, 4), np.uint8)
    _layers.show_grid_rgba(viewer, widget.slide_layer, rgba, 64.0, "overlay")
    viewer.layers.selection.active = viewer.layers[-1]
    assert _layers.slide_layers(viewer) == [widget.slide_layer]
    assert _layers.find_slide_layer(viewer) is widget.slide_layer


def test_closing_viewer_during_tiling_is_clean(make_napari_viewer, widget_slide, qtbot, notes):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.open_path(widget_slide)
    widget.fields.patch_size.setValue(64)
    widget.fields.region_size.setValue(4)
    widget.tile_button.click()
    job = widget.job
    viewer.close()
    assert not job.running
    qtbot.wait(100)
    assert not [n for n in notes if n[0] == "error"]
