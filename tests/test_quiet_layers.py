"""Overlays are added without napari selecting them; the opened slide becomes active a pass later."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil._widgets import _layers, _worker
from napari_regional_mil._widgets._selection import activate_soon, adding_quietly
from napari_regional_mil._widgets.slide_widget import SlideWidget
from napari_regional_mil.tiling import TilingParams

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=20)


def _active_changes(viewer) -> list:
    changes: list = []
    viewer.layers.selection.events.active.connect(lambda event: changes.append(event.value))
    return changes


def test_overlays_never_change_the_selection(make_napari_viewer, widget_slide):
    from napari_regional_mil._widgets._slide_jobs import tiling_job
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    slide = _layers.add_slide_layer(viewer, open_slide(widget_slide))
    assert viewer.layers.selection.active is slide
    changes = _active_changes(viewer)
    params = TilingParams(patch_size=64, target_mpp=0.5, region_size=4)
    job = tiling_job(widget_slide, 0.5, params, None)  # the Slide widget's worker, driven here
    while True:
        try:
            next(job)
        except StopIteration as stop:
            prepared = stop.value
            break
    _layers.show_tiling_layers(viewer, slide, prepared)  # tissue labels + two grids
    _layers.show_grid_rgba(viewer, slide, np.zeros((9, 13, 4), np.uint8), 64.0, "overlay")
    assert len(viewer.layers) == 5
    # napari selects every layer it inserts: each overlay used to be selected, then the slide again
    assert changes == []
    assert viewer.layers.selection.active is slide and set(viewer.layers.selection) == {slide}


def test_a_napari_without_the_switch_gets_the_active_layer_back(make_napari_viewer, monkeypatch):
    from napari_regional_mil._widgets import _selection

    viewer = make_napari_viewer()
    first = viewer.add_image(np.zeros((8, 8), np.uint8), name="first")
    monkeypatch.setattr(_selection, "_SWITCH", "_no_such_switch")  # as in a napari without it
    with adding_quietly(viewer):
        viewer.add_image(np.zeros((8, 8), np.uint8), name="second")
    assert viewer.layers.selection.active is first


def test_the_switch_is_restored_after_an_error(make_napari_viewer):
    viewer = make_napari_viewer()
    with pytest.raises(RuntimeError), adding_quietly(viewer):
        raise RuntimeError("boom")
    assert viewer.layers._activate_on_insert is True
    added = viewer.add_image(np.zeros((8, 8), np.uint8))
    assert viewer.layers.selection.active is added  # napari's own behaviour is back


def test_activate_soon_waits_for_the_next_pass_and_skips_removed_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    first = viewer.add_image(np.zeros((8, 8), np.uint8), name="first")
    with adding_quietly(viewer):
        second = viewer.add_image(np.zeros((8, 8), np.uint8), name="second")
        gone = viewer.add_image(np.zeros((8, 8), np.uint8), name="gone")
    activate_soon(viewer, second)
    assert viewer.layers.selection.active is first  # not in this pass
    qtbot.waitUntil(lambda: viewer.layers.selection.active is second, timeout=5000)
    activate_soon(viewer, gone)
    viewer.layers.remove(gone)
    qtbot.wait(50)
    assert viewer.layers.selection.active is second


def test_the_opened_slide_becomes_active(make_napari_viewer, widget_slide, qtbot):
    viewer = make_napari_viewer()
    other = viewer.add_image(np.zeros((8, 8), np.uint8), name="other")
    widget = SlideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.picker.set_text(str(widget_slide))
    widget.open_button.click()
    qtbot.waitUntil(lambda: widget.slide_layer is not None and viewer.layers.selection.active is widget.slide_layer,
                    timeout=60000)
    assert viewer.layers.selection.active is not other
