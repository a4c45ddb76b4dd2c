"""The one state object the widgets of a viewer share (open slide, cohort, model, threshold)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil._widgets._state import viewer_state
from napari_regional_mil.training.cohort_table import CohortTable

pytestmark = pytest.mark.gui


def _slide(viewer, name, *, derived=False):
    meta = {"slide_path": f"/slides/{name}.svs"}
    if derived:
        meta["derived_from"] = "a"
    return viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name=name, metadata=meta)


def test_one_state_per_viewer_also_through_naparis_proxy(make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy

    viewer, other = make_napari_viewer(), make_napari_viewer()
    state = viewer_state(viewer)
    assert viewer_state(viewer) is state and viewer_state(PublicOnlyProxy(viewer)) is state
    assert viewer_state(other) is not state and state.viewer is viewer


def test_the_open_slide_follows_the_selection_and_stays_on_other_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    state = viewer_state(viewer)
    changes = []
    state.slide_changed.connect(changes.append)
    a = _slide(viewer, "a")
    assert state.slide_layer is a and changes == [a]
    b = _slide(viewer, "b")
    assert state.slide_layer is b
    overlay = _slide(viewer, "overlay of a", derived=True)  # an overlay is not a slide
    labels = viewer.add_labels(np.zeros((8, 8), np.uint8))
    viewer.layers.selection.active = labels
    assert state.slide_layer is b  # another kind of layer is active: the slide stays
    viewer.layers.selection.active = a
    assert state.slide_layer is a and changes == [a, b, a]
    viewer.layers.remove(a)
    assert state.slide_layer is b  # the topmost slide left
    viewer.layers.remove(b)
    assert state.slide_layer is None and changes[-1] is None
    assert overlay in viewer.layers


def test_cohort_model_and_threshold(make_napari_viewer):
    from types import SimpleNamespace

    viewer = make_napari_viewer()
    state = viewer_state(viewer)
    seen = {"cohort": 0, "threshold": [], "model": []}
    state.cohort_changed.connect(lambda: seen.__setitem__("cohort", seen["cohort"] + 1))
    state.threshold_changed.connect(seen["threshold"].append)
    state.model_changed.connect(seen["model"].append)
    table = CohortTable()
    state.publish_cohort(table, None)
    assert state.cohort is table and seen["cohort"] == 1
    state.withdraw_cohort(CohortTable())  # another widget's table: this one stays
    assert state.cohort is table
    state.withdraw_cohort(table)
    assert state.cohort is None and seen["cohort"] == 2
    # a binary model sets the threshold to its stored one, once; the user's value then holds
    binary = SimpleNamespace(class_names=("a", "b"), threshold=0.7)
    state.model = binary
    assert state.threshold == 0.7 and seen["threshold"] == [0.7] and seen["model"] == [binary]
    state.threshold = 0.3
    state.threshold = 0.3  # unchanged: no signal
    assert seen["threshold"] == [0.7, 0.3]
    three = SimpleNamespace(class_names=("a", "b", "c"), threshold=0.9)
    state.model = three  # a multi-class model decides by the largest probability: threshold untouched
    assert state.threshold == 0.3 and state.model is three
    state.model = binary  # loading a binary model again starts from its stored threshold again
    assert state.threshold == 0.7
