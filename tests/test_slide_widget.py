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


def _open(qtbot, widget, path) -> bool:
    """Open ``path`` as the Open button does (in a worker); whether it became the widget's slide."""
    widget.picker.set_text(str(path))
    widget.open_button.click()
    _wait_job(qtbot, widget)
    return widget.job.status == "done" and widget.slide_layer is not None


@pytest.fixture
def opened(make_napari_viewer, widget_slide, qtbot):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert _open(qtbot, widget, widget_slide)
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
    def cells_centre(gx, gy):
        return ((gy * 64 + 31.5) * MPP, (gx * 64 + 31.5) * MPP)
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
    data[: round(192 / ds_y), : round(320 / ds_x)] = 1
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
    assert _open(qtbot, widget, testslides_dir / "kidney-48-5.tif")
    assert widget.current_mpp() is None
    assert widget.mpp.text().startswith("required")
    assert widget.mpp_warning.isVisibleTo(widget)
    assert "border" in widget.mpp.styleSheet()
    assert "unknown" in widget.info.fields["mpp"].text()
    opening = widget.job
    widget.tile_button.click()
    assert any(sev == "error" and "mpp" in text for sev, text in notes)
    assert widget.job is opening  # refused before any work: no tiling job
    widget.mpp.setValue(0.25)
    widget.mpp.editingFinished.emit()
    assert not widget.mpp_warning.isVisibleTo(widget)
    np.testing.assert_allclose(widget.slide_layer.scale, (0.25, 0.25))
    assert "0.25 µm/px (given by you)" in widget.info.fields["mpp"].text()
    assert _layers.layer_mpp(widget.slide_layer) == (0.25, 0.25)


@pytest.mark.parametrize("content", [b"", b"this is not a slide\n"])
def test_bad_file_is_a_notification(make_napari_viewer, tmp_path, notes, content, qtbot):
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    bad = tmp_path / "broken.svs"
    bad.write_bytes(content)
    assert _open(qtbot, widget, bad) is False
    errors = [text for sev, text in notes if sev == "error"]
    assert len(errors) == 1 and "broken.svs" in errors[0] and "\n" not in errors[0]
    assert len(viewer.layers) == 0 and widget.slide is None
    assert _open(qtbot, widget, tmp_path / "missing.svs") is False
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
    assert _open(qtbot, widget, widget_slide)
    widget.fields.patch_size.setValue(64)
    widget.fields.region_size.setValue(4)
    widget.tile_button.click()
    job = widget.job
    viewer.close()
    assert not job.running
    qtbot.wait(100)
    assert not [n for n in notes if n[0] == "error"]


# -- units, worker-side geometry, tilings made elsewhere, module split ----------------------------
def _tile_now(path, params):
    """The Slide widget's tiling job, driven here (what its worker returns)."""
    from napari_regional_mil._widgets._slide_jobs import tiling_job

    job = tiling_job(path, MPP, params, None)
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def _params(patch=64, k=4):
    from napari_regional_mil.tiling import TilingParams

    return TilingParams(patch_size=patch, target_mpp=MPP, region_size=k)


def test_derived_layers_have_the_slide_units(make_napari_viewer, widget_slide, notes):
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    slide = _layers.add_slide_layer(viewer, open_slide(widget_slide))
    slide.units = ("mm", "mm")  # whatever the slide layer says, its layers follow
    prepared = _tile_now(widget_slide, _params())
    _layers.show_tiling_layers(viewer, slide, prepared)
    _layers.show_grid_rgba(viewer, slide, np.zeros((9, 13, 4), np.uint8), 64.0, "overlay")
    assert len(viewer.layers) == 5
    assert all(tuple(layer.units) == tuple(slide.units) for layer in viewer.layers)
    assert viewer.layers.extent.units is not None  # napari's condition for its warning
    _layers.set_slide_mpp(viewer, slide, (0.25, 0.25))  # microns again, for every layer
    assert all(str(layer.units[0]) == "micrometer" for layer in viewer.layers)
    viewer.window._qt_viewer.canvas._update_world_units()  # what the next draw runs
    assert not [text for _, text in notes if "Inconsistent units" in text]


def _naive_outline(occ, ys, xs):
    """Reference: every cell edge of every occupied cell, as a set of unit edges."""
    edges = set()
    for r, c in zip(*np.nonzero(occ)):
        edges |= {(ys[r], xs[c], ys[r], xs[c + 1]), (ys[r + 1], xs[c], ys[r + 1], xs[c + 1]),
                  (ys[r], xs[c], ys[r + 1], xs[c]), (ys[r], xs[c + 1], ys[r + 1], xs[c + 1])}
    return edges


def _unit_edges(segs, ys, xs):
    out = set()
    for (y0, x0), (y1, x1) in segs:
        if y0 == y1:
            i, j = np.searchsorted(xs, x0), np.searchsorted(xs, x1)
            out |= {(y0, xs[a], y0, xs[a + 1]) for a in range(i, j)}
        else:
            i, j = np.searchsorted(ys, y0), np.searchsorted(ys, y1)
            out |= {(ys[a], x0, ys[a + 1], x0) for a in range(i, j)}
    return out


