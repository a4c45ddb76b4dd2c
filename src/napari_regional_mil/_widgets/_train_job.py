"""The Train widget's jobs, run in a worker: training a cohort, and the optimiser warm-up.

:func:`train_job` is the widget's whole run (the CLI's path: the caches opened, optional
cross-validation, the final model trained, then scored); :func:`warm_up_training` pays
torch's first-optimiser import and the training plot's first draw before the user starts training.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

from napari_regional_mil._widgets._train_plot import MATPLOTLIB_MODULES, PlotFigure, build_figure
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    from napari_regional_mil.clinical import ClinicalSpec
    from napari_regional_mil.settings import TrainConfig
    from napari_regional_mil.training.cohort import Cohort
    from napari_regional_mil.training.crossval import CrossValResult
    from napari_regional_mil.training.report import EvaluationReport
    from napari_regional_mil.training.workflow import CohortTraining, ModelOptions

__all__ = ["REPORT_BOOTSTRAP", "TRAIN_JOB_MODULES", "TrainOutcome", "train_job", "warm_up_training"]

#: ``(trained, cross-validation or None, report or None, what was scored, ROC/confusion PNGs)``.
TrainOutcome = tuple["CohortTraining", "CrossValResult | None", "EvaluationReport | None", str, dict[str, bytes]]

#: The modules :func:`train_job` imports in its worker (torch, scikit-learn, matplotlib's Agg):
#: :func:`warm_up_training` imports them first, since importing holds the GIL at times and a
#: training's start would otherwise stall the viewer for a few hundred ms.
TRAIN_JOB_MODULES = tuple(f"napari_regional_mil.training.{name}" for name in (
    "crossval", "datasets", "evaluate", "memory", "metrics", "plots", "workflow"))

#: Bootstrap resamples of the confidence intervals shown after training.
REPORT_BOOTSTRAP = 500


def warm_up_training() -> Generator[Progress, None, PlotFigure]:
    """Job: build a throw-away AdamW optimiser and the training plot's figure, so that training's start does not stall.

    The optimiser's first construction imports ``torch._dynamo`` (about 800 modules, 1-2 s
    on 2 cores); the train job's modules (:data:`TRAIN_JOB_MODULES`, scikit-learn) and
    matplotlib's import and first draw (fonts, text layout) take a second more. Returns the
    figure for :meth:`TrainingPlot.set_figure` (the widget then collects the garbage these
    imports left, :func:`._warm_up.collect_after_imports`).

    A generator with a step per import, so it stops between imports when cancelled: when
    napari quits while it runs, no library is imported while the interpreter exits (h5py's
    exit handler, registered that late, would never run, and HDF5 then crashes the process
    at exit).
    """
    modules = (*MATPLOTLIB_MODULES, *TRAIN_JOB_MODULES, "sklearn.metrics")
    steps = len(modules) + 2
    yield Progress("warm-up", 0, steps, "the optimiser")
    import torch  # lazy: torch (the warm-up runs in a worker)

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    for done, name in enumerate(modules, 1):
        yield Progress("warm-up", done, steps, f"importing {name}")
        importlib.import_module(name)
    yield Progress("warm-up", steps - 1, steps, "the training plot")
    return build_figure()


def train_job(
    cohort: Cohort, cache_dir: Path, options: ModelOptions, config: TrainConfig, n_folds: int,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, TrainOutcome]:
    """Job: open the caches, cross-validate, train the final model, then score it and draw the ROC and confusion.

    The embeddings are held in memory or streamed, by size, as the CLI; cross-validation runs when
    ``n_folds`` > 0; the score is pooled out-of-fold, else on the validation slides.

    ``clinical``: the clinical variables (a ``ClinicalSpec``) fused with the slide, or None.
    """
    from napari_regional_mil.training.crossval import cross_validate  # lazy: torch (in the worker)
    from napari_regional_mil.training.datasets import load_cohort_embeddings  # lazy: torch (in the worker)
    from napari_regional_mil.training.evaluate import validation_report  # lazy: torch (in the worker)
    from napari_regional_mil.training.memory import prepare_slides  # lazy: torch (in the worker)
    from napari_regional_mil.training.plots import report_images  # lazy: torch (in the worker)
    from napari_regional_mil.training.workflow import train_cohort  # lazy: torch (in the worker)

    slides = yield from load_cohort_embeddings(cohort, cache_dir=cache_dir)
    slides = yield from prepare_slides(slides, mode=config.stream)  # once for cross-validation and training
    cv = None
    if n_folds:
        pool = [s for s in slides if s.split != "test"]
        cv = yield from cross_validate(pool, class_names=cohort.class_names, n_folds=n_folds,
                                       model_config=options.model_config(pool, len(cohort.class_names)),
                                       config=config, clinical=clinical)
    trained = yield from train_cohort(slides, class_names=cohort.class_names, options=options, config=config,
                                      clinical=clinical)
    yield Progress("evaluate", 0, 1, "scoring and plotting")
    if cv is not None:
        report = cv.pooled_report(n_bootstrap=REPORT_BOOTSTRAP, patients=cohort.has_patients)
        what = f"pooled out-of-fold predictions of {len(cv.folds)}-fold cross-validation"
    else:
        names = set(trained.result.validation_slides)
        report = validation_report(trained.result.checkpoint, [s for s in slides if s.name in names],
                                   n_bootstrap=REPORT_BOOTSTRAP)
        what = "the validation slides (the threshold may be tuned on them: optimistic)"
    images = report_images(report) if report is not None else {}
    return trained, cv, report, what, images
