"""Clinical variables in the dock: the Predict widget's form and contributions (under Xvfb)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from napari_regional_mil._widgets._clinical_fields import (
    MISSING_TEXT,
    ClinicalFields,
    ClinicalForm,
)
from napari_regional_mil._widgets._state import viewer_state
from napari_regional_mil._widgets.predict_widget import PredictWidget
from napari_regional_mil.clinical import ClinicalRecord, parse_clinical_columns

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def clinical_model(tmp_path_factory):
    """A synthetic slide and a model trained on it with clinical variables grade and age.

    ``grade`` is required (no missing value in training, "refuse" policy); trained 2 epochs
    on this slide's embeddings and a reversed copy through the real pipeline.
    """
    from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.model.config import ModelConfig, SelectionConfig
    from napari_regional_mil.synth.slides import write_synthetic_slide
    from napari_regional_mil.tiling import TilingParams
    from napari_regional_mil.training.datasets import LabelledSlide
    from napari_regional_mil.training.train import TrainConfig, train_model

    root = tmp_path_factory.mktemp("clinical_predict")
    rng = np.random.default_rng(0)
    types = np.full((9, 13), -1, np.int16)
    types[1:8, 1:12] = rng.integers(0, 6, size=(7, 11))
    slide_path = write_synthetic_slide(root / "slide_c.tif", types, patch_px=64, mpp=0.5, seed=1)
    params = TilingParams(patch_size=64, target_mpp=0.5, region_size=4)
    result = run_job(
        embed_slide(slide_path, cache_dir=root / "cache", tiling_params=params, encoder="builtin-he")
    )
    emb = load_slide_embeddings(result.cache_path)
    other = dataclasses.replace(emb, slide_name="slide_d", features=emb.features[::-1].copy())
    slides = [
        LabelledSlide(
            emb, 0, "p0", clinical=ClinicalRecord({"grade": "G1", "age": "50"}, "labels.csv line 2")
        ),
        LabelledSlide(
            other, 1, "p1", clinical=ClinicalRecord({"grade": "G3", "age": "70"}, "labels.csv line 3")
        ),
    ]
    config = ModelConfig(
        input_dim=emb.embedding_dim,
        hidden_dim=16,
        attention_dim=8,
        selection=SelectionConfig(min_patches=8, max_patches=16, patches_per_region=2),
    )
    spec = parse_clinical_columns("grade:categorical", missing="refuse")
    trained = run_job(
        train_model(
            slides,
            class_names=("negative", "positive"),
            model_config=config,
            config=TrainConfig(epochs=2, val_fraction=0.0, min_epochs=1),
            clinical=spec,
        )
    )
    indicator = run_job(
        train_model(
            slides,
            class_names=("negative", "positive"),
            model_config=config,
            config=TrainConfig(epochs=2, val_fraction=0.0, min_epochs=1),
            clinical=parse_clinical_columns("grade,age"),
        )
    )
    return SimpleNamespace(
        slide_path=slide_path,
        cache=root / "cache",
        checkpoint=trained.checkpoint,
        indicator=indicator.checkpoint,
        emb=emb,
    )


@pytest.fixture
def opened(make_napari_viewer, clinical_model):
    from napari_regional_mil._widgets._layers import add_slide_layer
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    slide = open_slide(clinical_model.slide_path)
    layer = add_slide_layer(viewer, slide)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.cache_dir.setText(str(clinical_model.cache))
    yield SimpleNamespace(viewer=viewer, widget=widget, layer=layer)
    slide.close()


def test_form_is_generated_from_the_checkpoints_schema(opened, clinical_model):
    w = opened.widget
    assert not w.clinical_form.isVisibleTo(w)  # no model: no form
    viewer_state(opened.viewer).model = clinical_model.checkpoint
    form = w.clinical_form
    assert form.isVisibleTo(w) and list(form.fields) == ["grade"]
    grade = form.fields["grade"]
    assert [grade.itemText(i) for i in range(grade.count())] == ["G1", "G3"]  # required: no "(missing)"
    assert grade.currentIndex() == -1 and "required" in form.note.text()
    viewer_state(opened.viewer).model = clinical_model.indicator
    assert list(form.fields) == ["grade", "age"]
    assert [form.fields["grade"].itemText(i) for i in range(3)] == [MISSING_TEXT, "G1", "G3"]
    assert "training mean 60" in form.fields["age"].placeholderText()
    viewer_state(opened.viewer).model = None
    assert not form.isVisibleTo(w)


def test_predict_refuses_a_missing_required_value(opened, clinical_model, notes, qtbot):
    from napari_regional_mil._widgets._worker import running_job

    w = opened.widget
    viewer_state(opened.viewer).model = clinical_model.checkpoint
    w.predict()
    errors = [m for k, m in notes if k == "error"]
    assert len(errors) == 1 and "column 'grade' has no value" in errors[0] and "slide_c" in errors[0]
    assert running_job("predict") is None and w.maps is None  # nothing started


def test_predict_shows_contributions_next_to_the_slide(opened, clinical_model, notes, qtbot):
    from napari_regional_mil.training.predict import predict_slide

    w = opened.widget
    viewer_state(opened.viewer).model = clinical_model.indicator
    w.clinical_form.fields["grade"].setCurrentText("G3")
    w.clinical_form.fields["age"].setText("")  # missing: allowed, the model has indicators
    with qtbot.waitSignal(w.predicted, timeout=60000):
        w.predict_button.click()
    record = ClinicalRecord({"grade": "G3", "age": ""})
    expected = predict_slide(clinical_model.indicator, w.maps.embeddings, clinical=record)
    assert w.maps.prediction.probabilities == pytest.approx(expected.probabilities, abs=1e-6)
    table = w.result.contributions
    assert w.result.contributions_label.isVisibleTo(w) and table.rowCount() == 3
    rows = {table.item(r, 0).text(): (table.item(r, 1).text(), table.item(r, 2).text()) for r in range(3)}
    assert rows["grade"] == ("G3", f"{expected.contributions.variables['grade']:+.3f}")
    assert rows["age"] == ("", f"{expected.contributions.variables['age']:+.3f}")
    assert rows["slide"][1] == f"{expected.contributions.slide:+.3f}"
    assert "Contributions to p(positive)" in w.result.contributions_label.text()
    assert not [m for k, m in notes if k == "error"]


def test_form_fills_from_the_open_slides_cohort_row(opened, clinical_model):
    from napari_regional_mil.training.cohort_table import CohortTable

    w = opened.widget
    table = CohortTable(["negative", "positive"])
    table.add_slides([clinical_model.slide_path])
    table.rows[0].extra = {"Grade": "g3", "age": "NA"}
    viewer_state(opened.viewer).model = clinical_model.indicator
    viewer_state(opened.viewer).publish_cohort(table, None)
    assert w.clinical_form.values() == {"grade": "G3", "age": ""}


def test_form_refuses_text_in_a_numeric_field(qtbot, clinical_model):
    form = ClinicalForm()
    qtbot.addWidget(form)
    form.set_encoding(clinical_model.indicator.config.clinical)
    form.fill({"grade": "G1", "age": "old"})
    from napari_regional_mil.errors import ClinicalError

    with pytest.raises(ClinicalError, match=r"^Predict form, slide 'x': column 'age': 'old' is not a number"):
        form.record("x")
    form.fill({"grade": "G7", "age": "40"})  # a level training never saw is shown, then refused
    with pytest.raises(ClinicalError, match="category 'G7' was never seen"):
        form.record("x")


def test_train_fields_list_the_tables_other_columns(qtbot):
    fields = ClinicalFields()
    qtbot.addWidget(fields)
    assert fields.spec() is None and "no other columns" in fields.summary.text()
    fields.set_columns(["grade", "age", "sex"])
    fields.set_selected(["age", "grade"])
    fields.missing.setCurrentText("refuse")
    spec = fields.spec()
    assert spec.names == ("grade", "age") and spec.missing == "refuse"
    fields.set_columns(["grade", "age", "bmi"])  # refreshed: the user's checks stay
    assert fields.selected() == ("grade", "age")


# -- the Train widget: the table's other columns, trained as the CLI's --clinical --------------

TRAIN_FAST = {
    "epochs": 2,
    "hidden_dim": 16,
    "attention_dim": 8,
    "min_patches": 8,
    "max_patches": 24,
    "seed": 5,
    "val_fraction": 0.34,
}


@pytest.fixture
def clinical_csv(gui_cohort, tmp_path):
    """The GUI cohort's labels with clinical columns grade and age (one age missing)."""
    import csv

    rows = list(csv.reader(gui_cohort.labels_csv.open()))
    grades, ages = ["G1", "G3", "G2", "G3", "G1", "G3"], ["51", "", "66", "70", "48", "59"]
    path = gui_cohort.labels_csv.parent / "labels_clinical.csv"
    lines = [rows[0] + ["grade", "age"]] + [r + [g, a] for r, g, a in zip(rows[1:], grades, ages)]
    path.write_text("\n".join(",".join(r) for r in lines) + "\n")
    yield path
    path.unlink()


