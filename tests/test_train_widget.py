"""The Train dock widget on a real viewer (under Xvfb)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from safetensors import safe_open

from napari_regional_mil._widgets._worker import running_job
from napari_regional_mil._widgets.cohort_widget import CohortWidget
from napari_regional_mil._widgets.predict_widget import PredictWidget
from napari_regional_mil._widgets.train_widget import TrainWidget
from napari_regional_mil.cli import main

pytestmark = pytest.mark.gui

#: Small settings, given to the widget and to the CLI alike.
FAST = {
    "epochs": 3,
    "hidden_dim": 16,
    "attention_dim": 8,
    "min_patches": 8,
    "max_patches": 24,
    "seed": 5,
    "lr": 3e-3,
    "val_fraction": 0.34,
}


def _tensors(path):
    with safe_open(str(path), framework="pt") as fh:
        names = fh.keys()  # safe_open is not iterable
        return {key: fh.get_tensor(key) for key in names}, json.loads(fh.metadata()["napari_regional_mil"])


@pytest.fixture
def docked(make_napari_viewer, gui_cohort):
    viewer = make_napari_viewer()
    cohort = CohortWidget(viewer)
    cohort.embed_box.set_cache_dir(gui_cohort.cache)
    assert cohort.import_csv(gui_cohort.labels_csv)
    train = TrainWidget(viewer)
    m, o = train.model_fields, train.optim_fields
    m.hidden_dim.setValue(FAST["hidden_dim"])
    m.attention_dim.setValue(FAST["attention_dim"])
    m.min_patches.setValue(FAST["min_patches"])
    m.max_patches.setValue(FAST["max_patches"])
    o.epochs.setValue(FAST["epochs"])
    o.seed.setValue(FAST["seed"])
    o.learning_rate.setValue(FAST["lr"])
    o.val_fraction.setValue(FAST["val_fraction"])
    return SimpleNamespace(viewer=viewer, cohort=cohort, train=train)


def _wait(train, qtbot, timeout=120000):
    qtbot.waitUntil(lambda: running_job("train") is None and train.start_button.isEnabled(), timeout=timeout)


def test_gui_and_cli_train_the_same_model(docked, gui_cohort, tmp_path, qtbot, capsys):
    predict = PredictWidget(docked.viewer)
    train = docked.train
    train.out_path.setText(str(tmp_path / "gui.safetensors"))
    assert train.start() is not None
    assert train.cancel_button.isEnabled()
    _wait(train, qtbot)
    assert train.saved_path == tmp_path / "gui.safetensors"
    # the live plot got one point per epoch, and the Predict widget took the model
    assert [x for x, _ in train.plot.series("train_loss")] == [1.0, 2.0, 3.0]
    assert len(train.plot.data["val_auc"]) == 3
    assert predict.model is not None and predict.model.path == train.saved_path
    assert "handed to the Predict widget" in train.status.text()
    # without cross-validation the dock shows the model's ROC and confusion on its validation slides
    view = train.report_view
    assert view.report is not None and "validation slides" in view.caption.text()
    assert sorted(view.report.slides) == sorted(train.result.validation_slides)
    assert view.pixmap("roc") is not None and view.pixmap("confusion") is not None

    cli = tmp_path / "cli.safetensors"
    assert main(["train", "--labels", str(gui_cohort.labels_csv), "--cache", str(gui_cohort.cache), "--out", str(cli),
                 "--epochs", str(FAST["epochs"]), "--hidden-dim", str(FAST["hidden_dim"]),
                 "--attention-dim", str(FAST["attention_dim"]), "--min-patches", str(FAST["min_patches"]),
                 "--max-patches", str(FAST["max_patches"]), "--seed", str(FAST["seed"]), "--lr", str(FAST["lr"]),
                 "--val-fraction", str(FAST["val_fraction"])]) == 0
    gui_w, gui_meta = _tensors(train.saved_path)
    cli_w, cli_meta = _tensors(cli)
    assert gui_w.keys() == cli_w.keys() and len(gui_w) > 5
    for key in gui_w:
        assert gui_w[key].equal(cli_w[key]), key
    assert gui_meta["model"] == cli_meta["model"] and gui_meta["class_names"] == cli_meta["class_names"]
    assert gui_meta["training"]["train_config"] == cli_meta["training"]["train_config"]
    # and another seed gives another model (the comparison can fail)
    docked.train.optim_fields.seed.setValue(FAST["seed"] + 1)
    train.out_path.setText(str(tmp_path / "other.safetensors"))
    train.start()
    _wait(train, qtbot)
    other, _ = _tensors(tmp_path / "other.safetensors")
    assert any(not other[key].equal(gui_w[key]) for key in gui_w)


def test_one_class_only_is_refused_with_a_notification(docked, tmp_path, shown_notes):
    table = docked.cohort.table
    for i in range(len(table)):
        table.set_label(i, "excluded")
    docked.train.out_path.setText(str(tmp_path / "m.safetensors"))
    assert docked.train.start() is None
    errors = [m for k, m in shown_notes if k == "show_error"]
    assert len(errors) == 1 and "only one class" in errors[0]
    assert running_job("train") is None and docked.train.start_button.isEnabled()


def test_missing_output_folder_and_missing_cohort(make_napari_viewer, docked, tmp_path, shown_notes):
    docked.train.out_path.setText(str(tmp_path / "nope" / "m.safetensors"))
    assert docked.train.start() is None
    lone = TrainWidget(make_napari_viewer())
    lone.out_path.setText(str(tmp_path / "m.safetensors"))
    assert lone.start() is None
    errors = [m for k, m in shown_notes if k == "show_error"]
    assert "does not exist" in errors[0] and "no Cohort widget" in errors[1]


def test_cancel_mid_training_writes_nothing_and_the_viewer_stays_usable(docked, tmp_path, qtbot):
    train = docked.train
    train.optim_fields.epochs.setValue(200)
    train.optim_fields.patience.setValue(200)
    out = tmp_path / "cancelled.safetensors"
    train.out_path.setText(str(out))
    train.start()
    qtbot.waitUntil(lambda: len(train.plot.data["train_loss"]) >= 1, timeout=120000)
    train.cancel_button.click()
    _wait(train, qtbot)
    assert train.job.status == "cancelled" and "no checkpoint" in train.status.text()
    assert list(tmp_path.iterdir()) == []
    docked.viewer.add_points([[1.0, 2.0]])  # still usable
    assert len(docked.viewer.layers) >= 1 and train.start_button.isEnabled()


def test_k_fold_cross_validation_then_the_final_model(docked, tmp_path, qtbot):
    train = docked.train
    train.optim_fields.validation.setCurrentIndex(1)
    train.optim_fields.folds.setValue(2)
    train.optim_fields.epochs.setValue(2)
    train.out_path.setText(str(tmp_path / "cv"))  # the suffix is added
    train.start()
    _wait(train, qtbot, timeout=180000)
    assert train.saved_path == tmp_path / "cv.safetensors" and train.saved_path.is_file()
    report = json.loads((tmp_path / "cv.crossval.json").read_text())
    assert report["n_folds"] == 2 and len(report["folds"]) == 2
    assert "cross-validation AUC" in train.status.text()
    # the ROC curve and the confusion matrix of the pooled out-of-fold predictions, in the dock
    view = train.report_view
    assert view.report is not None and len(view.report.labels) == report["pooled"]["n"]
    assert view.report.auroc == pytest.approx(report["pooled"]["auroc"])
    assert "pooled out-of-fold" in view.caption.text() and "AUROC" in view.caption.text()
    for kind in ("roc", "confusion"):
        pixmap = view.pixmap(kind)
        assert pixmap is not None and pixmap.width() > 100 and pixmap.height() > 100
    # one click saves every plot (PNG and SVG), the metrics and the tables next to the model
    assert view.save_button.isEnabled()
    view.save_button.click()
    qtbot.waitUntil(lambda: view.saved is not None, timeout=60000)
    saved = sorted(p.name for p in view.saved.iterdir())
    assert view.saved == tmp_path / "cv.evaluation"
    for stem in ("roc", "pr", "calibration", "confusion"):
        assert f"{stem}.png" in saved and f"{stem}.svg" in saved
    assert json.loads((view.saved / "metrics.json").read_text())["auroc"] == pytest.approx(view.report.auroc)
