"""Choosing hyper-parameters by an inner cross-validation (nested cross-validation's inner loop).

:func:`tune_hyperparameters` tries every combination of a small :class:`TuneGrid`
(learning rate, weight decay, dropout, maximum epochs; 16 combinations by default) with
an inner stratified, patient-grouped K-fold on the slides it is given (an outer fold's
training slides: the outer test slides are never seen), pools each combination's inner
out-of-fold predictions and keeps the combination with the highest pooled AUROC (ties:
the earlier in the grid's order). Every inner training uses early stopping as usual, so
``epochs`` is the most it may run.

Cost: ``len(grid) x inner_folds`` trainings per call; ``crossval --tune`` makes one call
per outer fold (and one more for ``--refit``): 5 outer x 16 x 3 = 240 trainings with
the defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ..clinical import ClinicalSpec
from ..errors import TrainingError
from ..jobs import Progress
from ..model.config import ModelConfig
from .datasets import LabelledSlide
from .folds import stratified_group_folds
from .metrics import roc_auc
from .predict import predict_bags
from .streaming import BagSequence
from .train import TrainConfig, train_model

__all__ = ["TuneGrid", "TuneResult", "apply_candidate", "tune_hyperparameters"]


@dataclass(frozen=True)
class TuneGrid:
    """The values tried for each hyper-parameter (every combination is tried).

    Parameters
    ----------
    learning_rate
        AdamW learning rates.
    weight_decay
        AdamW weight decays.
    dropout
        The first model's dropout.
    epochs
        Maximum epochs (early stopping on the inner training's validation part).
    inner_folds
        Folds of the inner cross-validation.
    """

    learning_rate: tuple[float, ...] = (5e-4, 2e-3)
    weight_decay: tuple[float, ...] = (1e-4, 1e-2)
    dropout: tuple[float, ...] = (0.1, 0.3)
    epochs: tuple[int, ...] = (20, 40)
    inner_folds: int = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "inner_folds":
                continue
            values = getattr(self, f.name)
            if not values:
                raise ValueError(f"tune grid {f.name!r} is empty")
            object.__setattr__(self, f.name, tuple(values))
        if any(v <= 0 for v in self.learning_rate) or any(v < 0 for v in self.weight_decay):
            raise ValueError("tune grid: learning rates must be > 0 and weight decays >= 0")
        if any(not 0 <= v < 1 for v in self.dropout) or any(int(v) < 1 for v in self.epochs):
            raise ValueError("tune grid: dropout must lie in [0, 1) and epochs be >= 1")
        if self.inner_folds < 2:
            raise ValueError(f"tune grid: inner_folds must be >= 2, got {self.inner_folds}")

    def candidates(self) -> list[dict[str, float]]:
        """Every combination, in a fixed order (learning rate varies slowest)."""
        return [
            {"learning_rate": lr, "weight_decay": wd, "dropout": dr, "epochs": int(ep)}
            for lr, wd, dr, ep in itertools.product(self.learning_rate, self.weight_decay, self.dropout, self.epochs)
        ]

    def __len__(self) -> int:
        return len(self.learning_rate) * len(self.weight_decay) * len(self.dropout) * len(self.epochs)


@dataclass(frozen=True)
class TuneResult:
    """The chosen combination and every combination's pooled inner AUROC."""

    best: dict[str, float]
    scores: tuple[tuple[dict[str, float], float], ...]
    n_slides: int
    inner_folds: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (``None`` for an undefined AUROC)."""
        return {
            "best": dict(self.best),
            "inner_folds": self.inner_folds,
            "n_slides": self.n_slides,
            "candidates": [{**c, "inner_auroc": None if math.isnan(a) else a} for c, a in self.scores],
        }


def apply_candidate(
    candidate: dict[str, float], model_config: ModelConfig | None, config: TrainConfig
) -> tuple[ModelConfig | None, TrainConfig]:
    """The model and training settings with a candidate's values (dropout needs a model config)."""
    config = replace(
        config,
        learning_rate=float(candidate["learning_rate"]),
        weight_decay=float(candidate["weight_decay"]),
        epochs=int(candidate["epochs"]),
        min_epochs=min(config.min_epochs, int(candidate["epochs"])),
    )
    if model_config is not None:
        model_config = replace(model_config, dropout=float(candidate["dropout"]))
    return model_config, config


def tune_hyperparameters(
    slides: Sequence[LabelledSlide],
    *,
    class_names: Sequence[str],
    model_config: ModelConfig | None,
    config: TrainConfig,
    grid: TuneGrid = TuneGrid(),
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, TuneResult]:
    """Pick hyper-parameters by inner cross-validation on ``slides`` (a job).

    Raises
    ------
    TrainingError
        ``model_config`` is ``None`` (dropout cannot be tuned without one), or a class has
        fewer patients than inner folds.

    Yields
    ------
    Progress
        ``stage="tune"``, ``done``/``total`` in inner trainings.
    """
    if model_config is None:
        raise TrainingError("tuning needs the model's config (to set dropout)")
    slides = list(slides)
    labels = np.array([s.label for s in slides], dtype=np.int64)
    patients = np.array([s.patient for s in slides], dtype=object)
    folds = stratified_group_folds(
        labels, patients, n_folds=grid.inner_folds, class_names=class_names, seed=config.seed + 1
    )
    inner_config = replace(config, threshold=0.5)  # inner models are scored by AUROC only
    candidates = grid.candidates()
    total = len(candidates) * len(folds)
    scores: list[tuple[dict[str, float], float]] = []
    done = 0
    for candidate in candidates:
        mc, tc = apply_candidate(candidate, model_config, inner_config)
        probs = np.zeros((len(slides), len(class_names)))
        for test_idx in folds:
            train_idx = np.setdiff1d(np.arange(len(slides)), test_idx)
            job = train_model(
                [slides[i] for i in train_idx], class_names=class_names, model_config=mc, config=tc, clinical=clinical
            )
            try:
                while True:
                    event = next(job)
                    yield Progress("tune", done, total, f"{_text(candidate)}: {event.message}")
            except StopIteration as stop:
                trained = stop.value
            finally:
                job.close()
            test = [slides[i] for i in test_idx]
            probs[test_idx] = predict_bags(trained.model, BagSequence(test, trained.model.config))
            done += 1
        auc = roc_auc(probs, labels)
        scores.append((candidate, auc))
        yield Progress("tune", done, total, f"{_text(candidate)}: inner AUROC {auc:.3f}")
    ranked = [i for i, (_, a) in enumerate(scores) if not math.isnan(a)]
    if not ranked:
        raise TrainingError("tuning: no combination gave a defined inner AUROC")
    best = max(ranked, key=lambda i: (scores[i][1], -i))
    return TuneResult(dict(scores[best][0]), tuple(scores), len(slides), len(folds))


def _text(candidate: dict[str, float]) -> str:
    return (
        f"lr {candidate['learning_rate']:g} wd {candidate['weight_decay']:g} dropout {candidate['dropout']:g} "
        f"epochs {int(candidate['epochs'])}"
    )