def test_outline_segments_match_the_cells():
    rng = np.random.default_rng(5)
    occ = rng.random((7, 11)) > 0.45
    ys, xs = np.round(np.arange(8) * 37.5), np.round(np.arange(12) * 37.5)
    segs = _layers.outline_segments(occ, ys, xs)
    assert segs.shape[1:] == (2, 2)
    assert _unit_edges(segs, ys, xs) == _naive_outline(occ, ys, xs)
    # runs are merged (fewer segments than unit edges) and none is drawn twice
    assert len(segs) < len(_naive_outline(occ, ys, xs))
    assert len({tuple(s.ravel()) for s in segs}) == len(segs)
    assert _layers.outline_segments(np.zeros((3, 5), bool), ys[:4], xs[:6]).shape == (0, 2, 2)


def test_tiling_job_prepares_layers_and_reshow_updates_in_place(opened, qtbot, widget_slide):
    viewer, widget = opened
    widget.fields.patch_size.setValue(64)
    widget.fields.region_size.setValue(4)
    widget.tile_button.click()
    _wait_job(qtbot, widget)
    prepared = _tile_now(widget_slide, _params())
    # the worker's result carries the grid geometry: the GUI thread only adds layers
    assert isinstance(prepared, _layers.TilingLayers) and prepared.tissue is not None
    np.testing.assert_array_equal(prepared.outlines.patch_vectors,
                                  _layers.grid_outlines(prepared.tiling).patch_vectors)
    names = [layer.name for layer in viewer.layers]
    before = {name: viewer.layers[name] for name in names}
    removed = []
    viewer.layers.events.removed.connect(lambda e: removed.append(e.value))
    widget.fields.patch_size.setValue(96)  # tile again: the layers are updated, not re-made
    widget.tile_button.click()
    _wait_job(qtbot, widget)
    assert not removed and [layer.name for layer in viewer.layers] == names
    assert all(viewer.layers[name] is layer for name, layer in before.items())
    patches = viewer.layers[f"patch grid ({widget.slide_layer.name})"]
    np.testing.assert_array_equal(patches.data, _layers.grid_outlines(widget.tiling).patch_vectors)
    assert widget.tiling.params.patch_size == 96


def test_shows_a_tiling_made_elsewhere(make_napari_viewer, widget_slide):
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    slide = _layers.add_slide_layer(viewer, open_slide(widget_slide))
    prepared = _tile_now(widget_slide, _params(k=5))
    tiling = prepared.tiling
    expect = f"<b>{tiling.n_patches:,}</b> patches in <b>{tiling.n_regions:,}</b> regions"
    # tiled (as the Cohort widget does) before the widget picks the layer up
    slide.metadata["tiling"] = tiling
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.slide_layer is slide and widget.tiling is tiling
    assert expect in widget.counts.text()
    # tiled elsewhere while the widget shows it: the counts follow
    other = _tile_now(widget_slide, _params(patch=96, k=4))
    _layers.show_tiling_layers(viewer, slide, other)
    assert widget.tiling is other.tiling and f"{other.tiling.n_patches:,}</b> patches" in widget.counts.text()
    assert widget.fields.params().patch_size == 96
    # a plain metadata edit is picked up when the layer becomes active again
    slide.metadata["tiling"] = tiling
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.layers.selection.active = slide
    assert expect in widget.counts.text()


def test_split_modules_keep_the_old_import_paths():
    from napari_regional_mil._widgets import (
        _grid_layers,
        _job_handle,
        _slide_layers,
        _tissue_layers,
    )

    for name in _layers.__all__:
        assert getattr(_layers, name) is not None
    assert _layers.show_grids is _grid_layers.show_grids
    assert _layers.tissue_mask_of is _tissue_layers.tissue_mask_of
    assert _layers.set_slide_mpp is _slide_layers.set_slide_mpp
    for name in ("JobHandle", "start_job", "running_job", "cancel_all", "notify_error", "CLOSE_WAIT_S", "_be_nice"):
        assert hasattr(_worker, name)
    assert _worker.JobHandle is _job_handle.JobHandle
    for module in (_layers, _worker, _grid_layers, _job_handle, _slide_layers, _tissue_layers):
        with open(module.__file__, encoding="utf-8") as f:
            assert sum(1 for _ in f) <= 400, module.__name__


def test_default_reader_check_box_sets_and_follows_napari_preference(make_napari_viewer, tmp_path, monkeypatch,
                                                                       widget_slide):
    """The check box sets napari's extension2reader for every pattern of this plugin's reader
    (then napari opens a slide with it without asking), follows the preference when it is set
    elsewhere, and unticking removes only this plugin's entries."""
    from napari.settings import get_settings

    from napari_regional_mil._widgets._reader_preference import PLUGIN, reader_patterns

    settings = get_settings()
    monkeypatch.setattr(settings, "config_path", tmp_path / "napari-settings.yaml")  # never the user's file
    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    patterns = reader_patterns()
    assert {"*.svs", "*.tif", "*.ndpi"} <= set(patterns)
    assert not widget.default_reader.isChecked()
    with pytest.raises(Exception, match="Multiple plugins"):  # napari would ask (its reader dialog)
        viewer.open(str(widget_slide), plugin=None)
    widget.default_reader.setChecked(True)
    assert all(settings.plugins.extension2reader[p] == PLUGIN for p in patterns)
    (layer,) = viewer.open(str(widget_slide), plugin=None)
    assert layer.metadata["slide_path"] == str(widget_slide)
    # set elsewhere (napari's dialog, Preferences): the check box follows
    settings.plugins.extension2reader = {**settings.plugins.extension2reader, "*.tif": "napari", "*.png": "other"}
    assert not widget.default_reader.isChecked()
    widget.default_reader.setChecked(True)
    widget.default_reader.setChecked(False)
    assert settings.plugins.extension2reader == {"*.png": "other"}
