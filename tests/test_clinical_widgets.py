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
from napari_regional_mil.model.clinical import ClinicalRecord, parse_clinical_columns

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
