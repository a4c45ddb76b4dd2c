"""K-fold cross-validation of the first model (stratified; patient-grouped), pooled out of fold.

Folds come from scikit-learn's ``StratifiedGroupKFold``: every patient's slides in one
fold, the classes spread evenly. Each fold (:func:`~.fold_run.run_fold`, callable on its own, e.g.
one task per fold) trains on the other folds (holding out a stratified validation part
of them for early stopping and for a tuned threshold, as :func:`~.train.train_model`
does) and predicts its own slides with every patch. Reported per fold: AUC (one-vs-rest
macro for > 2 classes), balanced accuracy and the confusion matrix; over folds: mean and
standard deviation; pooled: every slide's out-of-fold prediction, scored once with
bootstrap confidence intervals (:meth:`CrossValResult.pooled_report`).

With ``refit=True`` a final model is trained on every slide (the model to deploy): as
many epochs as the folds' median best epoch, no hold-out, the threshold chosen by the
threshold rule on the pooled out-of-fold predictions. With ``tune`` (nested
cross-validation, :mod:`.tuning`) each fold first picks its hyper-parameters by an inner
cross-validation on its training slides only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..atomic import write_json_atomic
from ..clinical import ClinicalSpec
from ..errors import TrainingError
from ..jobs import Progress
from ..model.checkpoint import Checkpoint
from ..model.config import ModelConfig
from .clinical_values import check_clinical_values
from .datasets import LabelledSlide, clinical_records
from .evaluation import tune_threshold
from .fold_cluster import run_folds_on_cluster
from .fold_run import FoldResult, FoldRun, as_fold_events, run_fold
from .folds import stratified_group_folds
from .memory import prepare_slides
from .metrics import finite_or_none
from .report import EvaluationReport, evaluate_predictions
from .train import DEFAULT_TRAIN_CONFIG, TrainConfig, TrainResult, train_model
from .tuning import TuneGrid, TuneResult, apply_candidate, tune_hyperparameters

T = TypeVar("T")

__all__ = ["CrossValResult", "FoldResult", "FoldRun", "cross_validate", "refit_model", "run_fold"]


@dataclass(frozen=True)
class CrossValResult:
    """All folds, their summary, the pooled out-of-fold predictions and the refitted model."""

    class_names: tuple[str, ...]
    model_type: str
    folds: tuple[FoldResult, ...]
    seed: int
    models: tuple[Checkpoint, ...] = field(default=(), repr=False, compare=False)
    threshold_rule: str = "0.5"
    refit: TrainResult | None = field(default=None, repr=False, compare=False)
    tuning: tuple[TuneResult, ...] = field(default=(), repr=False, compare=False)

    def _stat(self, key: str) -> tuple[float, float]:
        values = np.array([getattr(f, key) for f in self.folds], dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return math.nan, math.nan
        return float(np.mean(values)), float(np.std(values, ddof=1)) if values.size > 1 else 0.0

    @property
    def auc(self) -> tuple[float, float]:
        """Mean and standard deviation of the fold AUCs (folds with an undefined AUC left out)."""
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
    def bags_per_second(self) -> float:
        """Training throughput: bags (slides) seen by training steps per second of training."""
        seen = sum(f.n_train * f.epochs_run for f in self.folds)
        return seen / max(1e-9, sum(f.train_seconds for f in self.folds))

    # -- pooled out-of-fold predictions ---------------------------------------------------
    def pooled(self) -> dict[str, Any]:
        """Every slide's out-of-fold prediction.

        The keys are ``slides``, ``patients``, ``folds``, ``labels`` ``(N,)``, ``probabilities``
        ``(N, C)`` and ``predicted`` ``(N,)`` (each at its fold's threshold).
        """
        return {
            "slides": [s for f in self.folds for s in f.test_slides],
            "patients": [p for f in self.folds for p in (f.test_patients or f.test_slides)],
            "folds": np.array([f.fold for f in self.folds for _ in f.test_slides], dtype=np.int64),
            "labels": np.array([y for f in self.folds for y in f.test_labels], dtype=np.int64),
            "probabilities": np.array([p for f in self.folds for p in f.probabilities], dtype=np.float64),
            "predicted": np.array([y for f in self.folds for y in f.predicted], dtype=np.int64),
        }

    def pooled_report(self, *, n_bootstrap: int = 1000, seed: int | None = None,
                      patients: bool = False) -> EvaluationReport:
        """Score the pooled out-of-fold predictions once, with bootstrap 95 % intervals.

        Parameters
        ----------
        n_bootstrap
            Bootstrap resamples over slides.
        seed
            Bootstrap seed (default: the cross-validation's seed).
        patients
            Also score patients (mean of their slides' probabilities).
        """
        pooled = self.pooled()
        thresholds = {f.threshold for f in self.folds}
        return evaluate_predictions(
            pooled["probabilities"],
            pooled["labels"],
            class_names=self.class_names,
            slides=pooled["slides"],
            threshold=thresholds.pop() if len(thresholds) == 1 else math.nan,
            predicted=pooled["predicted"],
            patients=pooled["patients"] if patients else None,
            n_bootstrap=n_bootstrap,
            seed=self.seed if seed is None else seed,
        )

    # -- records ----------------------------------------------------------------------------
    def to_json(self, report: EvaluationReport | None = None) -> dict[str, Any]:
        """A JSON-serialisable record (summary, every fold, the pooled report if given); ``null``, never NaN."""
        (auc_m, auc_s), (bacc_m, bacc_s) = self.auc, self.balanced_accuracy
        record: dict[str, Any] = {
            "model_type": self.model_type,
            "class_names": list(self.class_names),
            "seed": self.seed,
            "n_folds": len(self.folds),
            "auc_mean": auc_m,
            "auc_sd": auc_s,
            "balanced_accuracy_mean": bacc_m,
            "balanced_accuracy_sd": bacc_s,
            "confusion": self.confusion.tolist(),
            "threshold_rule": self.threshold_rule,
            "train_bags_per_second": self.bags_per_second,
            "folds": [asdict(f) for f in self.folds],
        }
        if report is not None:
            record["pooled"] = report.to_json()
        if self.tuning:
            record["tuning"] = [t.to_json() for t in self.tuning]
        if self.refit is not None:
            training = self.refit.checkpoint.training
            record["refit"] = {
                "epochs": training.get("epochs_run"),
                "threshold": self.refit.checkpoint.threshold,
                "threshold_tuned_on": training.get("threshold_tuned_on"),
                "n_train": training.get("n_train"),
            }
        return finite_or_none(record)

    def summary(self) -> str:
        """Human-readable lines: one per fold, then mean +- sd."""
        lines = [f"{'fold':>4} {'AUC':>6} {'bacc':>6} {'train':>5} {'test':>4}  confusion (rows: true)"]
        for f in self.folds:
            auc = "   n/a" if math.isnan(f.auc) else f"{f.auc:6.3f}"
            lines.append(f"{f.fold:>4} {auc} {f.balanced_accuracy:6.3f} {f.n_train:5d} {f.n_test:4d}  {f.confusion}")
        (auc_m, auc_s), (bacc_m, bacc_s) = self.auc, self.balanced_accuracy
        lines.append(
            f"{self.model_type}: AUC {auc_m:.3f} +- {auc_s:.3f}, balanced accuracy {bacc_m:.3f} +- {bacc_s:.3f} "
            f"over {len(self.folds)} folds; training {self.bags_per_second:.1f} bags/s"
        )
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike[str], report: EvaluationReport | None = None) -> Path:
        """Write :meth:`to_json` atomically (strict JSON: ``null`` for undefined values)."""
        json.dumps(self.to_json(report), allow_nan=False)  # fail here, not in a reader, if a NaN slipped through
        return write_json_atomic(path, self.to_json(report), sort_keys=False)


def cross_validate(
    slides: Sequence[LabelledSlide],
    *,
    class_names: Sequence[str],
    n_folds: int = 5,
    model_config: ModelConfig | None = None,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    keep_models: bool = False,
    refit: bool = False,
    tune: TuneGrid | None = None,
    clinical: ClinicalSpec | None = None,
    scheduler: str | None = None,
    workers: int = 2,
) -> Generator[Progress, None, CrossValResult]:
    """K-fold cross-validation (a job). ``config.seed`` seeds the folds and every fold's training.

    Parameters
    ----------
    slides, class_names
        The labelled slides and their classes.
    n_folds
        K.
    model_config, config
        The first model's hyper-parameters and the optimisation settings (the threshold
        rule included: tuned per fold on its validation part).
    keep_models
        Keep each fold's model in ``CrossValResult.models``.
    refit
        Train the final model on every slide at the end (see the module docstring).
    tune
        Nested cross-validation over this grid (see :mod:`.tuning`).
    clinical
        Fuse these clinical variables with the slide; each fold fits their encoding on
        its own training slides (the levels of categorical variables are those of every
        slide, see :meth:`~..clinical.ClinicalSpec.knowing`).
    scheduler
        ``"local"`` or a dask scheduler's address: the folds run as tasks on a cluster
        (:mod:`.fold_cluster`), each reading its slides from the shared cache, with the
        same results as here for the same seed; ``None`` runs them one after the other.
    workers
        Workers of the ``"local"`` cluster.

    Yields
    ------
    Progress
        ``stage="crossval"``, ``done``/``total`` in folds x 1000 (plus one for the refit);
        per-epoch events carry the training metrics plus ``fold``; one event per fold
        carries ``fold_auc``.
    """
    slides = list(slides)
    labels = np.array([s.label for s in slides], dtype=np.int64)
    patients = np.array([s.patient for s in slides], dtype=object)
    if clinical is not None:  # every slide's values checked before any fold trains
        clinical = clinical.knowing(clinical_records(slides))
        check_clinical_values(clinical_records(slides), clinical)
    folds = stratified_group_folds(labels, patients, n_folds=n_folds, class_names=class_names, seed=config.seed)
    steps = len(folds) + (1 if refit else 0)
    results: list[FoldResult] = []
    models: list[Checkpoint] = []
    tunings: list[TuneResult] = []
    model_type = model_config.model_type if model_config is not None else "regional"
    if scheduler:
        runs = yield from run_folds_on_cluster(
            slides, folds, class_names=class_names, model_config=model_config, config=config, tune=tune,
            clinical=clinical, scheduler=scheduler, workers=workers, total=1000 * steps,
        )
    else:
        # in memory or streamed, once for every fold
        slides = yield from _relabel(prepare_slides(slides, mode=config.stream), "all folds", 0, 1000 * steps)
        runs = None
    for k, test_idx in enumerate(folds):
        if runs is not None:
            run = runs[k]
        else:
            train_idx = np.setdiff1d(np.arange(len(slides)), test_idx)
            job = run_fold(
                [slides[i] for i in train_idx], [slides[i] for i in test_idx], fold=k + 1, class_names=class_names,
                model_config=model_config, config=config, tune=tune, clinical=clinical,
            )
            run = yield from _relabel(job, f"fold {k + 1}/{len(folds)}", 1000 * k, 1000 * steps)
        results.append(run.result)
        model_type = run.checkpoint.config.model_type
        if keep_models:
            models.append(run.checkpoint)
        if run.tuning is not None:
            tunings.append(run.tuning)
        if runs is not None:
            continue  # reported as each task finished
        auc = run.result.auc
        yield Progress(
            "crossval", 1000 * (k + 1), 1000 * steps, f"fold {k + 1}/{len(folds)}: AUC {auc:.3f}",
            metrics={"fold": k + 1, "fold_auc": auc, "fold_bacc": run.result.balanced_accuracy},
        )
    result = CrossValResult(tuple(class_names), model_type, tuple(results), config.seed, tuple(models),
                            config.threshold_rule.text, None, tuple(tunings))
    if refit:
        final = yield from _relabel(
            refit_model(slides, result, class_names=class_names, model_config=model_config, config=config, tune=tune,
                        clinical=clinical),
            "refit on all slides", 1000 * len(folds), 1000 * steps,
        )
        result = replace(result, refit=final)
    return result


def _relabel(job: Generator[Progress, None, T], what: str, offset: int, total: int) -> Generator[Progress, None, T]:
    try:
        while True:
            event = next(job)
            yield Progress("crossval", offset + int(1000 * event.fraction), total, f"{what}: {event.message}",
                           rate=event.rate, metrics=event.metrics)
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()


def refit_model(
    slides: Sequence[LabelledSlide],
    crossval: CrossValResult,
    *,
    class_names: Sequence[str],
    model_config: ModelConfig | None = None,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    tune: TuneGrid | None = None,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, TrainResult]:
    """The model to deploy: trained on every slide after cross-validation (a job).

    Epochs: the folds' median best epoch (the early-stopping point cross-validation
    found); no hold-out. Threshold: the rule applied to the pooled out-of-fold
    predictions (a fixed value stays as is). With ``tune``, the hyper-parameters are
    chosen by an inner cross-validation over every slide first.
    """
    slides = list(slides)
    if tune is not None:
        job = tune_hyperparameters(
            slides, class_names=class_names, model_config=model_config, config=config, grid=tune, clinical=clinical
        )
        tuning = yield from as_fold_events(job, 0, 0, 500)
        model_config, config = apply_candidate(tuning.best, model_config, config)
    rule = config.threshold_rule
    threshold: float = rule.target
    if rule.tuned:
        pooled = crossval.pooled()
        try:
            threshold = tune_threshold(rule, pooled["probabilities"], pooled["labels"], 1)
        except ValueError as exc:
            raise TrainingError(f"refit: {exc}") from None
    epochs = max(1, round(float(np.median([f.best_epoch for f in crossval.folds]))))
    final_config = replace(config, epochs=epochs, val_fraction=0.0, threshold=threshold)
    trained = yield from as_fold_events(
        train_model(slides, class_names=class_names, model_config=model_config, config=final_config, clinical=clinical),
        0, 500 if tune is not None else 0, 1000,
    )
    training = dict(trained.checkpoint.training)
    training.update(
        threshold_rule=rule.text,
        threshold_tuned_on=f"pooled out-of-fold predictions of {len(crossval.pooled()['slides'])} slides"
        if rule.tuned else None,
        refit_epochs=f"median best epoch of {len(crossval.folds)} folds",
    )
    return replace(trained, checkpoint=replace(trained.checkpoint, training=training))
