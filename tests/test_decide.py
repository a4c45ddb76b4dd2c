"""The one decision rule shared by training, prediction, the panel and the Cohort table."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.training.evaluation import decide
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
