"""User journeys through the real GUI, in a shown viewer, as a pathologist would go.

Only what a user does: napari's menus (Plugins > Regional MIL > ..., File > Open), its
open-files dialog (answered with a path), its reader dialog, clicks on the widgets' buttons
and on the canvas, typing into fields. Every wait is on a real condition (a job finished, a
layer present). Tiny synthetic slides (12 x 16 patches of 32 px) and few epochs keep each
journey well under a minute on two cores.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog

from gui_actions import (
    answer_reader_dialog,
    click,
    click_canvas_at,
    file_open,
    open_widget,
    type_into,
)
from napari_regional_mil._widgets._reader_preference import PLUGIN, reader_patterns
from napari_regional_mil._widgets._worker import running_job

pytestmark = pytest.mark.gui


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    """napari's settings are saved in this test's folder (the user's own are never touched)."""
    from napari.settings import get_settings

    monkeypatch.setattr(get_settings(), "config_path", tmp_path / "napari-settings.yaml")
    return tmp_path / "napari-settings.yaml"


@pytest.fixture
def shown_errors(monkeypatch):
    """Messages of the error notifications shown (napari's notification manager)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    errors: list[str] = []
    notification_manager.notification_ready.connect(
        lambda note: note.severity >= NotificationSeverity.ERROR and errors.append(str(note.message))
    )
    return errors


def _idle(*kinds):
    return lambda: all(running_job(kind) is None for kind in kinds)


def _label(w, qtbot, row, label):
    """Select a row of the Cohort table with the mouse and label it with "Label selected"."""
    view = w.view
    qtbot.mouseClick(
        view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(w.model.index(row, 0)).center()
    )
    w.bulk_label.setCurrentText(label)
    click(qtbot, w.apply_label_button)


def _truth(path):
    return json.loads(path.with_suffix(".truth.json").read_text())["label"]


def test_open_tile_embed_label_train_predict_click_export(
    make_napari_viewer, gui_cohort, tmp_path, qtbot, monkeypatch, settings_file, shown_errors
):
    viewer = make_napari_viewer(show=True)
    tiling = gui_cohort.tiling
    slides = list(gui_cohort.slides)
    first = slides[0]
    other = next(p for p in slides if _truth(p) != _truth(first))
    cache = tmp_path / "cache"

    # 1. the Slide widget; make this plugin napari's reader for slide files (its check box)
    slide_w = open_widget(viewer, "Slide", qtbot)
    assert not slide_w.default_reader.isChecked()
    qtbot.mouseClick(slide_w.default_reader, Qt.MouseButton.LeftButton)
    from napari.settings import get_settings

    assert all(get_settings().plugins.extension2reader.get(p) == PLUGIN for p in reader_patterns())
    assert settings_file.is_file()

    # 2. File > Open the slide: napari opens it with this plugin, without asking; the Slide widget shows it
    file_open(viewer, [first], monkeypatch)
    qtbot.waitUntil(lambda: slide_w.slide_layer is not None, timeout=30000)
    slide = slide_w.slide_layer
    assert slide.metadata["slide_path"] == str(first) and slide.multiscale
    assert "0.5 µm/px" in slide_w.info.fields["mpp"].text()

    # 3. tissue, then tiling with the cohort's patch and region sizes
    click(qtbot, slide_w.tissue_button)
    qtbot.waitUntil(
        lambda: slide_w.job.status != "running" and f"tissue ({slide.name})" in viewer.layers, timeout=60000
    )
    slide_w.fields.patch_size.setValue(tiling.patch_size)
    slide_w.fields.region_size.setValue(tiling.region_size)
    click(qtbot, slide_w.tile_button)
    qtbot.waitUntil(lambda: slide_w.tiling is not None and slide_w.job.status != "running", timeout=60000)
    assert f"region grid ({slide.name})" in viewer.layers
    assert f"<b>{slide_w.tiling.n_patches:,}</b> patches" in slide_w.counts.text()

    # 4. embed it (the Embed widget takes the Slide widget's tiling)
    embed_w = open_widget(viewer, "Embed", qtbot)
    assert embed_w.slide_layer is slide and embed_w.fields.params() == slide_w.tiling.params
    type_into(qtbot, embed_w.cache_dir.line, str(cache))
    click(qtbot, embed_w.embed_button)
    qtbot.waitUntil(lambda: embed_w.result is not None and _idle("embed")(), timeout=120000)
    assert f"embedding PCA ({slide.name})" in viewer.layers and embed_w.result.computed

    # 5. the cohort: add the two slides, two classes, label them, embed the missing one
    cohort_w = open_widget(viewer, "Cohort", qtbot)
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(first), str(other)], ""))
    click(qtbot, cohort_w.add_files_button)
    assert [row.name for row in cohort_w.table.rows] == [first.stem, other.stem]
    for name in sorted({_truth(first), _truth(other)}):
        type_into(qtbot, cohort_w.classes.name, name, enter=False)
        click(qtbot, cohort_w.classes.add_button)
    _label(cohort_w, qtbot, 0, _truth(first))
    _label(cohort_w, qtbot, 1, _truth(other))
    assert [row.label for row in cohort_w.table.rows] == [_truth(first), _truth(other)]
    cohort_w.embed_box.tiling.set_params(tiling)
    type_into(qtbot, cohort_w.embed_box.cache_dir.line, str(cache))
    # the Embed widget's cache is found by the background status check
    qtbot.waitUntil(lambda: "embedded: 1/2" in cohort_w.summary.text(), timeout=30000)
    click(qtbot, cohort_w.embed_box.embed_button)
    qtbot.waitUntil(lambda: _idle("embed")() and cohort_w.embed_box.embed_button.isEnabled(), timeout=120000)
    qtbot.waitUntil(lambda: "embedded: 2/2" in cohort_w.summary.text(), timeout=30000)

    # 6. train (a few epochs; two slides: no validation)
    train_w = open_widget(viewer, "Train", qtbot)
    m, o = train_w.model_fields, train_w.optim_fields
    m.hidden_dim.setValue(16)
    m.attention_dim.setValue(8)
    m.min_patches.setValue(8)
    m.max_patches.setValue(24)
    o.epochs.setValue(3)
    o.val_fraction.setValue(0.0)
    type_into(qtbot, train_w.out_path, str(tmp_path / "model.safetensors"))
    click(qtbot, train_w.start_button)
    qtbot.waitUntil(lambda: _idle("train")() and train_w.start_button.isEnabled(), timeout=120000)
    assert (tmp_path / "model.safetensors").is_file(), train_w.status.text()

    # 7. predict the open slide with the model just trained
    predict_w = open_widget(viewer, "Predict", qtbot)
    assert predict_w.model is not None and predict_w.model.path == tmp_path / "model.safetensors"
    type_into(qtbot, predict_w.cache_dir, str(cache))
    viewer.layers.selection.active = slide
    click(qtbot, predict_w.predict_button)
    qtbot.waitUntil(
        lambda: predict_w.maps is not None and _idle("predict")() and not predict_w.layers_pending,
        timeout=120000,
    )
    maps = predict_w.maps
    assert maps.prediction.slide_name == first.stem
    assert {"patch", "region"} <= set(predict_w.heatmap_layers)
    assert predict_w.decision_label.text().split()[0] in maps.prediction.class_names

    # 8. click the region of highest attention on the canvas: its top patches are listed
    region = int(np.argmax(maps.prediction.region_attention))
    viewer.layers.selection.active = slide  # pan/zoom mode: the click is the widget's
    click_canvas_at(viewer, maps.region_centre_world(region), qtbot)
    qtbot.waitUntil(lambda: predict_w.patch_list.count() > 0, timeout=10000)
    assert predict_w.selection_label.text().startswith(f"region {region}")
    listed = [
        predict_w.patch_list.item(i).data(Qt.ItemDataRole.UserRole)
        for i in range(predict_w.patch_list.count())
    ]
    assert listed == list(maps.top_patches(region, predict_w.top_k.value()))

    # 9. export the QuPath GeoJSON with its button
    out = tmp_path / "out.geojson"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    click(qtbot, predict_w.export_buttons["geojson"])
    qtbot.waitUntil(lambda: out.is_file() and _idle("predict-export")(), timeout=60000)
    features = json.loads(out.read_text())["features"]
    assert len(features) == maps.embeddings.n_patches + maps.embeddings.n_regions
    assert viewer.window._qt_window.isVisible() and not shown_errors


@pytest.fixture(scope="module")
def saved_model(gui_cohort, tmp_path_factory):
    """A regional model trained with ``napari-regional-mil train`` on four of the cohort's
    slides (its last two are never seen); a stored threshold other than 0.5."""
    from napari_regional_mil.cli import main

    root = tmp_path_factory.mktemp("saved_model")
    seen = list(gui_cohort.slides[:4])
    labels = root / "cohort.csv"
    labels.write_text("slide,label\n" + "".join(f"{p.stem},{_truth(p)}\n" for p in seen))
    out = root / "model.safetensors"
    code = main(
        [
            "train",
            "--labels",
            str(labels),
            "--cache",
            str(gui_cohort.cache),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--hidden-dim",
            "16",
            "--attention-dim",
            "8",
            "--min-patches",
            "8",
            "--max-patches",
            "24",
            "--val-fraction",
            "0",
            "--threshold",
            "0.4",
            "--seed",
            "3",
        ]
    )
    assert code == 0 and out.is_file()
    return out


def test_a_saved_model_on_a_new_slide(
    make_napari_viewer, gui_cohort, saved_model, tmp_path, qtbot, monkeypatch, settings_file, shown_errors
):
    """File > Open a slide the model has never seen (napari asks for a reader: this plugin,
    remembered), load the saved model with Browse..., predict (the slide is embedded first
    with the model's encoder and tiling), move the threshold, click a region."""
    from napari_regional_mil.model.checkpoint import load_checkpoint

    model_path = saved_model
    new = tmp_path / "new_slide.tif"
    shutil.copy(gui_cohort.slides[5], new)  # not trained on
    viewer = make_napari_viewer(show=True)

    # napari finds two readers for .tif and asks: choose this plugin and remember it
    seen = answer_reader_dialog(qtbot, choose="Regional MIL", remember=True)
    file_open(viewer, [new], monkeypatch)
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=30000)
    assert "Regional MIL" in seen["choices"] and "napari builtins" in seen["choices"]
    (slide,) = viewer.layers
    assert slide.metadata["slide_path"] == str(new)
    from napari.settings import get_settings

    assert get_settings().plugins.extension2reader.get("*.tif") == PLUGIN

    predict_w = open_widget(viewer, "Predict", qtbot)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(model_path), ""))
    click(qtbot, predict_w.browse_button)
    qtbot.waitUntil(lambda: predict_w.model is not None, timeout=30000)
    stored = load_checkpoint(model_path).threshold
    assert stored == pytest.approx(0.4) and predict_w.threshold.value() == pytest.approx(stored)
    assert "model's stored threshold" in predict_w.result.threshold_note.text()
    type_into(qtbot, predict_w.cache_dir, str(tmp_path / "cache"))
    click(qtbot, predict_w.predict_button)
    qtbot.waitUntil(
        lambda: predict_w.maps is not None and _idle("predict")() and not predict_w.layers_pending,
        timeout=120000,
    )
    assert list((tmp_path / "cache").glob("new_slide-*.zarr"))  # embedded with the model's encoder first
    p = float(predict_w.maps.prediction.probabilities[predict_w.maps.prediction.positive_class])
    predict_w.threshold.setValue(min(1.0, p + 0.01))  # the user moves the threshold above p
    assert (
        predict_w.decision_label.text().split()[0]
        == predict_w.maps.prediction.class_names[1 - predict_w.maps.prediction.positive_class]
    )
    assert "yours" in predict_w.result.threshold_note.text()
    region = int(np.argmax(predict_w.maps.prediction.region_attention))
    viewer.layers.selection.active = slide
    click_canvas_at(viewer, predict_w.maps.region_centre_world(region), qtbot)
    qtbot.waitUntil(lambda: predict_w.patch_list.count() > 0, timeout=10000)
    assert predict_w.selection_label.text().startswith(f"region {region}")
    assert viewer.window._qt_window.isVisible() and not shown_errors


def test_a_truncated_slide_through_file_open_says_why(
    make_napari_viewer, embed_slide_path, tmp_path, qtbot, monkeypatch, settings_file, shown_errors
):
    """File > Open of a truncated .svs with this plugin as the default reader: nothing is
    opened, napari's reader dialog says why (the file, "truncated"), the viewer stays usable."""
    data = embed_slide_path.read_bytes()
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(data[: len(data) // 2])
    viewer = make_napari_viewer(show=True)
    slide_w = open_widget(viewer, "Slide", qtbot)
    qtbot.mouseClick(slide_w.default_reader, Qt.MouseButton.LeftButton)
    seen = answer_reader_dialog(qtbot, choose=None)
    file_open(viewer, [bad], monkeypatch)
    qtbot.waitUntil(lambda: "text" in seen, timeout=30000)
    assert "truncated.svs" in seen["text"] and "truncated" in seen["text"].split("truncated.svs", 1)[1]
    assert len(viewer.layers) == 0 and slide_w.slide is None
    # still usable: the same viewer opens a good slide
    file_open(viewer, [embed_slide_path], monkeypatch)
    qtbot.waitUntil(lambda: slide_w.slide_layer is not None, timeout=30000)
    assert viewer.window._qt_window.isVisible()
