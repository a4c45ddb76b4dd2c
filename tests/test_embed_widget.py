"""The Embed dock widget on a real viewer: embed, cache reuse, PCA overlay alignment, cancel."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from napari_regional_mil._widgets import _layers, _worker
from napari_regional_mil._widgets.embed_widget import EmbedWidget
from napari_regional_mil.embedding.workflow import CACHE_FOLDER, default_cache_dir
from napari_regional_mil.tiling import TilingParams

pytestmark = pytest.mark.gui

MPP = 0.5
PARAMS = TilingParams(patch_size=64, target_mpp=0.5, region_size=4, tissue_threshold=0.5)


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=30)


@pytest.fixture
def setup(make_napari_viewer, widget_slide, tmp_path):
    """A viewer with the tiny slide layer (tiled by the Slide widget's parameters) and the widget.

    The slide stays open in the reader's registry (its layer reads through it).
    """
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    slide = open_slide(widget_slide)
    layer = _layers.add_slide_layer(viewer, slide)
    layer.metadata["tiling_params"] = asdict(PARAMS)
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.cache_dir.set_text(str(tmp_path / "cache"))
    widget._cache_dir_auto = False
    widget.batch_size.setValue(8)
    return viewer, widget, layer, tmp_path / "cache"


def _finished(qtbot, widget, timeout=120000):
    qtbot.waitUntil(lambda: widget.job is not None and widget.job.status != "running", timeout=timeout)
    return widget.job.status


def _complete_caches(cache_dir: Path) -> list:
    from napari_regional_mil.embedding.store import list_caches

    return [c for c in list_caches(cache_dir) if c.complete] if cache_dir.exists() else []


def test_defaults_follow_the_slide_layer(setup, widget_slide):
    _viewer, widget, layer, _ = setup
    assert widget.slide_layer is layer
    assert widget.fields.params() == PARAMS
    assert widget_slide.name in widget.slide_label.text() and "0.5 µm/px" in widget.slide_label.text()
    assert widget.encoder.choice() == ("builtin-he", {})
    assert widget.device.itemText(0) == "cpu"
    assert default_cache_dir(widget_slide) == widget_slide.parent.resolve() / CACHE_FOLDER


def test_params_follow_the_slide_widget(make_napari_viewer, widget_slide, qtbot):
    from napari_regional_mil._widgets.slide_widget import SlideWidget

    viewer = make_napari_viewer()
    slide_widget, embed_widget = SlideWidget(viewer), EmbedWidget(viewer)
    viewer.window.add_dock_widget(slide_widget)
    viewer.window.add_dock_widget(embed_widget)
    slide_widget.open_path(widget_slide)
    qtbot.waitUntil(lambda: slide_widget.slide_layer is not None, timeout=30000)
    assert embed_widget.slide_layer is slide_widget.slide_layer
    slide_widget.fields.patch_size.setValue(96)
    slide_widget.fields.region_size.setValue(5)
    slide_widget.tile_button.click()
    qtbot.waitUntil(lambda: slide_widget.tiling is not None, timeout=60000)
    embed_widget.refresh_slide()  # what showing the Embed tab does
    assert embed_widget.fields.params() == slide_widget.tiling.params
    assert embed_widget.fields.patch_size.value() == 96 and embed_widget.fields.region_size.value() == 5


def test_default_cache_dir_falls_back_when_not_writable(tmp_path, monkeypatch):
    slide = tmp_path / "ro" / "s.svs"
    monkeypatch.setattr("os.access", lambda path, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir(slide) == tmp_path / "xdg" / "napari-regional-mil" / "embeddings"


def test_embed_shows_aligned_pca_and_reuses_cache(setup, qtbot, notes):
    from napari_regional_mil.embedding.store import load_slide_embeddings

    viewer, widget, layer, cache_dir = setup
    widget.embed_button.click()
    assert widget.cancel_button.isEnabled() and not widget.embed_button.isEnabled()
    assert _finished(qtbot, widget) == "done", notes
    result = widget.result
    assert result.computed and result.n_patches > 0
    assert [c.path for c in _complete_caches(cache_dir)] == [result.cache_path]
    pca = viewer.layers[f"embedding PCA ({layer.name})"]
    emb = load_slide_embeddings(result.cache_path)
    s = emb.meta["patch_size_level0"]
    assert pca.data.shape == (9, 13, 4)
    # every patch's pixel sits on the patch's world centre, and only patches are opaque
    for gx, gy in emb.grid_xy[:: max(1, emb.n_patches // 10)]:
        centre = ((gy * s + (s - 1) / 2) * MPP, (gx * s + (s - 1) / 2) * MPP)
        np.testing.assert_allclose(pca.world_to_data(centre), (gy, gx), atol=1e-9)
    opaque = pca.data[..., 3] > 0
    expect = np.zeros((9, 13), bool)
    expect[emb.grid_xy[:, 1], emb.grid_xy[:, 0]] = True
    np.testing.assert_array_equal(opaque, expect)
    np.testing.assert_allclose(
        np.asarray(pca.extent.world) + [-pca.scale / 2, pca.scale / 2],
        [[-0.25, -0.25], [9 * s * MPP - 0.25, 13 * s * MPP - 0.25]],
    )
    assert "computed" in widget.status.text()
    # the overlay has the slide layer's units: napari sees consistent units (no warning)
    assert tuple(pca.units) == tuple(layer.units) and viewer.layers.extent.units is not None
    # second run: the complete cache is found, nothing is computed, the widget says so
    widget.embed_button.click()
    assert _finished(qtbot, widget) == "done"
    assert not widget.result.computed and widget.result.cache_path == result.cache_path
    assert "reused" in widget.status.text()
    assert not [n for n in notes if n[0] == "error"]


def test_cancel_mid_embed_leaves_no_complete_cache(setup, qtbot, notes):
    viewer, widget, layer, cache_dir = setup
    widget.batch_size.setValue(2)
    seen = []
    widget.embed_button.click()
    widget.job.worker.yielded.connect(lambda e: seen.append(e))
    qtbot.waitUntil(lambda: any(e.stage == "embed" and e.done > 0 for e in seen), timeout=120000)
    widget.cancel_button.click()
    assert _finished(qtbot, widget) == "cancelled"
    assert _complete_caches(cache_dir) == []
    assert f"embedding PCA ({layer.name})" not in viewer.layers
    assert "Cancelled" in widget.status.text()
    assert widget.embed_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert not [n for n in notes if n[0] == "error"]
    # the viewer is usable: the next run resumes and completes
    widget.embed_button.click()
    assert _finished(qtbot, widget) == "done"
    assert len(_complete_caches(cache_dir)) == 1


def test_second_embed_while_running_is_refused(setup, qtbot, notes):
    viewer, widget, _layer, cache_dir = setup
    widget.embed_button.click()
    first = widget.job
    other = EmbedWidget(viewer)
    viewer.window.add_dock_widget(other, name="second Embed")
    other.cache_dir.set_text(str(cache_dir))
    other.embed()
    assert other.job is None
    assert any(sev == "warning" and "refused" in text for sev, text in notes)
    first.cancel()
    _finished(qtbot, widget)


def test_bad_encoder_file_is_a_notification(setup, qtbot, notes, tmp_path):
    _viewer, widget, _layer, cache_dir = setup
    fake = tmp_path / "encoder.pt"
    fake.write_text("not torchscript")
    widget.encoder.kind.setCurrentIndex(1)
    widget.encoder.script.set_text(str(fake))
    widget.embed_button.click()
    assert _finished(qtbot, widget) == "failed"
    errors = [text for sev, text in notes if sev == "error"]
    assert len(errors) == 1 and "encoder.pt" in errors[0] and "TorchScript" in errors[0]
    assert widget.embed_button.isEnabled()
    assert _complete_caches(cache_dir) == []
    # an empty required field is refused before any work
    widget.encoder.script.set_text("")
    widget.embed_button.click()
    assert any("choose a TorchScript" in text for sev, text in notes if sev == "error")


def test_no_slide_is_a_notification(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.embed_button.isEnabled()
    widget.embed()
    assert any(sev == "error" and "open a slide" in text for sev, text in notes)


def test_closing_viewer_during_embed_is_clean(setup, qtbot, notes):
    viewer, widget, _layer, cache_dir = setup
    widget.batch_size.setValue(2)
    seen = []
    widget.embed_button.click()
    job = widget.job
    job.worker.yielded.connect(lambda e: seen.append(e))
    qtbot.waitUntil(lambda: any(e.stage == "embed" and e.done > 0 for e in seen), timeout=120000)
    viewer.close()
    assert not job.running  # cancelled and waited for by the window's close
    qtbot.wait(100)
    assert _complete_caches(cache_dir) == []
    assert not [n for n in notes if n[0] == "error"]


@pytest.mark.parametrize("name", ["Slide", "Embed"])
def test_removed_dock_widget_ignores_layer_events(make_napari_viewer, widget_slide, qtbot, notes, name):
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    dock, _ = viewer.window.add_plugin_dock_widget("napari-regional-mil", name)
    viewer.window.remove_dock_widget(dock)
    qtbot.wait(50)
    layer = _layers.add_slide_layer(viewer, open_slide(widget_slide))  # emits inserted/active events
    viewer.layers.selection.active = layer
    viewer.layers.remove(layer)
    assert not [n for n in notes if n[0] == "error"]


def test_the_device_box_lists_gpus_found_later_and_keeps_the_users_choice(qtbot):
    from napari_regional_mil._widgets._devices import DeviceBox, known_devices

    box = DeviceBox(None, kind="test-devices")  # torch is imported in the test process: no worker
    qtbot.addWidget(box)
    assert [box.itemText(i) for i in range(box.count())] == known_devices()
    box.set_devices(["cpu", "cuda", "cuda:1"])
    assert [box.itemText(i) for i in range(box.count())] == ["cpu", "cuda", "cuda:1"] and box.currentText() == "cuda"
    box.setCurrentIndex(0)
    box.activated.emit(0)  # the user picks cpu
    box.set_devices(["cpu", "cuda", "cuda:1", "cuda:2"])
    assert box.currentText() == "cpu" and box.count() == 4


_WHILE_TORCH_IMPORTS = """
import napari

viewer = napari.Viewer(show=False)
viewer.window.add_plugin_dock_widget("napari-regional-mil", "Embed")  # its worker starts importing torch
viewer.window.add_plugin_dock_widget("napari-regional-mil", "Pretrain")  # built while that import runs
print("opened", flush=True)
viewer.close()
"""


def test_a_device_box_built_while_another_worker_imports_torch_opens_from_the_plugins_menu():
    """A half-imported torch (no ``cuda`` yet) counts as not imported: the box asks its own worker."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WHILE_TORCH_IMPORTS], capture_output=True, text=True,
                          timeout=300, check=False)
    assert "partially initialized" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0 and done.stdout.strip() == "opened", done.stderr[-2000:]


def test_a_half_imported_torch_is_not_used_for_the_device_list(qtbot, monkeypatch):
    import torch

    from napari_regional_mil._widgets import _devices

    started = []
    monkeypatch.setattr(torch.__spec__, "_initializing", True, raising=False)  # as while another thread imports it
    monkeypatch.setattr(_devices, "start_job", lambda job, **kwargs: started.append(kwargs["kind"]))
    assert _devices.known_devices() == ["cpu"]
    box = _devices.DeviceBox(None, kind="test-devices")
    qtbot.addWidget(box)
    assert [box.itemText(i) for i in range(box.count())] == ["cpu"] and started == ["test-devices"]
