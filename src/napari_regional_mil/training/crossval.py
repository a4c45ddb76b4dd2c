"""K-fold cross-validation of the first model (stratified; patient-grouped).

Each fold trains on the other folds (holding out a stratified validation part of them
for early stopping, as :func:`~.train.train_model` does) and tests on its own slides
with every patch. Reported per fold: AUC (one-vs-rest macro for > 2 classes), balanced
accuracy and the confusion matrix; over folds: mean and standard deviation.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from ..errors import TrainingError
from ..jobs import Progress
from ..model.checkpoint import Checkpoint
from ..model.clinical import ClinicalSpec
from ..model.config import ModelConfig
from ..model.first_model import make_bag
from .datasets import LabelledSlide, clinical_records
from .evaluation import decide
from .metrics import balanced_accuracy, confusion_matrix, roc_auc
from .predict import predict_bags
from .train import TrainConfig, train_model

__all__ = ["CrossValResult", "FoldResult", "cross_validate", "stratified_group_folds"]


@dataclass(frozen=True)
class FoldResult:
    """Test metrics of one fold."""

    fold: int
    auc: float
    balanced_accuracy: float
    confusion: list[list[int]]
    n_train: int
    n_test: int
    best_epoch: int
    epochs_run: int
    train_seconds: float
    test_slides: list[str]
    test_labels: list[int]
    probabilities: list[list[float]]


@dataclass(frozen=True)
class CrossValResult:
    """All folds and their summary."""

    class_names: tuple[str, ...]
    model_type: str
    folds: tuple[FoldResult, ...]
    seed: int
    models: tuple[Checkpoint, ...] = field(default=(), repr=False, compare=False)

    def _stat(self, key: str) -> tuple[float, float]:
        values = np.array([getattr(f, key) for f in self.folds], dtype=np.float64)
        return float(np.mean(values)), float(np.std(values, ddof=1)) if values.size > 1 else 0.0

    @property
    def auc(self) -> tuple[float, float]:
        """Mean and standard deviation of the fold AUCs."""
        return self._stat("auc")

    @property
    def balanced_accuracy(self) -> tuple[float, float]:
        """Mean and standard deviation of the fold balanced accuracies."""
        return self._stat("balanced_accuracy")

    @property
    def confusion(self) -> np.ndarray:
        """Confusion matrix summed over folds (rows: true class)."""
        return np.sum([np.array(f.confusion) for f in self.folds], axis=0)

    @property
    def slides_per_second(self) -> float:
        """Training throughput: slides seen by training steps per second of training."""
        seen = sum(f.n_train * f.epochs_run for f in self.folds)
        return seen / max(1e-9, sum(f.train_seconds for f in self.folds))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable record (summary and every fold)."""
        (auc_m, auc_s), (bacc_m, bacc_s) = self.auc, self.balanced_accuracy
        return {
            "model_type": self.model_type,
            "class_names": list(self.class_names),
            "seed": self.seed,
            "n_folds": len(self.folds),
            "auc_mean": auc_m,
            "auc_sd": auc_s,
            "balanced_accuracy_mean": bacc_m,
            "balanced_accuracy_sd": bacc_s,
            "confusion": self.confusion.tolist(),
            "train_slides_per_second": self.slides_per_second,
            "folds": [asdict(f) for f in self.folds],
        }

    def summary(self) -> str:
        """Human-readable lines: one per fold, then mean +- sd."""
        lines = [f"{'fold':>4} {'AUC':>6} {'bacc':>6} {'train':>5} {'test':>4}  confusion (rows: true)"]
        for f in self.folds:
            lines.append(
                f"{f.fold:>4} {f.auc:6.3f} {f.balanced_accuracy:6.3f} {f.n_train:5d} {f.n_test:4d}  {f.confusion}"
            )
        (auc_m, auc_s), (bacc_m, bacc_s) = self.auc, self.balanced_accuracy
        lines.append(f"{self.model_type}: AUC {auc_m:.3f} +- {auc_s:.3f}, balanced accuracy {bacc_m:.3f} +- {bacc_s:.3f}")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_json` atomically."""
        return write_json_atomic(path, self.to_json(), sort_keys=False)


def stratified_group_folds(
    labels: np.ndarray, patients: np.ndarray, *, n_folds: int, class_names: Sequence[str], seed: int = 0
) -> list[np.ndarray]:
    """Test indices of each fold: every patient in one fold, every class in every fold.

    Raises
    ------
    TrainingError
        A class has fewer patients than folds (some fold would have no slide of it).
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients, dtype=object)
    if n_folds < 2:
        raise TrainingError(f"cross-validation needs at least 2 folds, got {n_folds}")
    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(patients.tolist()))
    patient_label = {p: int(np.bincount(labels[patients == p]).argmax()) for p in unique}
    fold_of: dict[Any, int] = {}
    sizes = np.zeros(n_folds, dtype=np.int64)
    for c in range(len(class_names)):
        members = [p for p in unique if patient_label[p] == c]
        if 0 < len(members) < n_folds:
            raise TrainingError(
                f"class {class_names[c]!r} has {len(members)} patient(s), fewer than {n_folds} folds: some test fold "
                f"would hold none of it; use --folds {max(2, len(members))} or fewer, or add slides"
            )
        in_class = np.zeros(n_folds, dtype=np.int64)
        for i in rng.permutation(len(members)):
            # the fold with the fewest patients of this class, then the fewest slides
            fold = int(np.lexsort((sizes, in_class))[0])
            fold_of[members[i]] = fold
            in_class[fold] += 1
            sizes[fold] += int((patients == members[i]).sum())
    folds = np.array([fold_of[p] for p in patients])
    return [np.flatnonzero(folds == k) for k in range(n_folds)]


def cross_validate(
    slides: Sequence[LabelledSlide],
    *,
    class_names: Sequence[str],
    n_folds: int = 5,
    model_config: ModelConfig | None = None,
    config: TrainConfig = TrainConfig(),
    keep_models: bool = False,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, CrossValResult]:
    """K-fold cross-validation (a job). ``config.seed`` seeds the folds and every fold's training.

    ``clinical`` fuses these clinical variables with the slide; each fold fits their
    encoding on its own training slides (the levels of categorical variables are those
    of every slide, see :meth:`~..model.clinical.ClinicalSpec.knowing`).
    ``keep_models=True`` keeps each fold's trained model in ``CrossValResult.models``
    (e.g. to inspect its attention on the fold's test slides).

    Yields
    ------
    Progress
        ``stage="crossval"``, ``done``/``total`` in folds x 1000; per-epoch events carry
        the training metrics plus ``fold``; one event per fold carries ``fold_auc``.
    """
    slides = list(slides)
    labels = np.array([s.label for s in slides], dtype=np.int64)
    patients = np.array([s.patient for s in slides], dtype=object)
    if clinical is not None:
        clinical = clinical.knowing(clinical_records(slides))
    folds = stratified_group_folds(labels, patients, n_folds=n_folds, class_names=class_names, seed=config.seed)
    results: list[FoldResult] = []
    models: list[Checkpoint] = []
    model_type = model_config.model_type if model_config is not None else "regional"
    for k, test_idx in enumerate(folds):
        train_idx = np.setdiff1d(np.arange(len(slides)), test_idx)
        job = train_model(
            [slides[i] for i in train_idx],
            class_names=class_names,
            model_config=model_config,
            config=config,
            clinical=clinical,
        )
        started = time.perf_counter()
        try:
            while True:
                event = next(job)
                inner = event.fraction
                yield Progress(
                    "crossval",
                    int(1000 * (k + inner)),
                    1000 * len(folds),
                    f"fold {k + 1}/{len(folds)}: {event.message}",
                    rate=event.rate,
                    metrics={**event.metrics, "fold": k + 1} if event.metrics else {},
                )
        except StopIteration as stop:
            trained = stop.value
        finally:
            job.close()
        seconds = time.perf_counter() - started
        if keep_models:
            models.append(trained.checkpoint)
        model_type = trained.model.config.model_type
        test = [slides[i] for i in test_idx]
        bags = [make_bag(s.embeddings, trained.model.config, clinical=s.clinical) for s in test]
        probs = predict_bags(trained.model, bags)
        test_labels = labels[test_idx]
        predicted = decide(probs, config.threshold, 1)
        auc = roc_auc(probs, test_labels)
        if math.isnan(auc):
            raise TrainingError(f"fold {k + 1}: the test slides hold only one class; AUC is undefined")
        results.append(
            FoldResult(
                fold=k + 1,
                auc=auc,
                balanced_accuracy=balanced_accuracy(predicted, test_labels, len(class_names)),
                confusion=confusion_matrix(predicted, test_labels, len(class_names)).tolist(),
                n_train=int(trained.checkpoint.training["n_train"]),
                n_test=len(test),
                best_epoch=trained.best_epoch,
                epochs_run=len(trained.history),
                train_seconds=seconds,
                test_slides=[s.name for s in test],
                test_labels=test_labels.tolist(),
                probabilities=probs.tolist(),
            )
        )
        yield Progress(
            "crossval",
            1000 * (k + 1),
            1000 * len(folds),
            f"fold {k + 1}/{len(folds)}: AUC {auc:.3f}",
            metrics={"fold": k + 1, "fold_auc": auc, "fold_bacc": results[-1].balanced_accuracy},
        )
    return CrossValResult(tuple(class_names), model_type, tuple(results), config.seed, tuple(models))
