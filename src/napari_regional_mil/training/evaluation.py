"""Deciding a class from class probabilities, and choosing the decision threshold.

:func:`decide` is the one rule every front end uses (training's validation metrics,
prediction, the Predict widget's panel, the Cohort table): a binary model predicts its
positive class when that class's probability reaches the threshold, otherwise the other
class; a model with more classes predicts the most probable one (the threshold is unused).

:func:`tune_threshold` chooses a binary model's threshold on validation or out-of-fold
predictions (never on test slides) by a :class:`ThresholdRule`: a fixed value, Youden's J,
or a target sensitivity or specificity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

from ..thresholds import ThresholdRule, parse_threshold

__all__ = ["ThresholdRule", "decide", "parse_threshold", "tune_threshold"]


@overload
def decide(probabilities: Sequence[float], threshold: float, positive_class: int = 1) -> int: ...


@overload
def decide(probabilities: npt.ArrayLike, threshold: float, positive_class: int = 1) -> int | np.ndarray: ...


def decide(probabilities: npt.ArrayLike, threshold: float, positive_class: int = 1) -> int | np.ndarray:
    """The predicted class index of one slide or of many.

    Parameters
    ----------
    probabilities
        ``(C,)`` class probabilities of one slide, or ``(N, C)`` of ``N`` slides.
    threshold
        Decision threshold on the probability of ``positive_class`` (binary models).
        A slide whose probability equals the threshold is positive.
    positive_class
        The class the threshold applies to (``0`` or ``1``; binary models only).

    Returns
    -------
    int or numpy.ndarray
        The class index (an ``int`` for ``(C,)`` input, an ``(N,)`` int64 array for
        ``(N, C)``). With more than two classes: the most probable class (ties: the first).

    Raises
    ------
    ValueError
        ``probabilities`` is not 1-D or 2-D with at least two classes, or
        ``positive_class`` is not 0 or 1 for a binary model.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim not in (1, 2) or p.shape[-1] < 2:
        raise ValueError(f"probabilities must have shape (C,) or (N, C) with C >= 2, got {p.shape}")
    if p.shape[-1] == 2:
        if positive_class not in (0, 1):
            raise ValueError(f"positive_class must be 0 or 1 for a binary model, got {positive_class}")
        positive = p[..., positive_class] >= float(threshold)
        out = np.where(positive, positive_class, 1 - positive_class).astype(np.int64)
    else:
        out = np.argmax(p, axis=-1).astype(np.int64)
    return int(out) if p.ndim == 1 else out


def tune_threshold(
    rule: ThresholdRule | float | str, probabilities: npt.ArrayLike, labels: npt.ArrayLike, positive_class: int = 1
) -> float:
    """The decision threshold the rule gives on validation (or out-of-fold) predictions.

    Never call this on test slides: the threshold is part of the model.

    Parameters
    ----------
    rule
        A :class:`ThresholdRule` or its text (see :func:`parse_threshold`).
    probabilities
        ``(N, 2)`` class probabilities of the validation slides.
    labels
        ``(N,)`` their true classes.
    positive_class
        The class the threshold applies to.

    Returns
    -------
    float
        A threshold in [0, 1]; :func:`decide` at it reproduces the chosen operating
        point (a slide whose probability equals the threshold is positive).

    Raises
    ------
    ValueError
        A tuned rule on a model with more than two classes, or validation slides that
        hold one class only.
    """
    rule = parse_threshold(rule)
    if not rule.tuned:
        return rule.target
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"threshold {rule.text} applies to binary models; this one has {p.shape[-1]} classes")
    positive = y == positive_class
    if positive.all() or not positive.any():
        raise ValueError(f"threshold {rule.text} needs validation slides of both classes; they hold one class only")
    from sklearn.metrics import roc_curve  # lazy: startup (scikit-learn takes a second; widgets use decide())

    fpr, tpr, thresholds = roc_curve(positive, p[:, positive_class], drop_intermediate=False)
    thresholds = np.minimum(thresholds, 1.0)  # the first point (nothing positive) is +inf
    if rule.kind == "youden":
        best = int(np.argmax(tpr - fpr))  # ties: the highest threshold (roc_curve is in decreasing order)
    elif rule.kind == "sensitivity":
        best = int(np.flatnonzero(tpr >= rule.target - 1e-12)[0])
    else:
        best = int(np.flatnonzero(1.0 - fpr >= rule.target - 1e-12)[-1])
    return float(thresholds[best])
