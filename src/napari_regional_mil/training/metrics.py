"""Classification metrics of slide-level predictions, by scikit-learn.

Every function takes ``(N, C)`` class probabilities (or predicted class indices) and
``(N,)`` int true classes. Areas under curves of more than two classes are one-vs-rest:
each class against the others, macro-averaged over the classes present (a class absent
from the labels has no curve). Undefined values (one class only) are ``nan``; reports
turn them into JSON ``null`` (:func:`finite_or_none`).

Confidence intervals are percentile bootstraps over slides (:func:`bootstrap_ci`):
resample the slides with replacement, recompute the metric, take the 2.5th and 97.5th
percentiles; resamples in which the metric is undefined (one class drawn) are skipped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import sklearn
from sklearn import metrics as skm

__all__ = [
    "average_precision",
    "balanced_accuracy",
    "bootstrap_ci",
    "class_auc",
    "class_average_precision",
    "confusion_matrix",
    "cross_entropy",
    "finite_or_none",
    "roc_auc",
    "sensitivity_specificity",
]

Metric = Callable[[np.ndarray, np.ndarray], float]


def _present(labels: np.ndarray, c: int) -> bool:
    positive = labels == c
    return bool(positive.any() and not positive.all())


def class_auc(probabilities: np.ndarray, labels: np.ndarray, c: int) -> float:
    """AUROC of class ``c`` against the others (``nan`` when ``c`` is absent or alone)."""
    labels = np.asarray(labels)
    if not _present(labels, c):
        return math.nan
    return float(skm.roc_auc_score(labels == c, np.asarray(probabilities, dtype=np.float64)[:, c]))


def class_average_precision(probabilities: np.ndarray, labels: np.ndarray, c: int) -> float:
    """AUPRC (average precision) of class ``c`` against the others (``nan`` when undefined)."""
    labels = np.asarray(labels)
    if not _present(labels, c):
        return math.nan
    return float(skm.average_precision_score(labels == c, np.asarray(probabilities, dtype=np.float64)[:, c]))


def _binary_or_macro(per_class: Callable[[np.ndarray, np.ndarray, int], float]) -> Metric:
    def metric(probabilities: np.ndarray, labels: np.ndarray) -> float:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape[1] == 2:
            return per_class(probabilities, labels, 1)
        values = [per_class(probabilities, labels, c) for c in range(probabilities.shape[1])]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if len(values) >= 2 else math.nan

    return metric


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """AUROC: of class 1 (binary), or one-vs-rest macro average (> 2 classes).

    Parameters
    ----------
    probabilities
        ``(N, C)`` class probabilities.
    labels
        ``(N,)`` int true classes.

    Returns
    -------
    float
        The AUROC, ``nan`` when fewer than two classes are present.
    """
    return _binary_or_macro(class_auc)(probabilities, labels)


def average_precision(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """AUPRC (average precision): of class 1 (binary), or one-vs-rest macro average."""
    return _binary_or_macro(class_average_precision)(probabilities, labels)


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` int counts: row = true class, column = predicted class."""
    return skm.confusion_matrix(labels, predicted, labels=np.arange(n_classes)).astype(np.int64)


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels`` (``nan`` for no slides)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return math.nan
    present = np.unique(labels)
    return float(skm.recall_score(labels, predicted, labels=present, average="macro", zero_division=0))


def sensitivity_specificity(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sensitivity (recall) and specificity (one-vs-rest) from a confusion matrix.

    Returns
    -------
    (sensitivity, specificity)
        ``(C,)`` float arrays; ``nan`` where undefined (no slide of the class, or no other).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    fp = cm.sum(axis=0) - tp
    negatives = total - support
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(support > 0, tp / support, np.nan)
        specificity = np.where(negatives > 0, (negatives - fp) / negatives, np.nan)
    return sensitivity, specificity


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax: off by ~1e-7
    return float(skm.log_loss(labels, probabilities, labels=np.arange(probabilities.shape[1])))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float | np.ndarray],
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence intervals of ``metric(probabilities, labels)``.

    Parameters
    ----------
    metric
        Returns one value or an array of values (e.g. every class's AUROC and their macro
        average, so that one resampling serves them all).
    probabilities, labels
        ``(N, C)`` and ``(N,)``; the slides are resampled with replacement.
    n_resamples
        Bootstrap resamples.
    level
        Coverage of the intervals.
    seed
        Seeds the resampling (the same inputs and seed give the same intervals).

    Returns
    -------
    (low, high)
        Arrays shaped like ``metric``'s value; ``nan`` where fewer than 10 resamples give
        a defined value.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    n = labels.size
    shape = np.shape(metric(probabilities, labels)) if n else ()
    if n == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan)
    rng = np.random.default_rng(seed)
    values = np.zeros((n_resamples, *shape), dtype=np.float64)
    # the inputs are checked once above; skipping scikit-learn's per-call checks halves the time
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for b in range(n_resamples):
            idx = rng.integers(0, n, n)
            values[b] = metric(probabilities[idx], labels[idx])
    alpha = (1.0 - level) / 2
    defined = np.sum(~np.isnan(values), axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan components: handled below
        low, high = np.nanquantile(values, [alpha, 1.0 - alpha], axis=0)
    low = np.where(defined >= 10, low, np.nan)
    high = np.where(defined >= 10, high, np.nan)
    return low, high


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (``nan``, ``inf``) replaced by ``None``, recursively.

    JSON has no NaN; strict parsers reject Python's ``NaN`` token, so reports write ``null``.
    """
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
