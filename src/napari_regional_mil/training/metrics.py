"""Classification metrics without scikit-learn: AUC (rank statistic), balanced accuracy, confusion."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["binary_auc", "roc_auc", "balanced_accuracy", "confusion_matrix", "cross_entropy"]


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count 1/2).

    Parameters
    ----------
    scores
        ``(N,)`` scores, higher = more positive.
    positive
        ``(N,)`` bool, the true positives.

    Returns
    -------
    float
        The AUC, or ``nan`` when one of the two classes is absent.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """AUC of class probabilities: binary, or one-vs-rest macro average for > 2 classes.

    Parameters
    ----------
    probabilities
        ``(N, C)`` class probabilities.
    labels
        ``(N,)`` int true classes.

    Returns
    -------
    float
        The AUC (classes absent from ``labels`` are left out of the macro average;
        ``nan`` when fewer than two classes are present).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        return binary_auc(probabilities[:, 1], labels == 1)
    aucs = [binary_auc(probabilities[:, c], labels == c) for c in range(n_classes)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if len(aucs) >= 2 else float("nan")


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` int counts: row = true class, column = predicted class."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return out


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    cm = confusion_matrix(predicted, labels, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))
