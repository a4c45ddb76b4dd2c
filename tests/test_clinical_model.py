"""Clinical variables in the first model: fusion, training, contributions, checkpoint, baseline."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_regional_mil.clinical import (
    ClinicalRecord,
    fit_clinical_encoding,
    parse_clinical_columns,
)
from napari_regional_mil.errors import ClinicalError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.checkpoint import load_checkpoint, save_checkpoint
from napari_regional_mil.model.clinical_baseline import fit_clinical_logistic
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.first_model import FirstModel, make_bag
from napari_regional_mil.training.metrics import roc_auc
from napari_regional_mil.training.predict import predict_bags, predict_slide
from napari_regional_mil.training.train import TrainConfig, train_model

SPEC = parse_clinical_columns("grade,age,sex")
CONFIG = TrainConfig(epochs=20, min_epochs=20, val_fraction=0.0, learning_rate=3e-3, threads=1)


def _config(slides, **kwargs):
    return ModelConfig(
        input_dim=slides[0].embeddings.embedding_dim,
        hidden_dim=16,
        attention_dim=8,
        selection=SelectionConfig(min_patches=16, max_patches=48, patches_per_region=3),
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(clinical_synthetic):
    """A fused and a slide-only model trained on 48 slides, and 24 held-out test slides."""
    train, classes, _ = clinical_synthetic(48, seed=20)
    test, _, context = clinical_synthetic(24, seed=21)
    fused = run_job(
        train_model(train, class_names=classes, model_config=_config(train), config=CONFIG, clinical=SPEC)
    )
    slide_only = run_job(train_model(train, class_names=classes, model_config=_config(train), config=CONFIG))
    return fused, slide_only, train, test, context


def test_fusion_beats_each_source_alone_on_held_out_slides(trained):
    """The label needs the slide's context AND the grade: only the fused model has both."""
    fused, slide_only, train, test, _ = trained
    labels = np.array([s.label for s in test])
    p_fused = predict_bags(
        fused.model, [make_bag(s.embeddings, fused.model.config, clinical=s.clinical) for s in test]
    )
    p_slide = predict_bags(slide_only.model, [make_bag(s.embeddings, slide_only.model.config) for s in test])
    baseline = fit_clinical_logistic(
        [s.clinical for s in train], np.array([s.label for s in train]), spec=SPEC, n_classes=2
    )
    p_clinical = baseline.predict_proba([s.clinical for s in test])
    auc = {
        k: roc_auc(p, labels) for k, p in (("fused", p_fused), ("slide", p_slide), ("clinical", p_clinical))
    }
    assert auc["fused"] >= 0.95
    assert auc["slide"] <= 0.9 and auc["clinical"] <= 0.9
    assert fused.checkpoint.training["clinical"] == ["grade", "age", "sex"]
    assert fused.model.config.clinical.names == ("grade", "age", "sex")


def test_logits_are_the_slide_term_plus_the_clinical_term(trained):
    fused, _, _, test, _ = trained
    model = fused.model
    for slide in test[:4]:
        bag = make_bag(slide.embeddings, model.config, clinical=slide.clinical)
        with torch.no_grad():
            out = model(bag)
            rebuilt = out.slide_logits + model.clinical_logits(bag.clinical) + model.classifier.bias
        torch.testing.assert_close(rebuilt, out.logits, rtol=1e-5, atol=1e-5)
    # the reference is the mean slide term over the training slides
    assert not torch.equal(model.slide_logit_reference, torch.zeros(2))


