"""What the slide adds to the clinical variables, and what they add to the slide: ablations.

Three arms, cross-validated on the **same folds** (patient-grouped, stratified, seeded by
``TrainConfig.seed``):

``fused``
    the first model with the clinical variables fused (``train_model(clinical=...)``);
``slide_only``
    the same first model without them;
``clinical_only``
    a logistic regression on the same clinical encoding (:mod:`~..model.clinical_baseline`),
    each fold's encoding and weights fitted on its training slides.

Reported per arm: fold AUCs (mean +- sd) and the AUC of the pooled out-of-fold
predictions; per slide: each arm's out-of-fold probabilities.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from ..clinical import ClinicalSpec
from ..errors import TrainingError
from ..jobs import Progress
from ..model.clinical_baseline import fit_clinical_logistic
from ..model.config import ModelConfig
from .crossval import CrossValResult, cross_validate
from .datasets import LabelledSlide, clinical_records
from .metrics import roc_auc
from .train import TrainConfig

__all__ = ["ARMS", "AblationArm", "ClinicalAblation", "clinical_ablation"]

#: The arms, in report order.
ARMS = ("fused", "slide_only", "clinical_only")


@dataclass(frozen=True)
class AblationArm:
    """One arm's cross-validated result.

    Parameters
    ----------
    name
        ``"fused"``, ``"slide_only"`` or ``"clinical_only"``.
    fold_aucs
        Test AUC of every fold.
    probabilities
        Slide name -> its out-of-fold class probabilities.
    """

    name: str
    fold_aucs: tuple[float, ...]
    probabilities: dict[str, list[float]] = field(default_factory=dict)

    @property
    def auc(self) -> tuple[float, float]:
        """Mean and standard deviation of the fold AUCs."""
        values = np.array([a for a in self.fold_aucs if not math.isnan(a)])
        if values.size == 0:
            return math.nan, math.nan
        return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


@dataclass(frozen=True)
class ClinicalAblation:
    """The three arms on the same folds.

    Parameters
    ----------
    class_names
        The classes.
    clinical
        The clinical variables' names.
    model_type
        The first model's type in the ``fused`` and ``slide_only`` arms.
    labels
        Slide name -> true class index.
    folds
        Slide name -> its test fold (1-based).
    arms
        Arm name -> result.
    """

    class_names: tuple[str, ...]
    clinical: tuple[str, ...]
    model_type: str
    labels: dict[str, int]
    folds: dict[str, int]
    arms: dict[str, AblationArm]

    def pooled_auc(self, arm: str) -> float:
        """AUC of the arm's pooled out-of-fold predictions."""
        names = list(self.labels)
        probs = np.array([self.arms[arm].probabilities[n] for n in names])
        return roc_auc(probs, np.array([self.labels[n] for n in names]))

    def summary(self) -> str:
        """A table: arm, fold AUC mean +- sd, pooled out-of-fold AUC."""
        lines = [
            f"clinical variables: {', '.join(self.clinical)}; first model: {self.model_type}",
            f"{'arm':<14} {'AUC (folds)':>16} {'pooled AUC':>10}",
        ]
        for arm in ARMS:
            mean, sd = self.arms[arm].auc
            lines.append(f"{arm:<14} {mean:8.3f} +- {sd:5.3f} {self.pooled_auc(arm):10.3f}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable record (``null`` for an undefined AUC)."""

        def finite(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "class_names": list(self.class_names),
            "clinical": list(self.clinical),
            "model_type": self.model_type,
            "arms": {
                arm: {
                    "auc_mean": finite(self.arms[arm].auc[0]),
                    "auc_sd": finite(self.arms[arm].auc[1]),
                    "pooled_auc": finite(self.pooled_auc(arm)),
                    "fold_aucs": [finite(a) for a in self.arms[arm].fold_aucs],
                }
                for arm in ARMS
            },
        }

    def write_predictions(self, path: str | os.PathLike[str]) -> Path:
        """One row per slide: fold, label, and each arm's out-of-fold probability of every class."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["slide", "fold", "label"] + [f"{arm}_p_{c}" for arm in ARMS for c in self.class_names]
        )
        for name, label in self.labels.items():
            probs = [f"{p:.6f}" for arm in ARMS for p in self.arms[arm].probabilities[name]]
            writer.writerow([name, self.folds[name], self.class_names[label], *probs])
        return write_text_atomic(Path(path), buffer.getvalue())


def _arm(name: str, result: CrossValResult) -> AblationArm:
    probabilities = {
        slide: list(map(float, p)) for f in result.folds for slide, p in zip(f.test_slides, f.probabilities)
    }
    return AblationArm(name, tuple(f.auc for f in result.folds), probabilities)


def clinical_ablation(
    slides: Sequence[LabelledSlide],
    *,
    class_names: Sequence[str],
    clinical: ClinicalSpec,
    n_folds: int = 5,
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
) -> Generator[Progress, None, ClinicalAblation]:
    """Cross-validate the fused, slide-only and clinical-only models on the same folds (a job).

    Yields
    ------
    Progress
        ``stage="ablation"``; the two first-model arms' cross-validation progress,
        relabelled.

    Raises
    ------
    ClinicalError
        A slide without clinical values, or a value the encoding cannot take.
    TrainingError
        As :func:`~.crossval.cross_validate`.
    """
    config = TrainConfig() if config is None else config
    slides = list(slides)
    clinical = clinical.knowing(clinical_records(slides))  # every slide has values, before anything trains
    results: dict[str, CrossValResult] = {}
    for k, (arm, spec) in enumerate((("fused", clinical), ("slide_only", None))):
        job = cross_validate(
            slides,
            class_names=class_names,
            n_folds=n_folds,
            model_config=model_config,
            config=config,
            clinical=spec,
        )
        try:
            while True:
                event = next(job)
                yield Progress(
                    "ablation",
                    int(1000 * (k + event.fraction)),
                    2000,
                    f"{arm}: {event.message}",
                    rate=event.rate,
                    metrics={**event.metrics, "arm": k} if event.metrics else {},
                )
        except StopIteration as stop:
            results[arm] = stop.value
        finally:
            job.close()
    fused = results["fused"]
    by_name = {s.name: s for s in slides}
    fold_aucs, probabilities = [], {}
    for fold in fused.folds:
        test = set(fold.test_slides)
        train = [s for s in slides if s.name not in test]
        model = fit_clinical_logistic(
            clinical_records(train),
            np.array([s.label for s in train]),
            spec=clinical,
            n_classes=len(class_names),
        )
        probs = model.predict_proba(clinical_records([by_name[n] for n in fold.test_slides]))
        fold_aucs.append(roc_auc(probs, np.array(fold.test_labels)))
        probabilities.update({n: list(map(float, p)) for n, p in zip(fold.test_slides, probs)})
    if set(results["slide_only"].folds[0].test_slides) != set(fused.folds[0].test_slides):
        raise TrainingError(
            "the ablation arms were cross-validated on different folds"
        )  # same seed, same folds
    arms = {
        "fused": _arm("fused", fused),
        "slide_only": _arm("slide_only", results["slide_only"]),
        "clinical_only": AblationArm("clinical_only", tuple(fold_aucs), probabilities),
    }
    labels = {n: int(lab) for f in fused.folds for n, lab in zip(f.test_slides, f.test_labels)}
    folds = {n: f.fold for f in fused.folds for n in f.test_slides}
    yield Progress("ablation", 2000, 2000, "done")
    return ClinicalAblation(tuple(class_names), clinical.names, fused.model_type, labels, folds, arms)
