"""The Pretrain dock widget on a real viewer: train, preview, hand the encoder to Embed, cancel."""

from __future__ import annotations

import pytest

from napari_regional_mil._widgets import _worker
from napari_regional_mil._widgets.pretrain_widget import PretrainWidget
from napari_regional_mil.encoders import load_encoder

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=30)


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = PretrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.patch_size.setValue(32)
    widget.mpp.setValue(0.5)
    widget.epochs.setValue(2)
    widget.patches.setValue(32)
    return viewer, widget


def _finished(qtbot, widget, timeout=180000):
    qtbot.waitUntil(lambda: widget.job is not None and widget.job.status != "running", timeout=timeout)
    return widget.job.status


def test_autoencoder_from_a_folder_shows_preview_and_reaches_embed_widget(widget, qtbot, pretrain_cohort, tmp_path):
    from napari_regional_mil._widgets.embed_widget import EmbedWidget

    viewer, w = widget
    embed = EmbedWidget(viewer)
    viewer.window.add_dock_widget(embed)
    assert embed.encoder.name.findText("widget-ae") < 0
    w.folder.set_text(str(pretrain_cohort.out_dir))
    w.out.set_text(str(tmp_path / "widget-ae.safetensors"))
    assert not w.labels.isEnabled() and w.preview_label.isVisibleTo(w)
    w.start_button.click()
    assert w.cancel_button.isEnabled() and not w.start_button.isEnabled()
    assert _finished(qtbot, w) == "done"
    assert w.start_button.isEnabled() and not w.cancel_button.isEnabled()
    assert w.result.path == tmp_path / "widget-ae.safetensors"
    assert load_encoder(w.result.path).spec.input_size == 32
    assert w.preview is not None and w.preview.epoch == 2
    pixmap = w.preview_label.pixmap()
    assert pixmap is not None and not pixmap.isNull() and pixmap.height() == (2 * 32 + 2) * 3
    assert "Saved widget-ae.safetensors" in w.status.text() and w.encoder_name.text() == "widget-ae"
    assert embed.encoder.name.findText("widget-ae") >= 0
    embed.encoder.name.setCurrentText("widget-ae")
    assert embed.encoder.choice() == ("widget-ae", {})


def test_mil_from_the_cohort_widget(widget, qtbot, pretrain_cohort, tmp_path):
    from napari_regional_mil._widgets.cohort_widget import CohortWidget

    viewer, w = widget
    cohort = CohortWidget(viewer)
    viewer.window.add_dock_widget(cohort)
    assert cohort.import_csv(pretrain_cohort.labels_csv)
    # the table lists the rows at once; a worker finds their slide files
    qtbot.waitUntil(lambda: all(row.path is not None for row in cohort.table.rows), timeout=60000)
    w.method.setCurrentIndex(1)
    w.source.setCurrentIndex(1)
    w.epochs.setValue(1)
    w.patches.setValue(16)
    assert not w.folder.isEnabled() and not w.labels.isEnabled() and not w.preview_label.isVisibleTo(w)
    w.out.set_text(str(tmp_path / "widget-mil.safetensors"))
    w.start_button.click()
    assert _finished(qtbot, w) == "done"
    spec = load_encoder(tmp_path / "widget-mil.safetensors").spec
    assert spec.extra["method"] == "attention-mil" and spec.extra["classes"] == ["absent", "present"]
    assert "accuracy" in w.result.history[-1]


def test_cancel_writes_no_encoder(widget, qtbot, pretrain_cohort, tmp_path):
    _, w = widget
    w.folder.set_text(str(pretrain_cohort.out_dir))
    w.out.set_text(str(tmp_path / "cancelled.safetensors"))
    w.epochs.setValue(50)
    w.start_button.click()
    qtbot.waitUntil(lambda: "Epoch 1" in w.status.text(), timeout=120000)
    w.cancel_button.click()
    assert _finished(qtbot, w) == "cancelled"
    assert "Cancelled" in w.status.text()
    assert list(tmp_path.iterdir()) == []


def test_missing_fields_are_notifications(widget, notes, tmp_path):
    _, w = widget
    w.start_button.click()
    assert w.job is None and any("choose where to save the encoder" in text for _, text in notes)
    w.out.set_text(str(tmp_path / "e.safetensors"))
    w.method.setCurrentIndex(1)
    w.folder.set_text(str(tmp_path))
    w.start_button.click()
    assert w.job is None and any("needs a labels CSV" in text for _, text in notes)
    w.source.setCurrentIndex(1)
    w.start_button.click()
    assert any("no Cohort widget in this viewer" in text for _, text in notes)
