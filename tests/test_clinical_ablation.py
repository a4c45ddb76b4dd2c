"""Ablations: fused, slide-only and clinical-only models on the same folds."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from napari_regional_mil.clinical import parse_clinical_columns
from napari_regional_mil.errors import ClinicalError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.clinical_baseline import fit_clinical_logistic
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.training.ablation import ARMS, clinical_ablation
from napari_regional_mil.training.metrics import roc_auc
from napari_regional_mil.training.train import TrainConfig

SPEC = parse_clinical_columns("grade,age,sex")


def _config(slides):
    return ModelConfig(
        input_dim=slides[0].embeddings.embedding_dim,
        hidden_dim=16,
        attention_dim=8,
        selection=SelectionConfig(min_patches=16, max_patches=48),
    )


def test_three_arms_on_the_same_folds(clinical_synthetic, tmp_path):
    slides, classes, _ = clinical_synthetic(16, seed=30)
    config = TrainConfig(epochs=2, min_epochs=1, val_fraction=0.25, threads=1)
    events = []
    job = clinical_ablation(
        slides, class_names=classes, clinical=SPEC, n_folds=2, model_config=_config(slides), config=config
    )
    result = run_job(job, events.append)
    assert set(result.arms) == set(ARMS) and events[-1].fraction == 1.0
    assert result.labels == {s.name: s.label for s in slides}
    for arm in ARMS:
        assert set(result.arms[arm].probabilities) == set(result.labels)
        assert len(result.arms[arm].fold_aucs) == 2
    # the clinical-only arm is a logistic model fitted on each fold's training slides
    fold1 = [s for s in slides if result.folds[s.name] == 1]
    rest = [s for s in slides if result.folds[s.name] == 2]
    spec = SPEC.knowing([s.clinical for s in slides])  # levels of the whole table
    model = fit_clinical_logistic(
        [s.clinical for s in rest], np.array([s.label for s in rest]), spec=spec, n_classes=2
    )
    expected = model.predict_proba([s.clinical for s in fold1])
    got = np.array([result.arms["clinical_only"].probabilities[s.name] for s in fold1])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert result.arms["clinical_only"].fold_aucs[0] == pytest.approx(
        roc_auc(expected, [s.label for s in fold1])
    )
    record = json.loads(json.dumps(result.to_json(), allow_nan=False))  # strict JSON: no NaN
    assert set(record["arms"]) == set(ARMS) and record["clinical"] == ["grade", "age", "sex"]
    assert "fused" in result.summary() and "clinical_only" in result.summary()
    path = result.write_predictions(tmp_path / "ablation_predictions.csv")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and "fused_p_positive" in rows[0] and "clinical_only_p_negative" in rows[0]
    for row in rows:
        assert float(row["fused_p_positive"]) + float(row["fused_p_negative"]) == pytest.approx(1, abs=1e-5)


def test_a_slide_without_clinical_values_stops_before_training(clinical_synthetic):
    slides, classes, _ = clinical_synthetic(8, seed=31)
    slides[5] = dataclasses.replace(slides[5], clinical=None)
    job = clinical_ablation(
        slides, class_names=classes, clinical=SPEC, n_folds=2, model_config=_config(slides)
    )
    with pytest.raises(ClinicalError, match="slide 'synth_005': no clinical values"):
        next(job)
