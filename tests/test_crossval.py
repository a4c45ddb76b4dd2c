"""Cross-validation: folds, metrics (scikit-learn), pooled out-of-fold predictions, refit, nested tuning."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from napari_regional_mil.errors import TrainingError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.training.crossval import cross_validate, run_fold
from napari_regional_mil.training.evaluation import decide
from napari_regional_mil.training.folds import stratified_group_folds
from napari_regional_mil.training.metrics import (
    balanced_accuracy,
    bootstrap_ci,
    confusion_matrix,
    cross_entropy,
    finite_or_none,
    roc_auc,
    sensitivity_specificity,
)
from napari_regional_mil.training.train import TrainConfig
from napari_regional_mil.training.tuning import TuneGrid


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
            probs = np.stack([1 - scores / 5, scores / 5], 1)
            assert roc_auc(probs, positive.astype(int)) == pytest.approx(_brute_auc(scores, positive))
    assert math.isnan(roc_auc(np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([1, 1])))


def test_multiclass_auc_is_one_vs_rest_macro_over_present_classes():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=30)
    labels = rng.integers(0, 3, 30)  # class 3 absent: left out of the macro average
    expected = np.mean([_brute_auc(probs[:, c], labels == c) for c in range(3)])
    assert roc_auc(probs, labels) == pytest.approx(expected)


def test_confusion_balanced_accuracy_sensitivity_specificity():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(predicted, labels, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert balanced_accuracy(predicted, labels, 3) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    sens, spec = sensitivity_specificity(cm)
    assert sens.tolist() == pytest.approx([0.75, 0.5, 1.0])
    assert spec.tolist() == pytest.approx([2 / 3, 4 / 5, 1.0])
    assert cross_entropy(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([0, 1])) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2)


def test_bootstrap_interval_covers_the_estimate_and_is_seeded():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 60)
    p = np.clip(0.3 * labels + 0.7 * rng.random(60), 0, 1)
    probs = np.stack([1 - p, p], 1)
    low, high = bootstrap_ci(roc_auc, probs, labels, n_resamples=300, seed=5)
    point = roc_auc_score(labels, p)
    assert low < point < high and 0.05 < high - low < 0.5
    again = bootstrap_ci(roc_auc, probs, labels, n_resamples=300, seed=5)
    assert (low, high) == (again[0], again[1])
    both = bootstrap_ci(lambda a, b: np.array([roc_auc(a, b), 1.0]), probs, labels, n_resamples=50, seed=5)
    assert both[0].shape == (2,) and both[0][1] == both[1][1] == 1.0
    one_class = bootstrap_ci(roc_auc, probs[:3], np.array([1, 1, 1]), n_resamples=50)
    assert np.isnan(one_class[0]) and np.isnan(one_class[1])


def test_finite_or_none_makes_strict_json():
    record = finite_or_none({"a": math.nan, "b": [1.0, np.float32("inf"), np.int64(3)], "c": np.array([0.5, np.nan])})
    assert json.dumps(record, allow_nan=False) == '{"a": null, "b": [1.0, null, 3], "c": [0.5, null]}'


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
    with pytest.raises(TrainingError, match=r"class 'pos' has 3 patient\(s\), fewer than 5 folds.*--folds 3"):
        stratified_group_folds(labels, patients, n_folds=5, class_names=("neg", "pos"))


def _small(slides):
    return ModelConfig(
        input_dim=slides[0].embeddings.embedding_dim, hidden_dim=16, attention_dim=8,
        selection=SelectionConfig(min_patches=16, max_patches=48),
    )


def test_cross_validate_reports_folds_pooled_predictions_and_strict_json(labelled_synthetic, tmp_path):
    slides, classes = labelled_synthetic(12, seed=21, task="presence")
    events = []
    result = run_job(
        cross_validate(
            slides, class_names=classes, n_folds=3, model_config=_small(slides),
            config=TrainConfig(epochs=2, min_epochs=1, val_fraction=0.25, threads=1), keep_models=True,
        ),
        events.append,
    )
    assert [f.fold for f in result.folds] == [1, 2, 3] and len(result.models) == 3
    assert sum(f.n_test for f in result.folds) == 12
    pooled = result.pooled()
    assert sorted(pooled["slides"]) == sorted(s.name for s in slides)
    by_name = {s.name: s for s in slides}
    assert pooled["labels"].tolist() == [by_name[n].label for n in pooled["slides"]]
    assert pooled["probabilities"].shape == (12, 2) and np.allclose(pooled["probabilities"].sum(1), 1, atol=1e-5)
    assert pooled["predicted"].tolist() == decide(pooled["probabilities"], 0.5, 1).tolist()
    assert result.confusion.sum() == 12
    mean, sd = result.auc
    assert mean == pytest.approx(np.mean([f.auc for f in result.folds])) and sd >= 0
    assert any("fold_auc" in e.metrics for e in events) and any("val_auc" in e.metrics for e in events)
    assert all(e.stage == "crossval" and e.done <= e.total for e in events)
    report = result.pooled_report(n_bootstrap=100)
    assert report.auroc == pytest.approx(roc_auc_score(pooled["labels"], pooled["probabilities"][:, 1]))
    assert report.auprc == pytest.approx(average_precision_score(pooled["labels"], pooled["probabilities"][:, 1]))
    path = result.write_json(tmp_path / "cv.json", report)
    text = path.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["n_folds"] == 3 and len(data["folds"]) == 3 and data["auc_mean"] == pytest.approx(mean)
    assert data["pooled"]["n"] == 12 and data["pooled"]["auroc"] == pytest.approx(report.auroc)
    assert "NaN" not in text
    assert "AUC" in result.summary() and result.bags_per_second > 0


def test_one_fold_runs_on_its_own_and_matches_the_same_fold_inside_cross_validation(labelled_synthetic):
    slides, classes = labelled_synthetic(12, seed=22, task="presence")
    config = TrainConfig(epochs=2, min_epochs=1, val_fraction=0.25, threads=1, seed=4)
    cv = run_job(cross_validate(slides, class_names=classes, n_folds=3, model_config=_small(slides), config=config))
    labels = np.array([s.label for s in slides])
    folds = stratified_group_folds(labels, np.array([s.patient for s in slides], dtype=object), n_folds=3,
                                   class_names=classes, seed=4)
    test = folds[1]
    train = np.setdiff1d(np.arange(12), test)
    run = run_job(run_fold([slides[i] for i in train], [slides[i] for i in test], fold=2, class_names=classes,
                           model_config=_small(slides), config=config))
    assert run.result.test_slides == cv.folds[1].test_slides
    assert run.result.probabilities == cv.folds[1].probabilities  # same inputs, same seed: the same fold


def test_a_tuned_threshold_is_chosen_per_fold_and_refit_tunes_on_out_of_fold(labelled_synthetic):
    slides, classes = labelled_synthetic(16, seed=23, task="presence")
    config = TrainConfig(epochs=3, min_epochs=1, val_fraction=0.3, threads=1, threshold="youden")
    result = run_job(cross_validate(slides, class_names=classes, n_folds=2, model_config=_small(slides), config=config,
                                    refit=True))
    assert result.threshold_rule == "youden"
    for fold in result.folds:  # each fold decides at its own validation-tuned threshold
        assert fold.predicted == decide(np.array(fold.probabilities), fold.threshold, 1).tolist()
    refit = result.refit
    assert refit is not None and refit.checkpoint.training["n_train"] == 16  # every slide, no hold-out
    assert refit.checkpoint.training["n_val"] == 0
    assert "out-of-fold" in refit.checkpoint.training["threshold_tuned_on"]
    assert len(refit.history) == max(1, round(float(np.median([f.best_epoch for f in result.folds]))))
    from napari_regional_mil.training.evaluation import tune_threshold

    pooled = result.pooled()
    assert refit.checkpoint.threshold == tune_threshold("youden", pooled["probabilities"], pooled["labels"])
    assert result.to_json()["refit"]["threshold"] == pytest.approx(refit.checkpoint.threshold)


def test_nested_tuning_picks_per_fold_from_the_grid(labelled_synthetic):
    slides, classes = labelled_synthetic(12, seed=24, task="presence")
    grid = TuneGrid(learning_rate=(1e-4, 3e-3), weight_decay=(1e-2,), dropout=(0.1,), epochs=(2,), inner_folds=2)
    config = TrainConfig(epochs=5, min_epochs=1, val_fraction=0.25, threads=1)
    result = run_job(cross_validate(slides, class_names=classes, n_folds=2, model_config=_small(slides), config=config,
                                    tune=grid))
    assert len(result.tuning) == 2
    for fold, tuning in zip(result.folds, result.tuning):
        assert fold.hyperparameters == tuning.best and tuning.best in grid.candidates()
        assert tuning.n_slides == 12 - fold.n_test  # the outer test slides are never seen by tuning
        assert len(tuning.scores) == 2 and fold.epochs_run <= 2
        best_auc = max(a for _, a in tuning.scores)
        assert next(a for c, a in tuning.scores if c == tuning.best) == best_auc
    assert json.dumps(result.to_json(), allow_nan=False)
