"""One fold of cross-validation (:func:`run_fold`): train on the other folds, predict this one.

Independent of the other folds (the same inputs give the same fold), so a fold runs the
same way inside :func:`~.crossval.cross_validate` and as one task on a dask.distributed
cluster (:mod:`.fold_cluster`).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from ..clinical import ClinicalSpec
from ..jobs import Progress
from ..model.checkpoint import Checkpoint
from ..model.config import ModelConfig
from .datasets import LabelledSlide
from .evaluation import decide
from .metrics import balanced_accuracy, confusion_matrix, roc_auc
from .predict import predict_bags
from .streaming import BagSequence
from .train import DEFAULT_TRAIN_CONFIG, TrainConfig, train_model
from .tuning import TuneGrid, TuneResult, apply_candidate, tune_hyperparameters

__all__ = ["FoldResult", "FoldRun", "as_fold_events", "run_fold"]

T = TypeVar("T")


@dataclass(frozen=True)
class FoldResult:
    """Test metrics and out-of-fold predictions of one fold."""

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
    threshold: float = 0.5
    predicted: list[int] = field(default_factory=list)
    test_patients: list[str] = field(default_factory=list)
    hyperparameters: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class FoldRun:
    """What :func:`run_fold` returns: the fold's result, its model, and its tuning."""

    result: FoldResult
    checkpoint: Checkpoint
    tuning: TuneResult | None = None


def run_fold(
    train: Sequence[LabelledSlide],
    test: Sequence[LabelledSlide],
    *,
    fold: int,
    class_names: Sequence[str],
    model_config: ModelConfig | None = None,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    tune: TuneGrid | None = None,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, FoldRun]:
    """Train on ``train`` and predict ``test``: one fold of cross-validation (a job).

    Independent of the other folds (the same inputs give the same fold), so folds can
    run as separate tasks.

    Yields
    ------
    Progress
        ``stage="fold"``, ``done``/``total`` in thousandths of the fold; the training's
        per-epoch metrics are passed on with ``fold`` added.
    """
    train, test = list(train), list(test)
    tuning: TuneResult | None = None
    if tune is not None:
        job = tune_hyperparameters(
            train, class_names=class_names, model_config=model_config, config=config, grid=tune, clinical=clinical
        )
        tuning = yield from as_fold_events(job, fold, 0, 500)
        model_config, config = apply_candidate(tuning.best, model_config, config)
    started = time.perf_counter()
    trained = yield from as_fold_events(
        train_model(train, class_names=class_names, model_config=model_config, config=config, clinical=clinical),
        fold,
        500 if tune is not None else 0,
        1000,
    )
    seconds = time.perf_counter() - started
    checkpoint = trained.checkpoint
    labels = np.array([s.label for s in test], dtype=np.int64)
    probs = predict_bags(trained.model, BagSequence(test, trained.model.config))  # one slide at a time if streamed
    predicted = np.asarray(decide(probs, checkpoint.threshold, checkpoint.positive_class))
    result = FoldResult(
        fold=fold,
        auc=roc_auc(probs, labels),
        balanced_accuracy=balanced_accuracy(predicted, labels, len(class_names)),
        confusion=confusion_matrix(predicted, labels, len(class_names)).tolist(),
        n_train=int(checkpoint.training["n_train"]),
        n_test=len(test),
        best_epoch=trained.best_epoch,
        epochs_run=len(trained.history),
        train_seconds=seconds,
        test_slides=[s.name for s in test],
        test_labels=labels.tolist(),
        probabilities=probs.tolist(),
        threshold=float(checkpoint.threshold),
        predicted=predicted.tolist(),
        test_patients=[s.patient for s in test],
        hyperparameters=dict(tuning.best) if tuning is not None else {},
    )
    return FoldRun(result, checkpoint, tuning)


def as_fold_events(job: Generator[Progress, None, T], fold: int, start: int, end: int) -> Generator[Progress, None, T]:
    """Pass a job's events on as ``stage="fold"`` in thousandths ``[start, end]`` of the fold."""
    try:
        while True:
            event = next(job)
            yield Progress(
                "fold",
                start + int((end - start) * event.fraction),
                1000,
                event.message,
                rate=event.rate,
                metrics={**event.metrics, "fold": fold} if event.metrics else {},
            )
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()
