"""The clinical-only baseline: logistic regression on the same clinical encoding.

It answers "what do the clinical variables alone achieve?" next to the slide-only and the
fused first model (``crossval --clinical ... --ablation``, ``benchmarks/clinical.py``).
The encoding (:func:`~.clinical.fit_clinical_encoding`) is fitted on the training slides
exactly as for the fused model; the classifier is scikit-learn's L2-regularised
``LogisticRegression`` (multinomial for more than two classes). Its logits are linear in
the encoded values, so its contributions are computed like the fused model's
(:func:`~.contributions.explain_additive`, without a slide term).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..clinical import (
    ClinicalEncoding,
    ClinicalRecord,
    ClinicalSpec,
    fit_clinical_encoding,
)
from ..errors import TrainingError
from .contributions import Contributions, explain_additive

__all__ = ["ClinicalLogistic", "fit_clinical_logistic"]


@dataclass(frozen=True, eq=False)
class ClinicalLogistic:
    """A fitted clinical-only logistic model.

    Parameters
    ----------
    encoding
        The clinical encoding (fitted on the training slides).
    coef
        ``(C, K)`` logit weights per class (for two classes, row 0 is zero).
    intercept
        ``(C,)`` logit intercepts.
    """

    encoding: ClinicalEncoding
    coef: np.ndarray
    intercept: np.ndarray

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return int(self.intercept.shape[0])

    def logits(self, encoded: np.ndarray) -> np.ndarray:
        """``(n, K)`` encoded values -> ``(n, C)`` logits."""
        return np.asarray(encoded, dtype=np.float64) @ self.coef.T + self.intercept

    def predict_proba(self, records: Sequence[ClinicalRecord]) -> np.ndarray:
        """``(n, C)`` class probabilities (``ClinicalError`` naming a bad value)."""
        z = self.logits(self.encoding.encode_all(records))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def contributions(self, record: ClinicalRecord, class_index: int) -> Contributions:
        """Each variable's change of the class probability against its reference."""
        return explain_additive(
            encoding=self.encoding,
            encoded=self.encoding.encode(record),
            clinical_logits=lambda x: np.asarray(x, dtype=np.float64) @ self.coef.T,
            base_logits=self.intercept,
            class_index=class_index,
        )


def fit_clinical_logistic(
    records: Sequence[ClinicalRecord],
    labels: np.ndarray,
    *,
    spec: ClinicalSpec,
    n_classes: int,
    regularisation: float = 1.0,
) -> ClinicalLogistic:
    """Fit the encoding and the logistic model on the training slides.

    Parameters
    ----------
    records
        The training slides' clinical values.
    labels
        ``(n,)`` int class indices.
    spec
        The clinical columns and missing-value policy.
    n_classes
        Number of classes of the task (classes absent from ``labels`` get no weight).
    regularisation
        scikit-learn's ``C`` (inverse L2 strength).

    Raises
    ------
    ClinicalError
        A bad clinical value (naming the row and column).
    TrainingError
        The training slides hold fewer than two classes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    if present.size < 2:
        raise TrainingError("the clinical-only baseline needs at least two classes in its training slides")
    encoding = fit_clinical_encoding(records, spec)
    x = encoding.encode_all(records).astype(np.float64)
    model = LogisticRegression(C=regularisation, max_iter=5000)
    model.fit(x, labels)
    coef = np.zeros((n_classes, encoding.width))
    intercept = np.full(n_classes, -1e4)  # classes never seen in training: probability ~0
    if present.size == 2:  # scikit-learn gives one row: the log-odds of the second class
        coef[present[1]] = model.coef_[0]
        intercept[present[0]] = 0.0
        intercept[present[1]] = model.intercept_[0]
    else:
        coef[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    return ClinicalLogistic(encoding, coef, intercept)
