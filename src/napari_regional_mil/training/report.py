"""What a researcher reports about slide-level predictions: metrics with confidence intervals.

:func:`evaluate_predictions` turns class probabilities and true classes (a test set, or
cross-validation's pooled out-of-fold predictions) into an :class:`EvaluationReport`:

- AUROC and AUPRC (average precision) with percentile-bootstrap 95 % confidence
  intervals over slides; for a binary model of its positive class, for more classes one
  value per class (one-vs-rest) and their macro average;
- at the model's threshold (:func:`~.evaluation.decide`): balanced accuracy, sensitivity
  and specificity (per class, one-vs-rest, for more classes) and the confusion matrix;
- a calibration table (10 equal-width bins of the predicted probability: slides, mean
  predicted probability, observed fraction) and the Brier score;
- the ROC and PR curves with bootstrap 95 % bands (binary models), for the plots;
- patient-level scores when the slides have patients: a patient's probabilities are the
  mean of their slides' probabilities, decided at the same threshold; patients whose
  slides carry different labels are left out of them (and counted).

Undefined values (a class absent, too few slides) are ``nan`` here and ``null`` in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from .evaluation import decide
from .metrics import (
    balanced_accuracy,
    bootstrap_ci,
    confusion_matrix,
    finite_or_none,
    sensitivity_specificity,
)

__all__ = ["CURVE_GRID", "ClassMetrics", "Curves", "EvaluationReport", "evaluate_predictions"]

#: The false-positive rates (ROC) and recalls (PR) on which bootstrap bands are computed.
CURVE_GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ClassMetrics:
    """One class against the others.

    Parameters
    ----------
    name
        The class.
    n
        Slides of the class.
    auroc, auroc_ci
        Area under the ROC curve and its 95 % bootstrap interval ``(low, high)``.
    auprc, auprc_ci
        Average precision (area under the precision-recall curve) and its interval.
    sensitivity, specificity
        At the model's decision (recall of the class; true-negative rate of the others).
    """

    name: str
    n: int
    auroc: float
    auroc_ci: tuple[float, float]
    auprc: float
    auprc_ci: tuple[float, float]
    sensitivity: float
    specificity: float


@dataclass(frozen=True, eq=False)
class Curves:
    """ROC and PR curves of one class (the plots' data).

    Parameters
    ----------
    fpr, tpr
        The ROC curve (scikit-learn's ``roc_curve``).
    recall, precision
        The precision-recall curve.
    tpr_band, precision_band
        ``(2, len(CURVE_GRID))`` bootstrap 95 % bands of the TPR at each false-positive
        rate and of the precision at each recall of :data:`CURVE_GRID`, or ``None``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    tpr_band: np.ndarray | None = None
    precision_band: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Metrics of slide-level predictions (see the module docstring).

    ``auroc``/``auprc`` (and their intervals) are those of the positive class for a
    binary model and the one-vs-rest macro averages otherwise; ``per_class`` has every
    class. ``sensitivity``/``specificity`` are the positive class's (binary) or ``nan``.
    """

    class_names: tuple[str, ...]
    slides: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    threshold: float
    positive_class: int
    auroc: float
    auroc_ci: tuple[float, float]
    auprc: float
    auprc_ci: tuple[float, float]
    balanced_accuracy: float
    sensitivity: float
    specificity: float
    confusion: np.ndarray
    per_class: tuple[ClassMetrics, ...]
    calibration: tuple[dict[str, Any], ...]
    brier: float
    curves: dict[str, Curves] = field(repr=False)
    n_bootstrap: int = 1000
    seed: int = 0
    level: str = "slide"
    patients: tuple[str, ...] | None = None
    patient_level: EvaluationReport | None = None
    n_mixed_patients: int = 0

    @property
    def binary(self) -> bool:
        """Whether the model has two classes."""
        return len(self.class_names) == 2

    @property
    def correct(self) -> np.ndarray:
        """``(N,)`` bool: the decision equals the true class."""
        return self.predicted == self.labels

    def summary(self) -> str:
        """Human-readable lines: AUROC and AUPRC with intervals, then the decision's figures."""
        lines = [f"{self.level}s: {len(self.labels)}"]

        def ci(value: float, interval: tuple[float, float]) -> str:
            low, high = interval
            band = f" (95% CI {low:.3f}-{high:.3f})" if not (math.isnan(low) or math.isnan(high)) else ""
            return f"{value:.3f}{band}"

        what = f"{self.class_names[self.positive_class]}" if self.binary else "macro one-vs-rest"
        lines.append(f"AUROC {ci(self.auroc, self.auroc_ci)}, AUPRC {ci(self.auprc, self.auprc_ci)} [{what}]")
        decision = f"at threshold {self.threshold:.3g}" if self.binary else "by the largest probability"
        line = f"{decision}: balanced accuracy {self.balanced_accuracy:.3f}"
        if self.binary:
            line += f", sensitivity {self.sensitivity:.3f}, specificity {self.specificity:.3f}"
        lines.append(line)
        if not self.binary:
            for c in self.per_class:
                lines.append(
                    f"  {c.name}: AUROC {ci(c.auroc, c.auroc_ci)}, sensitivity {c.sensitivity:.3f}, "
                    f"specificity {c.specificity:.3f}"
                )
        lines.append(f"confusion (rows: true {', '.join(self.class_names)}): {self.confusion.tolist()}")
        if self.patient_level is not None:
            p = self.patient_level
            lines.append(
                f"patients: {len(p.labels)}, AUROC {ci(p.auroc, p.auroc_ci)}, balanced accuracy "
                f"{p.balanced_accuracy:.3f}" + (f" ({self.n_mixed_patients} with mixed labels left out)"
                                                 if self.n_mixed_patients else "")
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (``None`` where a value is undefined, never NaN)."""
        record: dict[str, Any] = {
            "level": self.level,
            "n": len(self.labels),
            "class_names": list(self.class_names),
            "class_counts": np.bincount(self.labels, minlength=len(self.class_names)).tolist(),
            "positive_class": self.class_names[self.positive_class] if self.binary else None,
            "threshold": self.threshold if self.binary else None,
            "auroc": self.auroc,
            "auroc_ci95": list(self.auroc_ci),
            "auprc": self.auprc,
            "auprc_ci95": list(self.auprc_ci),
            "averaging": "binary (positive class)" if self.binary else "one-vs-rest macro",
            "balanced_accuracy": self.balanced_accuracy,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "confusion": self.confusion.tolist(),
            "confusion_axes": "rows: true class, columns: predicted class (class_names order)",
            "per_class": [
                {
                    "class": c.name,
                    "n": c.n,
                    "auroc": c.auroc,
                    "auroc_ci95": list(c.auroc_ci),
                    "auprc": c.auprc,
                    "auprc_ci95": list(c.auprc_ci),
                    "sensitivity": c.sensitivity,
                    "specificity": c.specificity,
                }
                for c in self.per_class
            ],
            "brier": self.brier,
            "calibration": list(self.calibration),
            "bootstrap": {"resamples": self.n_bootstrap, "seed": self.seed, "unit": self.level,
                          "interval": "percentile"},
        }
        if self.patient_level is not None:
            record["patient_level"] = self.patient_level.to_json()
            record["patient_level"]["mixed_label_patients_left_out"] = self.n_mixed_patients
            record["patient_level"]["aggregation"] = "mean of the patient's slide probabilities"
        return finite_or_none(record)


def _class_scores(probabilities: np.ndarray, labels: np.ndarray, c: int, *, roc: bool = True) -> np.ndarray:
    """AUROC, AUPRC, TPR at :data:`CURVE_GRID` FPRs, precision at :data:`CURVE_GRID` recalls of class ``c``.

    One ``roc_curve`` and one ``precision_recall_curve`` per call (what
    ``roc_auc_score`` and ``average_precision_score`` compute inside, at a quarter of
    their cost in the bootstrap loop); ``nan`` when the class is absent or alone.
    """
    positive = labels == c
    out = np.full(2 + 2 * CURVE_GRID.size, np.nan)
    if positive.all() or not positive.any():
        return out
    scores = probabilities[:, c]
    if roc:
        fpr, tpr, _ = skm.roc_curve(positive, scores)
        out[0] = skm.auc(fpr, tpr)
        out[2 : 2 + CURVE_GRID.size] = np.interp(CURVE_GRID, fpr, tpr)
    precision, recall, _ = skm.precision_recall_curve(positive, scores)
    out[1] = -np.sum(np.diff(recall) * precision[:-1])  # average precision, as scikit-learn defines it
    out[2 + CURVE_GRID.size :] = np.interp(CURVE_GRID, recall[::-1], precision[::-1])
    return out


def _scores(probabilities: np.ndarray, labels: np.ndarray, *, bands_for: int | None) -> np.ndarray:
    """Every class's AUROC and AUPRC, their macro means, and (binary) the curve bands, as one vector."""
    n_classes = probabilities.shape[1]
    if bands_for is not None:  # binary: the other class's ROC is the mirror image (same AUROC)
        main = _class_scores(probabilities, labels, bands_for)
        other = _class_scores(probabilities, labels, 1 - bands_for, roc=False)
        per = {bands_for: main, 1 - bands_for: other}
        aurocs = [main[0], main[0]]
        auprcs = [per[0][1], per[1][1]]
    else:
        rows = [_class_scores(probabilities, labels, c) for c in range(n_classes)]
        aurocs = [r[0] for r in rows]
        auprcs = [r[1] for r in rows]

    def macro(values: list[float]) -> float:
        defined = [v for v in values if not math.isnan(v)]
        return float(np.mean(defined)) if len(defined) >= 2 else math.nan

    parts = [np.array(aurocs), np.array(auprcs), np.array([macro(aurocs), macro(auprcs)])]
    if bands_for is not None:
        parts.append(main[2:])
    return np.concatenate(parts)


def _calibration(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[int], names: Sequence[str],
                 n_bins: int) -> tuple[dict[str, Any], ...]:
    rows: list[dict[str, Any]] = []
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for c in classes:
        p = probabilities[:, c]
        positive = labels == c
        bins = np.searchsorted(edges[1:-1], p)  # scikit-learn's binning
        counts = np.bincount(bins, minlength=n_bins)
        if positive.any() and not positive.all():
            observed, predicted = calibration_curve(positive, p, n_bins=n_bins, strategy="uniform")
        else:  # calibration_curve needs both classes; every observed fraction is then 0 or 1
            filled = np.flatnonzero(counts)
            observed = np.full(filled.size, float(positive.any()))
            predicted = np.array([p[bins == b].mean() for b in filled])
        it = iter(zip(predicted, observed))
        for b in range(n_bins):
            mean_p, frac = next(it) if counts[b] else (math.nan, math.nan)
            rows.append({
                "class": names[c],
                "bin": b + 1,
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": int(counts[b]),
                "mean_predicted": float(mean_p),
                "observed_fraction": float(frac),
            })
    return tuple(rows)


def _curves(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[int], names: Sequence[str],
            band: np.ndarray | None) -> dict[str, Curves]:
    out: dict[str, Curves] = {}
    for c in classes:
        positive = labels == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positive, probabilities[:, c])
        precision, recall, _ = skm.precision_recall_curve(positive, probabilities[:, c])
        tpr_band = precision_band = None
        if band is not None:
            size = CURVE_GRID.size
            tpr_band, precision_band = band[:, :size], band[:, size:]
        out[names[c]] = Curves(fpr, tpr, recall, precision, tpr_band, precision_band)
    return out


def evaluate_predictions(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str],
    slides: Sequence[str],
    threshold: float = 0.5,
    positive_class: int = 1,
    predicted: np.ndarray | None = None,
    patients: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    calibration_bins: int = 10,
    level: str = "slide",
) -> EvaluationReport:
    """Score slide-level predictions (see the module docstring).

    Parameters
    ----------
    probabilities
        ``(N, C)`` class probabilities.
    labels
        ``(N,)`` true class indices.
    class_names, slides
        Names of the classes and of the ``N`` slides.
    threshold, positive_class
        The model's decision (binary models).
    predicted
        The decisions, when they were not all taken at ``threshold`` (cross-validation:
        each fold decides at its own threshold); default ``decide(probabilities, ...)``.
    patients
        Each slide's patient, for patient-level scores (``None``: none).
    n_bootstrap, seed
        Bootstrap resamples for the intervals and their seed (0 resamples: no intervals).
    calibration_bins
        Equal-width bins of the calibration table.
    level
        ``"slide"`` or ``"patient"`` (what a row is, for the JSON and the summary).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(class_names)
    if probabilities.ndim != 2 or probabilities.shape != (labels.size, n_classes) or len(slides) != labels.size:
        raise ValueError(f"probabilities {probabilities.shape}, labels {labels.shape} and {len(slides)} slides differ")
    if predicted is None:
        predicted = np.asarray(decide(probabilities, threshold, positive_class), dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    binary = n_classes == 2
    bands_for = positive_class if binary else None
    point = _scores(probabilities, labels, bands_for=bands_for)
    if n_bootstrap > 0:
        low, high = bootstrap_ci(
            lambda p, y: _scores(p, y, bands_for=bands_for), probabilities, labels, n_resamples=n_bootstrap, seed=seed
        )
    else:
        low = high = np.full_like(point, np.nan)
    confusion = confusion_matrix(predicted, labels, n_classes)
    sensitivity, specificity = sensitivity_specificity(confusion)
    per_class = tuple(
        ClassMetrics(
            name=str(class_names[c]),
            n=int((labels == c).sum()),
            auroc=float(point[c]),
            auroc_ci=(float(low[c]), float(high[c])),
            auprc=float(point[n_classes + c]),
            auprc_ci=(float(low[n_classes + c]), float(high[n_classes + c])),
            sensitivity=float(sensitivity[c]),
            specificity=float(specificity[c]),
        )
        for c in range(n_classes)
    )
    if binary:
        main = per_class[positive_class]
        auroc, auroc_ci, auprc, auprc_ci = main.auroc, main.auroc_ci, main.auprc, main.auprc_ci
        sens, spec = main.sensitivity, main.specificity
    else:
        m = 2 * n_classes
        auroc, auprc = float(point[m]), float(point[m + 1])
        auroc_ci, auprc_ci = (float(low[m]), float(high[m])), (float(low[m + 1]), float(high[m + 1]))
        sens = spec = math.nan
    classes = [positive_class] if binary else list(range(n_classes))
    band = None
    if binary and n_bootstrap > 0:
        band = np.stack([low[2 * n_classes + 2 :], high[2 * n_classes + 2 :]])
    brier = math.nan
    if binary:
        brier = float(skm.brier_score_loss(labels == positive_class, probabilities[:, positive_class]))
    report = EvaluationReport(
        class_names=tuple(str(c) for c in class_names),
        slides=tuple(str(s) for s in slides),
        labels=labels,
        probabilities=probabilities,
        predicted=predicted,
        threshold=float(threshold),
        positive_class=int(positive_class),
        auroc=auroc,
        auroc_ci=auroc_ci,
        auprc=auprc,
        auprc_ci=auprc_ci,
        balanced_accuracy=balanced_accuracy(predicted, labels, n_classes),
        sensitivity=sens,
        specificity=spec,
        confusion=confusion,
        per_class=per_class,
        calibration=_calibration(probabilities, labels, classes, class_names, calibration_bins),
        brier=brier,
        curves=_curves(probabilities, labels, classes, class_names, band),
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
        level=level,
        patients=None if patients is None else tuple(str(p) for p in patients),
    )
    if patients is None or level != "slide":
        return report
    return _with_patient_level(report, n_bootstrap=n_bootstrap, seed=seed, calibration_bins=calibration_bins)


def _with_patient_level(report: EvaluationReport, *, n_bootstrap: int, seed: int,
                        calibration_bins: int) -> EvaluationReport:
    assert report.patients is not None
    order = list(dict.fromkeys(report.patients))
    members = {p: [i for i, q in enumerate(report.patients) if q == p] for p in order}
    kept = [p for p in order if len({int(report.labels[i]) for i in members[p]}) == 1]
    mixed = len(order) - len(kept)
    if not kept or len({int(report.labels[members[p][0]]) for p in kept}) < 2:
        return replace(report, n_mixed_patients=mixed)
    probabilities = np.stack([report.probabilities[members[p]].mean(axis=0) for p in kept])
    labels = np.array([report.labels[members[p][0]] for p in kept])
    patient = evaluate_predictions(
        probabilities,
        labels,
        class_names=report.class_names,
        slides=kept,
        threshold=report.threshold,
        positive_class=report.positive_class,
        n_bootstrap=n_bootstrap,
        seed=seed,
        calibration_bins=calibration_bins,
        level="patient",
    )
    return replace(report, patient_level=patient, n_mixed_patients=mixed)


