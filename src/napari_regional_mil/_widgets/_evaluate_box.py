"""The Cohort widget's "Evaluate" box: score the current model on the table's test split.

Thin: :func:`~napari_regional_mil.training.evaluate.evaluate_cohort` (the CLI's
``evaluate``) runs through :func:`~._worker.start_job` on the table's ``split=test`` rows
with the viewer's current model and decision threshold; the ROC curve and the confusion
matrix are shown (:class:`~._report_view.ReportView`, "Save plots" writes them next to
the model), and the table colours each test slide by whether its decision was correct.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from napari_regional_mil._widgets._report_view import ReportView
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.errors import CohortError
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from napari.components import ViewerModel
    from qtpy.QtCore import QObject

    from napari_regional_mil._widgets._progress_bar import JobProgressBar
    from napari_regional_mil._widgets._state import ViewerState
    from napari_regional_mil.model.checkpoint import Checkpoint
    from napari_regional_mil.training.cohort import Cohort
    from napari_regional_mil.training.cohort_table import CohortTable
    from napari_regional_mil.training.evaluate import Evaluation

__all__ = ["EvaluateBox", "evaluate_job"]


def evaluate_job(checkpoint: Checkpoint, cohort: Cohort, cache_dir: Path, threshold: float | None):
    """Job: score ``checkpoint`` on the cohort's test split, then draw the ROC and confusion."""
    from napari_regional_mil.training.evaluate import evaluate_cohort  # lazy: torch (in the worker)
    from napari_regional_mil.training.plots import report_images  # lazy: torch (in the worker)

    evaluation = yield from evaluate_cohort(checkpoint, cohort, cache_dir=cache_dir, split="test", threshold=threshold,
                                            n_bootstrap=500)
    yield Progress("evaluate", 1, 1, "plotting")
    return evaluation, report_images(evaluation.report)


class EvaluateBox(ReportView):
    """An "Evaluate test split" button and status above the report view."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Evaluate", parent)
        self.button = QPushButton("Evaluate test split")
        self.button.setToolTip(
            "Score the current model (Predict's or Train's) on the slides with split=test: ROC curve with 95% "
            "confidence interval and confusion matrix at the current threshold; rows turn green (correct) or red."
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = self.layout()
        assert isinstance(layout, QVBoxLayout)
        layout.insertWidget(0, self.status)
        layout.insertWidget(0, self.button)
        self.evaluation: Evaluation | None = None

    def caption_of(self, evaluation: Evaluation) -> str:
        """The headline figures of an evaluation, and on what."""
        report = evaluation.report
        low, high = report.auroc_ci
        ci = "" if math.isnan(low) else f" (95% CI {low:.2f}-{high:.2f})"  # NaN: too few slides for an interval
        decision = f" at threshold {report.threshold:.2f}" if report.binary else ""
        return (f"{evaluation.model} on {len(report.labels)} test slides: AUROC {report.auroc:.3f}{ci}, "
                f"balanced accuracy {report.balanced_accuracy:.3f}{decision}; "
                f"{int(report.correct.sum())} correct, {int((~report.correct).sum())} incorrect")

    def start(self, state: ViewerState, table: CohortTable, cache_dir: Path | None, *,
              on_result: Callable[[tuple[Evaluation, dict[str, bytes]]], Any], owner: QObject,
              progress_bar: JobProgressBar | None = None) -> JobHandle | None:
        """Start scoring ``state.model`` on ``table``'s test split at ``state.threshold``.

        A notification instead when there is no model, no cache folder or a table that cannot be used.
        """
        model = state.model
        try:
            if model is None:
                raise CohortError("no model: load one in the Predict widget or train one")
            if cache_dir is None:
                raise CohortError("choose the embedding cache folder first")
            cohort = table.to_cohort()
        except CohortError as exc:
            notify_error(exc, context="Evaluate")
            return None
        self.status.setText("Evaluating the test split...")
        return start_job(lambda: evaluate_job(model, cohort, cache_dir, state.threshold), kind="evaluate",
                         description="Evaluating the test split", on_result=on_result,
                         on_error=lambda _: self.status.setText("Failed (see the notification)."),
                         viewer=state.viewer, owner=owner, progress_bar=progress_bar)

    def show_evaluation(self, evaluation: Evaluation, images: dict[str, bytes], *, table: CohortTable,
                        viewer: ViewerModel) -> list[int]:
        """Show an evaluation's plots and mark the table's rows; return the rows that changed."""
        report = evaluation.report
        changed = [i for i, row in enumerate(table.rows) if row.outcome]
        for row in table.rows:
            row.outcome = ""
        for name, correct in zip(report.slides, report.correct):
            index = table.set_outcome(name, bool(correct))
            if index is not None:
                changed.append(index)
        folder = self._folder_for(evaluation)
        self.evaluation = evaluation
        self.status.setText("")
        self.show_report(report, images, caption=self.caption_of(evaluation), folder=folder,
                         extra=evaluation.record(), viewer=viewer)
        return sorted(set(changed))

    def _folder_for(self, evaluation: Evaluation) -> Path:
        base = evaluation.model_path.parent if evaluation.model_path is not None else Path.cwd()
        return base / f"{Path(evaluation.model).stem}.test-evaluation"
