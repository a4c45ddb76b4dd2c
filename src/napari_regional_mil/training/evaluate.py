"""Scoring a trained model on labelled slides: a held-out test split, or an external cohort.

The one path the CLI's ``evaluate`` and the Cohort widget's "Evaluate" share:
:func:`select_split` picks the slides (the table's ``split=test`` rows by default; every
row of a table without a split column, i.e. an external cohort), :func:`check_classes`
refuses labels the model does not know, :func:`evaluate_cohort` loads the slides'
embeddings (caches or feature files), predicts every slide with every patch at the
model's own threshold (never tuned here: these are test slides) and returns an
:class:`Evaluation` whose report has the metrics with bootstrap confidence intervals
(:mod:`.report`). :func:`write_evaluation` writes its files atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import CheckpointError, ClinicalError, CohortError
from ..jobs import Progress, run_job
from ..model.checkpoint import Checkpoint
from ..model.first_model import make_bag
from ..runrecord import write_run_record
from .cohort import Cohort
from .datasets import LabelledSlide, load_cohort_embeddings, load_feature_bags
from .outputs import staged_folder, write_report
from .predict import predict_bags
from .report import EvaluationReport, evaluate_predictions

__all__ = [
    "Evaluation",
    "check_classes",
    "evaluate_cohort",
    "evaluate_slides",
    "select_split",
    "validation_report",
    "write_evaluation",
]

Split = Literal["auto", "test", "all"]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What :func:`evaluate_cohort` returns.

    Parameters
    ----------
    report
        The metrics, predictions and curves.
    cohort
        The scored slides (the selected rows, in the model's class order).
    split
        Which rows were scored: ``"test"`` or ``"all"``.
    model
        The checkpoint's file name (or ``"model"``).
    slides
        The scored slides (embeddings, labels, where they came from).
    model_path
        The checkpoint's file, when it was loaded from one.
    """

    report: EvaluationReport
    cohort: Cohort
    split: str
    model: str
    slides: tuple[LabelledSlide, ...] = ()
    model_path: Path | None = None

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` adds to the report: the model, the table and the rows scored."""
        return {"model": self.model, "labels": self.cohort.path.name, "split": self.split}


def select_split(cohort: Cohort, split: Split = "auto") -> tuple[Cohort, str]:
    """The rows to score and what they are (``"test"`` or ``"all"``).

    ``"auto"``: the ``split=test`` rows; every row when no row has a split (an external
    cohort). ``"test"``: the ``split=test`` rows. ``"all"``: every row.

    Raises
    ------
    CohortError
        No test rows where they are wanted, or the scored rows hold one class only
        (AUROC undefined), naming the file.
    """
    name = cohort.path.name
    if split == "all" or (split == "auto" and all(r.split is None for r in cohort.rows)):
        chosen, what = cohort, "all"
    else:
        chosen, what = cohort.subset([i for i, r in enumerate(cohort.rows) if r.split == "test"]), "test"
        if not chosen.rows:
            splits = sorted({r.split for r in cohort.rows if r.split})
            raise CohortError(
                f"{name}: no rows with split=test (splits present: {', '.join(splits) or 'none'}); "
                "mark the held-out slides split=test, or score every slide with --split all"
            )
    present = sorted({r.label for r in chosen.rows})
    if len(present) < 2:
        where = "the test split holds" if what == "test" else "the table holds"
        raise CohortError(
            f"{name}: {where} one class only ({present[0]!r}): AUROC and specificity are undefined; "
            "add slides of the other class(es)"
        )
    return chosen, what


def check_classes(checkpoint: Checkpoint, cohort: Cohort) -> Cohort:
    """The cohort in the model's class order.

    Raises
    ------
    CheckpointError
        A label the model does not know, naming the model, the table, the row and the label.
    """
    known = set(checkpoint.class_names)
    model = checkpoint.path.name if checkpoint.path is not None else "model"
    for row in cohort.rows:
        if row.label not in known:
            raise CheckpointError(
                f"{model}: classes {', '.join(checkpoint.class_names)} do not match the labels of "
                f"{cohort.where(row)}: label {row.label!r} is not one of them"
            )
    return replace(cohort, class_names=tuple(checkpoint.class_names))


def evaluate_slides(
    checkpoint: Checkpoint,
    slides: list[LabelledSlide],
    *,
    patients: bool = False,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> Generator[Progress, None, EvaluationReport]:
    """Predict labelled slides (labels in the model's class order) and score them (a job).

    Raises
    ------
    CheckpointError
        A slide from another encoder or tiling than the model's.
    ClinicalError
        The model takes clinical variables and a slide lacks them or holds a value it
        cannot take (naming the row and column), before anything is predicted.
    """
    for slide in slides:
        checkpoint.check_compatible(slide.embeddings)
    network = checkpoint.model
    encoding = network.config.clinical
    if encoding is not None:  # every slide's values, before any prediction
        for slide in slides:
            if slide.clinical is None:
                names = ", ".join(encoding.names)
                raise ClinicalError(
                    f"slide {slide.name!r}: the model takes clinical variables ({names}); none were given"
                )
            encoding.encode(slide.clinical)
    probabilities = np.zeros((len(slides), len(checkpoint.class_names)))
    for i, slide in enumerate(slides):
        yield Progress("evaluate", i, len(slides), f"predicting {slide.name}")
        bag = make_bag(slide.embeddings, network.config, clinical=slide.clinical)
        probabilities[i] = predict_bags(network, [bag], device=device)[0]
    network.to("cpu")
    yield Progress("evaluate", len(slides), len(slides),
                   f"scoring {len(slides)} slides ({n_bootstrap} bootstrap resamples)")
    return evaluate_predictions(
        probabilities,
        np.array([s.label for s in slides], dtype=np.int64),
        class_names=checkpoint.class_names,
        slides=[s.name for s in slides],
        threshold=checkpoint.threshold if threshold is None else float(threshold),
        positive_class=checkpoint.positive_class,
        patients=[s.patient for s in slides] if patients else None,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


def evaluate_cohort(
    checkpoint: Checkpoint,
    cohort: Cohort,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    features_dir: str | os.PathLike[str] | None = None,
    split: Split = "auto",
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    region_size: int = 8,
) -> Generator[Progress, None, Evaluation]:
    """Score ``checkpoint`` on a labelled cohort (a job; see the module docstring).

    Parameters
    ----------
    checkpoint
        The trained model (its threshold decides, unless ``threshold`` is given).
    cohort
        The labelled table.
    cache_dir, features_dir
        Where the slides' embeddings are: embedding caches (of the model's encoder) or
        feature files of another tool. Exactly one.
    split
        Which rows to score (see :func:`select_split`).
    threshold
        A fixed threshold to decide at instead of the model's.
    n_bootstrap, seed
        Bootstrap resamples of the confidence intervals and their seed.
    device
        Where the model runs.
    region_size
        k of the regions rebuilt from feature files.

    Raises
    ------
    CohortError, CheckpointError, CacheError
        Naming the file and the row or field (see the functions above).
    """
    if (cache_dir is None) == (features_dir is None):
        raise ValueError("give exactly one of cache_dir and features_dir")
    chosen, what = select_split(check_classes(checkpoint, cohort), split)
    if features_dir is not None:
        slides = yield from load_feature_bags(chosen, features_dir=features_dir, region_size=region_size)
    else:
        assert cache_dir is not None
        slides = yield from load_cohort_embeddings(chosen, cache_dir=cache_dir, encoder=checkpoint.encoder.get("name"))
    report = yield from evaluate_slides(
        checkpoint, slides, patients=chosen.has_patients, threshold=threshold, n_bootstrap=n_bootstrap, seed=seed,
        device=device,
    )
    model = checkpoint.path.name if checkpoint.path is not None else "model"
    return Evaluation(report, chosen, what, model, tuple(slides), checkpoint.path)


def write_evaluation(
    out: str | os.PathLike[str],
    evaluation: Evaluation,
    *,
    run: Callable[[list[str]], Mapping[str, Any]] | None = None,
) -> Path:
    """Write an evaluation's files into the folder ``out`` (all or none; see :mod:`.outputs`).

    ``run`` makes the run record from the names of the files written; it is written as
    ``run.json``.
    """
    out = Path(out)
    with staged_folder(out) as stage:
        written = [p.name for p in write_report(stage, evaluation.report, extra=evaluation.record())]
        if run is not None:
            write_run_record(stage / "run.json", run([*written, "run.json"]))
    return out


def validation_report(
    checkpoint: Checkpoint, slides: Sequence[LabelledSlide], *, n_bootstrap: int = 1000, seed: int = 0
) -> EvaluationReport | None:
    """The trained model scored on its own validation slides.

    ``None`` when there are none or they hold one class. This is what the Train widget
    shows after training without cross-validation.

    ``slides`` are the validation slides (``TrainResult.validation_slides`` names them).
    The model's threshold may have been tuned on these very slides: the figures are
    optimistic, which is why test slides are scored with :func:`evaluate_cohort`.
    """
    slides = list(slides)
    if len({s.label for s in slides}) < 2:
        return None
    return run_job(evaluate_slides(checkpoint, slides, n_bootstrap=n_bootstrap, seed=seed))