def test_contributions_follow_the_rule_and_add_up(trained):
    fused, _, _, test, context = trained
    grade, slide_part, distractors = [], [], []
    for slide, ctx in zip(test, context):
        pred = predict_slide(fused.checkpoint, slide.embeddings, clinical=slide.clinical)
        c = pred.contributions
        assert c.class_index == 1 and c.probability == pytest.approx(pred.probabilities[1], abs=1e-6)
        assert set(c.variables) == {"grade", "age", "sex"} and c.references["grade"] == "G3"
        assert c.as_row().keys() == {
            "contribution_slide",
            "contribution_grade",
            "contribution_age",
            "contribution_sex",
        }
        if slide.clinical.values["grade"] == "G3":
            assert c.variables["grade"] == 0.0  # at its reference level
        elif ctx == "inflamed":
            grade.append(c.variables["grade"])  # G1/G2 pulls an inflamed slide down
        slide_part.append((ctx, c.slide))
        distractors.append(abs(c.variables["age"]) + abs(c.variables["sex"]))
        # two classes: the log-odds contributions add up to the change from all-reference
        encoding = fused.model.config.clinical
        everything = encoding.encode(slide.clinical)
        for name in encoding.names:
            everything = encoding.with_reference(everything, name)
        with torch.no_grad():
            z = fused.model.slide_logit_reference + fused.model.clinical_logits(torch.from_numpy(everything))
            z = z + fused.model.classifier.bias
        all_reference = float(z[1] - z[0])
        total = c.slide_log_odds + sum(c.variable_log_odds.values())
        log_odds = np.log(c.probability / (1 - c.probability))
        assert total == pytest.approx(log_odds - all_reference, abs=1e-3)
    assert grade and max(grade) < -0.1
    inflamed = [v for ctx, v in slide_part if ctx == "inflamed"]
    excluded = [v for ctx, v in slide_part if ctx == "excluded"]
    assert min(inflamed) > max(excluded)
    assert np.mean(distractors) < 0.25 * np.mean(np.abs(grade))


def test_missing_value_with_an_indicator_never_seen_in_training_changes_nothing(clinical_synthetic):
    """Zero-initialised projection: a column that is always 0 in training keeps no weight."""
    train, classes, _ = clinical_synthetic(12, seed=3)
    complete = [
        dataclasses.replace(s, clinical=ClinicalRecord({**s.clinical.values, "age": "60"}, s.clinical.where))
        for s in train
    ]
    fast = dataclasses.replace(CONFIG, epochs=3, min_epochs=3)
    spec = SPEC.knowing([ClinicalRecord({"grade": "G4"})])  # a level of the table no training slide has
    model = run_job(
        train_model(complete, class_names=classes, model_config=_config(complete), config=fast, clinical=spec)
    ).model
    age = model.config.clinical.variable("age")
    assert age.n_missing == 0 and age.missing_indicator
    for name in ("age:missing", "grade=G4"):
        column = model.config.clinical.columns.index(name)
        assert torch.all(model.clinical_projection.weight[:, column] == 0)
    assert torch.any(
        model.clinical_projection.weight[:, model.config.clinical.columns.index("grade=G1")] != 0
    )
    slide = complete[0]
    missing = ClinicalRecord({**slide.clinical.values, "age": ""}, "new.csv line 2")
    at_mean = ClinicalRecord({**slide.clinical.values, "age": str(age.mean)}, "new.csv line 2")
    a = predict_slide(model, slide.embeddings, clinical=missing).probabilities
    b = predict_slide(model, slide.embeddings, clinical=at_mean).probabilities
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_model_with_clinical_inputs_refuses_to_run_without_them(trained):
    fused, _, _, test, _ = trained
    with pytest.raises(
        ClinicalError, match=r"^slide 'synth_000': the model takes clinical variables \(grade, age, sex\)"
    ):
        predict_slide(fused.checkpoint, test[0].embeddings)
    with pytest.raises(ClinicalError, match=r"^slide 'synth_000'"):
        fused.model(make_bag(test[0].embeddings, dataclasses.replace(fused.model.config, clinical=None)))


def test_training_needs_clinical_values_for_every_slide(clinical_synthetic):
    train, classes, _ = clinical_synthetic(8, seed=4)
    train[3] = dataclasses.replace(train[3], clinical=None)
    with pytest.raises(ClinicalError, match=r"^slide 'synth_003': no clinical values"):
        run_job(
            train_model(train, class_names=classes, model_config=_config(train), config=CONFIG, clinical=SPEC)
        )


