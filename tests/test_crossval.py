"""Cross-validation folds and metrics (AUC by rank statistic, balanced accuracy, confusion)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from napari_regional_mil.errors import TrainingError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.training.crossval import cross_validate, stratified_group_folds
from napari_regional_mil.training.metrics import balanced_accuracy, binary_auc, confusion_matrix, roc_auc
from napari_regional_mil.training.train import TrainConfig


def _brute_auc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    return float(np.mean(pairs))


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, 17).astype(float)  # many ties
        positive = rng.random(17) < 0.4
        if 0 < positive.sum() < 17:
            assert binary_auc(scores, positive) == pytest.approx(_brute_auc(scores, positive))
    assert binary_auc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0
    assert np.isnan(binary_auc(np.array([0.1, 0.9]), np.array([True, True])))


def test_multiclass_auc_is_one_vs_rest_macro():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=30)
    labels = rng.integers(0, 3, 30)
    expected = np.mean([_brute_auc(probs[:, c], labels == c) for c in range(3)])
    assert roc_auc(probs, labels) == pytest.approx(expected)


def test_confusion_and_balanced_accuracy():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2])
    assert confusion_matrix(predicted, labels, 3).tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert balanced_accuracy(predicted, labels, 3) == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_folds_are_stratified_patient_grouped_and_cover_everything():
    labels = np.array([0] * 14 + [1] * 11)
    patients = np.array([f"p{i // 2}" for i in range(25)], dtype=object)
    folds = stratified_group_folds(labels, patients, n_folds=4, class_names=("a", "b"), seed=3)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(25))
    for test in folds:
        assert set(np.unique(labels[test])) == {0, 1}
        rest = np.setdiff1d(np.arange(25), test)
        assert set(patients[test]).isdisjoint(patients[rest])
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 3


def test_a_class_with_fewer_patients_than_folds_is_a_clear_error():
    labels = np.array([0] * 10 + [1] * 3)
    patients = np.arange(13).astype(str).astype(object)
    with pytest.raises(TrainingError, match="class 'pos' has 3 patient\\(s\\), fewer than 5 folds.*--folds 3"):
        stratified_group_folds(labels, patients, n_folds=5, class_names=("neg", "pos"))


def test_cross_validate_reports_folds_and_json(labelled_synthetic, tmp_path):
    slides, classes = labelled_synthetic(12, seed=21, task="presence")
    cfg = ModelConfig(
        input_dim=slides[0].embeddings.embedding_dim, hidden_dim=16, attention_dim=8,
        selection=SelectionConfig(min_patches=16, max_patches=48),
    )
    events = []
    result = run_job(
        cross_validate(
            slides, class_names=classes, n_folds=3, model_config=cfg,
            config=TrainConfig(epochs=2, min_epochs=1, val_fraction=0.25, threads=1), keep_models=True,
        ),
        events.append,
    )
    assert [f.fold for f in result.folds] == [1, 2, 3] and len(result.models) == 3
    assert sum(f.n_test for f in result.folds) == 12
    assert sorted(sum((f.test_slides for f in result.folds), [])) == sorted(s.name for s in slides)
    assert result.confusion.sum() == 12
    mean, sd = result.auc
    assert mean == pytest.approx(np.mean([f.auc for f in result.folds])) and sd >= 0
    assert any("fold_auc" in e.metrics for e in events) and any("val_auc" in e.metrics for e in events)
    path = result.write_json(tmp_path / "cv.json")
    data = json.loads(path.read_text())
    assert data["n_folds"] == 3 and len(data["folds"]) == 3 and data["auc_mean"] == pytest.approx(mean)
    assert "AUC" in result.summary() and result.slides_per_second > 0
