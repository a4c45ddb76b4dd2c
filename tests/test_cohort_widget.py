"""The Cohort dock widget on a real viewer (under Xvfb)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_regional_mil._widgets._cohort_model import (
    EMBEDDED,
    LABEL,
    PREDICTION,
    SLIDE,
)
from napari_regional_mil._widgets._state import viewer_state
from napari_regional_mil._widgets._worker import running_job
from napari_regional_mil._widgets.cohort_widget import CohortWidget
from napari_regional_mil.training.cohort import read_cohort

pytestmark = pytest.mark.gui


def _column(widget, column):
    model = widget.model
    return [model.data(model.index(r, column)) for r in range(model.rowCount())]


@pytest.fixture
def cohort(make_napari_viewer, gui_cohort, qtbot):
    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    widget.embed_box.set_cache_dir(gui_cohort.cache)
    widget.embed_box.tiling.set_params(gui_cohort.tiling)
    assert widget.import_csv(gui_cohort.labels_csv)
    qtbot.waitUntil(lambda: running_job("cohort-status") is None, timeout=30000)  # files and caches looked up
    return SimpleNamespace(viewer=viewer, widget=widget)


def test_import_shows_the_table_and_is_found_by_other_widgets(cohort, gui_cohort):
    w = cohort.widget
    names = [p.stem for p in gui_cohort.slides]
    assert _column(w, SLIDE) == names
    expected = [row.label for row in read_cohort(gui_cohort.labels_csv).rows]
    assert _column(w, LABEL) == expected
    assert _column(w, EMBEDDED) == ["yes"] * 6  # the fixture's cache holds them all
    assert all(row.path == p.resolve() for row, p in zip(w.table.rows, gui_cohort.slides))
    assert w.table.class_names == list(gui_cohort.class_names)
    assert "embedded: 6/6" in w.summary.text()
    state = viewer_state(cohort.viewer)  # how the Train and Pretrain widgets find the cohort
    assert state.cohort is w.table and state.cache_dir == w.cache_dir()


def test_label_with_the_dropdown_add_rename_class_and_export(cohort, tmp_path):
    w = cohort.widget
    w.classes.add_class("unsure")
    assert w.bulk_label.findText("unsure") >= 0
    # the label cell's editor is a combo box of the class names (plus "" to clear)
    index = w.model.index(2, LABEL)
    editor = w.delegate.createEditor(w.view.viewport(), None, index)
    assert [editor.itemText(i) for i in range(editor.count())] == ["", "excluded", "inflamed", "unsure"]
    editor.setCurrentText("unsure")
    w.delegate.setModelData(editor, w.model, index)
    assert w.table.rows[2].label == "unsure"
    assert "unsure: 1" in w.summary.text()
    # rename a class: the rows follow
    assert w.classes.rename_class("unsure", "doubtful")
    assert w.model.data(index) == "doubtful"
    # bulk label of a selection
    w.view.selectRow(0)
    w.label_selected("doubtful")
    assert w.table.rows[0].label == "doubtful"
    out = w.export_csv(tmp_path / "cohort.csv")
    rows = read_cohort(out).rows
    assert [r.label for r in rows][:3] == ["doubtful", w.table.rows[1].label, "doubtful"]
    assert [r.name for r in rows] == _column(w, SLIDE)


def test_bad_csv_notifies_the_row_and_keeps_the_table(cohort, tmp_path, shown_notes):
    w = cohort.widget
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label,split\nsynth_000,excluded,train\nsynth_001,inflamed,later\n")
    assert not w.import_csv(bad)
    errors = [m for k, m in shown_notes if k == "show_error"]
    assert len(errors) == 1 and "bad.csv line 3" in errors[0] and "later" in errors[0]
    assert len(w.table) == 6


def test_refused_edit_and_unlabelled_export_notify(cohort, tmp_path, shown_notes):
    w = cohort.widget
    assert not w.model.setData(w.model.index(0, LABEL), "no-such-class", Qt.ItemDataRole.EditRole)
    assert w.export_csv(tmp_path / "x.csv") is not None
    w.classes.remove_class("excluded")
    assert w.export_csv(tmp_path / "y.csv") is None
    errors = [m for k, m in shown_notes if k == "show_error"]
    assert "unknown class 'no-such-class'" in errors[0] and "has no label" in errors[1]
    assert not (tmp_path / "y.csv").exists()


def test_embed_missing_in_the_background(cohort, tmp_path, qtbot, gui_cohort):
    w = cohort.widget
    w.table.remove(range(2, 6))  # two slides keep it quick
    w._reset()
    w.embed_box.set_cache_dir(tmp_path / "cache")
    w.refresh_embedded()
    assert _column(w, EMBEDDED) == ["no", "no"]
    w.embed_box.embed_button.click()
    assert w.embed_box.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: running_job("embed") is None and w.embed_box.embed_button.isEnabled(), timeout=120000)
    assert _column(w, EMBEDDED) == ["yes", "yes"]
    assert len(list((tmp_path / "cache").glob("*.zarr"))) == 2
    assert "Embedded 2 slide(s)" in w.embed_box.status.text()


def _open_row(w, row, qtbot):
    """Open a row as a double-click does (reading and tiling run in workers); its slide layer."""
    assert w.open_row(row) is not None
    qtbot.waitUntil(lambda: running_job("cohort-open") is None and running_job("tiling") is None, timeout=60000)
    return viewer_state(w.viewer).slide_layer


def test_double_click_opens_the_slide_with_tissue_and_grids(cohort, qtbot, gui_cohort):
    w, viewer = cohort.widget, cohort.viewer
    first = _open_row(w, 0, qtbot)
    name = gui_cohort.slides[0].stem
    assert first.name == name and first.metadata["cache_dir"] == str(gui_cohort.cache)
    names = [layer.name for layer in viewer.layers]
    assert f"tissue ({name})" in names and f"region grid ({name})" in names and f"patch grid ({name})" in names
    tiling = first.metadata["tiling"]
    assert tiling.params.patch_size == 32 and tiling.params.region_size == 4
    # the region grid lies on the slide: its extent is the tissue regions' level-0 box, in microns
    grid = viewer.layers[f"region grid ({name})"]
    lo = np.asarray(grid.extent.world[0])
    hi = np.asarray(grid.extent.world[1])
    mpp = 0.5
    assert lo.min() >= -0.5 * mpp - 1e-6
    assert hi[0] <= 3 * 4 * 32 * mpp and hi[1] <= 4 * 4 * 32 * mpp
    # opening another slide hides the first and its layers
    second = _open_row(w, 1, qtbot)
    assert second.visible and not first.visible
    assert not viewer.layers[f"region grid ({name})"].visible


def test_prediction_column_follows_the_predict_widget_and_its_threshold(cohort, gui_cohort):
    """A prediction shown by the Predict widget appears in the table, decided at the threshold
    the user sets in the Predict widget (not the model's)."""
    from napari_regional_mil._widgets.predict_widget import PredictWidget
    from napari_regional_mil.training.prediction import SlidePrediction

    predict = PredictWidget(cohort.viewer)
    name = gui_cohort.slides[3].stem
    prediction = SlidePrediction(name, ("excluded", "inflamed"), np.array([0.2, 0.8]), 0.5, np.ones(3) / 3)
    predict.state.announce_prediction(SimpleNamespace(prediction=prediction))
    assert _column(cohort.widget, PREDICTION)[3] == "inflamed 0.80"
    predict.threshold.setValue(0.85)  # the user's threshold, above p(inflamed)
    assert _column(cohort.widget, PREDICTION)[3] == "excluded 0.20"
    assert predict.threshold.value() == 0.85


def test_evaluate_the_test_split_colours_rows_and_saves_plots(cohort, gui_cohort, tmp_path, qtbot, shown_notes):
    from qtpy.QtGui import QBrush

    from napari_regional_mil._widgets._cohort_model import OUTCOME_COLOUR
    from napari_regional_mil.cli import main
    from napari_regional_mil.model.checkpoint import load_checkpoint

    w = cohort.widget
    state = viewer_state(cohort.viewer)
    assert w.evaluate() is None  # no model yet: a notification, no job
    assert "no model" in [m for k, m in shown_notes if k == "show_error"][-1]
    for i in (0, 1, 4, 5):  # two slides of each class held out
        w.table.set_split(i, "test")
    labels = tmp_path / "split.csv"
    w.table.save_csv(labels)
    model = tmp_path / "m.safetensors"
    assert main(["train", "--labels", str(labels), "--cache", str(gui_cohort.cache), "--out", str(model), "--epochs",
                 "2", "--min-epochs", "1", "--hidden-dim", "16", "--attention-dim", "8", "--min-patches", "8",
                 "--max-patches", "24", "--val-fraction", "0"]) == 0
    state.model = load_checkpoint(model)
    state.threshold = 0.5
    assert w.evaluate() is not None
    qtbot.waitUntil(lambda: w.evaluate_box.report is not None, timeout=120000)
    report = w.evaluate_box.report
    assert sorted(report.slides) == sorted(w.table.rows[i].name for i in (0, 1, 4, 5))
    for i, row in enumerate(w.table.rows):
        brush = w.model.data(w.model.index(i, SLIDE), Qt.ItemDataRole.BackgroundRole)
        if i in (0, 1, 4, 5):
            correct = bool(report.correct[report.slides.index(row.name)])
            assert row.outcome == ("correct" if correct else "incorrect")
            assert isinstance(brush, QBrush) and brush.color() == OUTCOME_COLOUR[row.outcome]
        else:
            assert row.outcome == "" and brush is None  # training slides are not scored
    box = w.evaluate_box
    assert "4 test slides" in box.caption.text() and box.pixmap("roc") is not None and box.pixmap("confusion")
    box.save_button.click()
    qtbot.waitUntil(lambda: box.saved is not None, timeout=60000)
    assert box.saved == tmp_path / "m.test-evaluation"
    assert {"roc.png", "roc.svg", "confusion.png", "metrics.json", "predictions.csv"} <= {
        p.name for p in box.saved.iterdir()}
