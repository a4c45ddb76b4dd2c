"""The one decision rule shared by training, prediction, the panel and the Cohort table; tuned thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.training.evaluation import (
    ThresholdRule,
    decide,
    parse_threshold,
    tune_threshold,
)
from napari_regional_mil.training.prediction import SlidePrediction


def test_binary_threshold_on_the_positive_class_inclusive():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5], [0.2, 0.8]])
    assert decide(probs, 0.5, 1).tolist() == [0, 1, 1, 1]
    assert decide(probs, 0.65, 1).tolist() == [0, 0, 0, 1]
    # the threshold applies to class 0's probability when it is the positive class
    assert decide(probs, 0.65, 0).tolist() == [0, 1, 1, 1]
    assert decide(probs, 0.5, 0).tolist() == [0, 1, 0, 1]


def test_one_slide_gives_an_int_and_agrees_with_many():
    probs = np.array([[0.3, 0.7], [0.9, 0.1], [0.55, 0.45]])
    many = decide(probs, 0.44, 1)
    one = [decide(p, 0.44, 1) for p in probs]
    assert all(isinstance(x, int) for x in one)
    assert one == many.tolist() == [1, 0, 1]


def test_multiclass_is_the_most_probable_whatever_the_threshold():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7]])
    assert decide(probs, 0.99, 1).tolist() == [1, 0, 2]
    assert decide(probs, 0.0, 1).tolist() == [1, 0, 2]


def test_bad_shapes_and_positive_class_are_refused():
    with pytest.raises(ValueError, match="shape"):
        decide(np.array([1.0]), 0.5, 1)
    with pytest.raises(ValueError, match="positive_class"):
        decide(np.array([0.4, 0.6]), 0.5, 2)


def test_slide_prediction_decides_by_the_same_rule():
    pred = SlidePrediction(
        slide_name="s",
        class_names=("benign", "tumour"),
        probabilities=np.array([0.42, 0.58]),
        threshold=0.6,
        patch_attention=np.ones(3) / 3,
        positive_class=1,
    )
    assert pred.predicted == "benign"
    assert pred.decide(0.58) == "tumour"
    flipped = SlidePrediction("s", ("tumour", "benign"), np.array([0.58, 0.42]), 0.55, np.ones(1), positive_class=0)
    assert flipped.predicted == "tumour"
    assert flipped.decide(0.6) == "benign"


# --- thresholds tuned on validation predictions -------------------------------------------

def _validation(seed=0, n=60):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p1 = np.clip(0.35 * labels + rng.random(n) * 0.65, 0, 1)
    return np.stack([1 - p1, p1], 1), labels


def _sens_spec(probs, labels, t, pos=1):
    pred = decide(probs, t, pos)
    sens = np.mean(pred[labels == pos] == pos)
    spec = np.mean(pred[labels != pos] != pos)
    return sens, spec


def test_parse_threshold_forms_and_errors():
    assert parse_threshold(0.3) == ThresholdRule("value", 0.3)
    assert parse_threshold("0.7") == ThresholdRule("value", 0.7)
    assert parse_threshold("Youden") == ThresholdRule("youden")
    assert parse_threshold("sensitivity=0.95") == ThresholdRule("sensitivity", 0.95)
    assert parse_threshold(" specificity = 0.9 ").text == "specificity=0.9"
    for bad in ("sens=0.9", "youden=1", "abc", "sensitivity=", ""):
        with pytest.raises(ValueError, match="is not one of"):
            parse_threshold(bad)
    with pytest.raises(ValueError, match="must lie in"):
        parse_threshold("sensitivity=1.5")
    with pytest.raises(ValueError, match="must lie in"):
        parse_threshold(2.0)


def test_youden_maximises_j_over_every_candidate_threshold():
    probs, labels = _validation(1)
    t = tune_threshold("youden", probs, labels)
    j = sum(_sens_spec(probs, labels, t)) - 1
    for candidate in np.unique(probs[:, 1]):
        assert sum(_sens_spec(probs, labels, candidate)) - 1 <= j + 1e-12


def test_sensitivity_target_is_reached_with_the_best_specificity():
    probs, labels = _validation(2)
    t = tune_threshold("sensitivity=0.9", probs, labels)
    assert _sens_spec(probs, labels, t)[0] >= 0.9
    # any higher candidate threshold misses the target
    for candidate in np.unique(probs[:, 1])[np.unique(probs[:, 1]) > t]:
        assert _sens_spec(probs, labels, candidate)[0] < 0.9


def test_specificity_target_is_reached_with_the_best_sensitivity():
    probs, labels = _validation(3)
    t = tune_threshold("specificity=0.8", probs, labels)
    assert _sens_spec(probs, labels, t)[1] >= 0.8
    for candidate in np.unique(probs[:, 1])[np.unique(probs[:, 1]) < t]:
        assert _sens_spec(probs, labels, candidate)[1] < 0.8
    # class 0 as the positive class: the rule applies to its probability
    t0 = tune_threshold("specificity=0.8", probs, labels, positive_class=0)
    assert _sens_spec(probs, labels, t0, pos=0)[1] >= 0.8


def test_fixed_values_pass_through_and_bad_cases_are_refused():
    probs, labels = _validation(4)
    assert tune_threshold(0.42, probs, labels) == 0.42
    with pytest.raises(ValueError, match="both classes"):
        tune_threshold("youden", probs, np.ones_like(labels))
    with pytest.raises(ValueError, match="binary models; this one has 3 classes"):
        tune_threshold("youden", np.full((4, 3), 1 / 3), np.array([0, 1, 2, 0]))