def test_encoding_is_fitted_on_training_slides_only(clinical_synthetic):
    slides, classes, _ = clinical_synthetic(16, seed=5)
    validation = [
        dataclasses.replace(
            s, clinical=ClinicalRecord({**s.clinical.values, "age": "1000"}, s.clinical.where)
        )
        for s in slides[12:]
    ]
    fast = dataclasses.replace(CONFIG, epochs=1, min_epochs=1)
    result = run_job(
        train_model(
            slides[:12],
            class_names=classes,
            model_config=_config(slides),
            config=fast,
            validation=validation,
            clinical=SPEC,
        )
    )
    expected = fit_clinical_encoding([s.clinical for s in slides[:12]], SPEC)
    assert result.model.config.clinical == expected


def test_checkpoint_stores_the_encoding_and_gives_the_same_prediction(trained, tmp_path):
    fused, _, _, test, _ = trained
    path = save_checkpoint(fused.checkpoint, tmp_path / "fused.safetensors")
    header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    stored = json.loads(header["__metadata__"]["napari_regional_mil"])["model"]["clinical"]
    assert [v["name"] for v in stored["variables"]] == ["grade", "age", "sex"]
    assert stored["variables"][0]["levels"] == ["G1", "G2", "G3"] and "mean" in stored["variables"][1]
    loaded = load_checkpoint(path)
    assert loaded.config.clinical == fused.model.config.clinical
    a = predict_slide(fused.checkpoint, test[1].embeddings, clinical=test[1].clinical)
    b = predict_slide(loaded, test[1].embeddings, clinical=test[1].clinical)
    assert np.array_equal(a.probabilities, b.probabilities)
    assert a.contributions == b.contributions


def test_clinical_only_baseline_learns_the_grade(clinical_synthetic):
    slides, _, _ = clinical_synthetic(40, seed=6)
    labels = np.array([s.label for s in slides])
    model = fit_clinical_logistic([s.clinical for s in slides], labels, spec=SPEC, n_classes=2)
    probs = model.predict_proba([s.clinical for s in slides])
    assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1)
    g3 = np.array([s.clinical.values["grade"] == "G3" for s in slides])
    assert probs[g3, 1].min() > probs[~g3, 1].max()  # the grade is what it can use
    assert 0.75 <= roc_auc(probs, labels) <= 0.9  # about 0.83: a third of the negatives are G3
    low = next(s for s in slides if s.clinical.values["grade"] == "G1")
    c = model.contributions(low.clinical, 1)
    assert c.slide is None and c.variables["grade"] < -0.1
    assert c.probability == pytest.approx(model.predict_proba([low.clinical])[0, 1])
    with pytest.raises(ClinicalError, match="category 'G9' was never seen"):
        model.predict_proba([ClinicalRecord({"grade": "G9", "age": "50", "sex": "F"}, "t.csv line 2")])


def test_fused_model_of_every_type_runs(clinical_synthetic):
    slides, _, _ = clinical_synthetic(8, seed=7)
    enc = fit_clinical_encoding([s.clinical for s in slides], SPEC)
    grade = slides[0].clinical.values["grade"]
    other = ClinicalRecord(
        {**slides[0].clinical.values, "grade": next(g for g in ("G1", "G2", "G3") if g != grade)}
    )
    for model_type in ("regional", "abmil", "mean"):
        torch.manual_seed(0)
        model = FirstModel(_config(slides, model_type=model_type, clinical=enc)).eval()
        torch.nn.init.normal_(model.clinical_projection.weight)
        a = predict_slide(model, slides[0].embeddings, clinical=slides[0].clinical)
        b = predict_slide(model, slides[0].embeddings, clinical=other)
        assert not np.allclose(a.probabilities, b.probabilities)  # the clinical values reach the logits
        assert a.contributions is not None
