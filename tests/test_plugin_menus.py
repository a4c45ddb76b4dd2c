"""Every contribution of the manifest works through the path a user takes.

napari builds each dock widget itself and injects the viewer by the ``__init__``
annotation (``napari.viewer.Viewer``); a widget that asks for a viewer napari cannot
recognise gets none, and the Plugins menu action raises, which ends napari. These tests
take napari's own paths: ``add_plugin_dock_widget`` (npe2 + ``_instantiate_dock_widget``)
and, in a shown window, the QActions of the Plugins menu and of File > Open Sample
(app-model). The widgets and samples are read from the manifest, so a new contribution is
covered without editing this file.
"""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-regional-mil"


def _manifest():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    if PLUGIN not in manager:  # napari discovers plugins when it makes a viewer
        manager.discover()
    return manager.get_manifest(PLUGIN)


def _widget_contributions() -> list[tuple[str, type]]:
    """``(display name, class)`` of every widget in the manifest."""
    manifest = _manifest()
    python_names = {c.id: c.python_name for c in manifest.contributions.commands}
    out = []
    for widget in manifest.contributions.widgets:
        module, _, attr = python_names[widget.command].partition(":")
        out.append((widget.display_name, getattr(importlib.import_module(module), attr)))
    return out


def _menu_actions(menu) -> dict[str, object]:
    """Every QAction under ``menu`` (recursively), by app-model command id."""
    found: dict[str, object] = {}
    for action in menu.actions():
        if action.menu() is not None:
            found.update(_menu_actions(action.menu()))
        command = getattr(action, "_command_id", None)
        if command:
            found[command] = action
    return found


@pytest.fixture
def sample_cache(tmp_path, monkeypatch):
    """The sample slide is written into this test's folder (not a shared temp folder)."""
    monkeypatch.setenv("NAPARI_REGIONAL_MIL_CACHE", str(tmp_path / "samples"))
    return tmp_path / "samples"


def test_manifest_lists_the_six_widgets_and_a_sample():
    names = [name for name, _ in _widget_contributions()]
    assert names == ["Slide", "Embed", "Cohort", "Train", "Predict", "Pretrain"]
    assert [s.key for s in _manifest().contributions.sample_data] == ["synthetic_he"]


@pytest.mark.parametrize("name", ["Slide", "Embed", "Cohort", "Train", "Predict", "Pretrain"])
def test_napari_injects_the_viewer(name):
    """napari recognises the viewer parameter of every widget (else it passes nothing)."""
    from napari._qt._qplugins._qnpe2 import _get_widget_viewer_param

    widget_class = dict(_widget_contributions())[name]
    assert _get_widget_viewer_param(widget_class, name) == "viewer"


def test_add_plugin_dock_widget_builds_every_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    for name, widget_class in _widget_contributions():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert isinstance(widget, widget_class), name
        assert widget.viewer is viewer, name  # the real viewer, not napari's public-only proxy
        assert dock.name == f"{name} ({PLUGIN})"
    assert len(viewer.window._wrapped_dock_widgets) >= 6


def test_sample_contribution_opens_a_slide_layer(make_napari_viewer, sample_cache):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample(PLUGIN, "synthetic_he")
    assert layer.multiscale and layer.rgb
    assert layer.data[0].shape[:2] == (5120, 6144)
    assert layer.metadata["slide_path"].startswith(str(sample_cache))


def test_plugins_menu_and_open_sample_in_a_shown_window(make_napari_viewer, qtbot, sample_cache):
    """Trigger each of this plugin's Plugins-menu actions and its File > Open Sample action
    in a shown window: each widget is docked and visible, the sample slide is a layer."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window
    plugin_actions = _menu_actions(window.plugins_menu)
    sample_actions = _menu_actions(window.file_menu)
    manifest = _manifest()

    for widget in manifest.contributions.widgets:
        action = plugin_actions[widget.command]
        assert action.isEnabled(), widget.display_name
        action.trigger()
        full_name = f"{widget.display_name} (Regional MIL)"
        qtbot.waitUntil(lambda full_name=full_name: full_name in window._wrapped_dock_widgets)
        dock = window._wrapped_dock_widgets[full_name]
        qtbot.waitUntil(dock.isVisible)
        assert dock.inner_widget().viewer is viewer
    assert window._qt_window.isVisible()  # the window (and the process) is still there

    (sample,) = manifest.contributions.sample_data
    sample_actions[f"{PLUGIN}.{sample.key}"].trigger()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=60000)
    (layer,) = viewer.layers
    assert layer.metadata["slide_path"].startswith(str(sample_cache))
    # the Slide widget (docked above) follows the new slide layer
    slide_widget = window._wrapped_dock_widgets["Slide (Regional MIL)"].inner_widget()
    qtbot.waitUntil(lambda: slide_widget.slide_layer is layer)

    # the same action again toggles the dock (hides it) instead of building a second widget
    plugin_actions[f"{PLUGIN}.cohort_widget"].trigger()
    dock = window._wrapped_dock_widgets["Cohort (Regional MIL)"]
    qtbot.waitUntil(lambda: not dock.isVisible())
    assert window._qt_window.isVisible()


_TRAIN_AFTER_GL = """
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=False)  # its OpenGL context loads Mesa's LLVM under Xvfb
QApplication.processEvents()
import napari_regional_mil._widgets  # what any of this plugin's widgets imports first
import torch
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo, then Triton
viewer.close()
print("alive")
"""


def test_an_optimiser_after_the_canvas_does_not_crash_napari():
    """Triton's LLVM loaded after Mesa's ends the process (SIGSEGV) unless preloaded."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (CPU-only torch): nothing can clash")
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN_AFTER_GL], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.strip().endswith("alive")