@pytest.fixture
def train_docked(make_napari_viewer, gui_cohort, clinical_csv):
    from napari_regional_mil._widgets.cohort_widget import CohortWidget
    from napari_regional_mil._widgets.train_widget import TrainWidget

    viewer = make_napari_viewer()
    cohort = CohortWidget(viewer)
    cohort.embed_box.set_cache_dir(gui_cohort.cache)
    assert cohort.import_csv(clinical_csv)
    train = TrainWidget(viewer)
    m, o = train.model_fields, train.optim_fields
    m.hidden_dim.setValue(TRAIN_FAST["hidden_dim"])
    m.attention_dim.setValue(TRAIN_FAST["attention_dim"])
    m.min_patches.setValue(TRAIN_FAST["min_patches"])
    m.max_patches.setValue(TRAIN_FAST["max_patches"])
    o.epochs.setValue(TRAIN_FAST["epochs"])
    o.seed.setValue(TRAIN_FAST["seed"])
    o.val_fraction.setValue(TRAIN_FAST["val_fraction"])
    return SimpleNamespace(viewer=viewer, cohort=cohort, train=train)


def test_train_widget_lists_the_columns_and_trains_as_the_cli(
    train_docked, gui_cohort, clinical_csv, tmp_path, qtbot
):
    import json

    from safetensors import safe_open

    from napari_regional_mil._widgets._worker import running_job
    from napari_regional_mil.cli import main

    train = train_docked.train
    fields = train.clinical_fields
    assert [fields.list.item(i).text() for i in range(fields.list.count())] == ["grade", "age"]
    fields.set_selected(["grade", "age"])
    train.out_path.setText(str(tmp_path / "gui.safetensors"))
    assert train.start() is not None
    qtbot.waitUntil(lambda: running_job("train") is None and train.start_button.isEnabled(), timeout=120000)
    assert train.saved_path == tmp_path / "gui.safetensors"
    cli = tmp_path / "cli.safetensors"
    assert (
        main(
            [
                "train",
                "--labels",
                str(clinical_csv),
                "--cache",
                str(gui_cohort.cache),
                "--out",
                str(cli),
                "--clinical",
                "grade,age",
                "--epochs",
                "2",
                "--hidden-dim",
                "16",
                "--attention-dim",
                "8",
                "--min-patches",
                "8",
                "--max-patches",
                "24",
                "--seed",
                "5",
                "--val-fraction",
                "0.34",
            ]
        )
        == 0
    )

    def tensors(path):
        with safe_open(str(path), framework="pt") as fh:
            names = fh.keys()  # safe_open is not a mapping: it is not iterable
            return {k: fh.get_tensor(k) for k in names}, json.loads(fh.metadata()["napari_regional_mil"])

    gui_w, gui_meta = tensors(train.saved_path)
    cli_w, cli_meta = tensors(cli)
    assert "clinical_projection.weight" in gui_w and gui_w.keys() == cli_w.keys()
    assert all(gui_w[k].equal(cli_w[k]) for k in gui_w)
    assert gui_meta["model"]["clinical"] == cli_meta["model"]["clinical"]
    assert [v["name"] for v in gui_meta["model"]["clinical"]["variables"]] == ["grade", "age"]


def test_train_widget_refuses_text_in_a_numeric_column_before_starting(train_docked, tmp_path, notes):
    from napari_regional_mil._widgets._worker import running_job

    train = train_docked.train
    table = train_docked.cohort.table
    table.rows[3].extra["age"] = "old"
    train.clinical_fields.set_selected(["age"])
    train.out_path.setText(str(tmp_path / "m.safetensors"))
    assert train.start() is None and running_job("train") is None
    errors = [m for k, m in notes if k == "error"]
    assert len(errors) == 1 and "column 'age': 'old' is not a number" in errors[0] and "line 5" in errors[0]
    assert not (tmp_path / "m.safetensors").exists()
