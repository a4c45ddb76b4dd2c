"""The "Train" dock widget: train the first model on the cohort, with live curves.

Thin: the cohort comes from the Cohort widget (shared through the viewer's
:class:`~._state.ViewerState`) or a CSV file; training is
:func:`~napari_regional_mil.training.workflow.load_and_train_cohort`
(the CLI's path, with the CLI's defaults: same cohort and seed, same model), optionally
preceded by :func:`~napari_regional_mil.training.crossval.cross_validate`; it runs through
:func:`~napari_regional_mil._widgets._worker.start_job` (progress bar, Cancel). The
checkpoint is written only when training finished, then becomes the viewer's current model
(the Predict widget picks it up).
Several scales: the context embeddings found in the cohort's caches are listed
(:func:`~napari_regional_mil.training.workflow.available_contexts`), those every slide has
checked, as the CLI takes them; the checked ones go to ``ModelOptions.contexts``.
Patient data ([0279]): the cohort table's other columns are listed with checkboxes
(:class:`~._clinical_fields.ClinicalFields`); the checked ones are fused with the slide, as
``--clinical`` does on the command line.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets import _train_job
from napari_regional_mil._widgets._clinical_fields import ClinicalFields
from napari_regional_mil._widgets._fields import PathPicker, form, scrollable_column
from napari_regional_mil._widgets._progress_bar import JobProgressBar
from napari_regional_mil._widgets._report_view import ReportView
from napari_regional_mil._widgets._state import follow, viewer_state
from napari_regional_mil._widgets._train_fields import ContextFields, ModelFields, OptimFields
from napari_regional_mil._widgets._train_plot import PlotFigure, TrainingPlot
from napari_regional_mil._widgets._warm_up import collect_after_imports
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.errors import CheckpointError, CohortError, RegionalMilError
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    import napari.viewer
    from qtpy.QtGui import QShowEvent

    from napari_regional_mil.training.cohort import Cohort
    from napari_regional_mil.training.crossval import CrossValResult
    from napari_regional_mil.training.report import EvaluationReport

__all__ = ["SOURCES", "TrainWidget"]

#: Where the cohort comes from.
SOURCES = ("Cohort widget", "CSV file")
class TrainWidget(QWidget):
    """Train a model on the cohort; plot loss and AUC live; save the checkpoint.

    Parameters
    ----------
    viewer
        The napari viewer (napari passes it).

    Signals
    -------
    trained(object)
        Emitted with the saved :class:`~napari_regional_mil.model.checkpoint.Checkpoint`.
    """

    trained = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
        self.job: JobHandle | None = None
        self.result: Any = None
        self.crossval: CrossValResult | None = None
        self.saved_path: Path | None = None
        self.state = viewer_state(self.viewer)
        self._build()
        follow(self, self.state.cohort_changed, self.refresh_clinical)
        self.refresh_clinical()
        start_job(_train_job.warm_up_training, kind="train-warm-up", description="Preparing training",
                  on_result=self._warmed_up,
                  viewer=self.viewer, owner=self, show_progress=False)

    def _warmed_up(self, figure: PlotFigure) -> None:
        self.plot.set_figure(figure)
        collect_after_imports()  # the warm-up's imports: their garbage now, not at a random later moment

    # -- UI ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setToolTip("Train on the Cohort widget's table, or on a cohort CSV file.")
        self.csv = PathPicker(
            caption="Cohort CSV", filter="Cohort CSV (*.csv);;All files (*)", placeholder="cohort.csv"
        )
        self.csv.line.setToolTip(
            "slide,label[,patient][,split]; split=val rows validate, split=test rows are left out."
        )
        self.cache_dir = PathPicker(caption="Embedding cache folder", directory=True,
                                    placeholder="default: the Cohort widget's cache folder")
        self.cache_dir.line.setToolTip("Where the slides' embeddings are cached.")
        self.source.currentIndexChanged.connect(lambda i: self.csv.setEnabled(i == 1))
        self.csv.setEnabled(False)
        data_box = QGroupBox("Cohort")
        data_form = form(data_box)
        data_form.addRow("Source", self.source)
        data_form.addRow("CSV", self.csv)
        data_form.addRow("Cache folder", self.cache_dir)

        self.model_fields = ModelFields()
        self.context_fields = ContextFields()
        self.context_fields.refresh_requested.connect(self.refresh_contexts)
        self.model_fields.model_type.currentTextChanged.connect(
            lambda kind: self.context_fields.setEnabled(kind == "regional"))
        self.source.currentIndexChanged.connect(lambda *_: self.refresh_contexts())
        self.csv.picked.connect(lambda *_: self.refresh_contexts())
        self.cache_dir.picked.connect(lambda *_: self.refresh_contexts())
        self.csv.line.editingFinished.connect(self.refresh_contexts)
        self.cache_dir.line.editingFinished.connect(self.refresh_contexts)
        self.clinical_fields = ClinicalFields()
        self.source.currentIndexChanged.connect(lambda *_: self.refresh_clinical())
        self.csv.picked.connect(lambda *_: self.refresh_clinical())
        self.csv.line.editingFinished.connect(self.refresh_clinical)
        self.optim_fields = OptimFields()

        self.out_path = QLineEdit()
        self.out_path.setPlaceholderText("model.safetensors")
        self.out_path.setToolTip("Where the trained checkpoint (weights + config) is written, when training finished.")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_path, 1)
        out_row.addWidget(browse)
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Train in the background (the viewer stays usable).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop training; no checkpoint is written.")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        run_box = QGroupBox("Checkpoint")
        run_layout = QVBoxLayout(run_box)
        run_layout.setContentsMargins(6, 6, 6, 6)
        run_layout.addLayout(out_row)
        run_layout.addLayout(buttons)
        self.progress = JobProgressBar()
        run_layout.addWidget(self.progress)
        run_layout.addWidget(self.status)

        self.plot = TrainingPlot()
        self.plot.setToolTip("Loss and AUC per epoch (blue: training, orange: validation).")
        self.report_view = ReportView("ROC and confusion")

        scrollable_column(self, data_box, self.model_fields, self.context_fields, self.clinical_fields,
                          self.optim_fields, run_box, self.plot, self.report_view)
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the trained model", self.out_path.text() or "model.safetensors", "Checkpoints (*.safetensors)"
        )
        if path:
            self.out_path.setText(path)

    # -- the cohort --------------------------------------------------------------------------
    def cohort_and_cache(self) -> tuple[Cohort, Path]:
        """The validated cohort and the cache folder to train on.

        Raises
        ------
        CohortError
            No Cohort widget, an unlabelled slide, one class only, a bad CSV, no cache folder.
        """
        from napari_regional_mil.training.cohort import read_cohort  # lazy: torch (the training package imports torch)

        table = self.state.cohort
        if self.source.currentIndex() == 1:
            path = self.csv.path()
            if path is None:
                raise CohortError("choose a cohort CSV file")
            cohort = read_cohort(path)
        else:
            if table is None:
                raise CohortError("no Cohort widget: open Plugins > Regional MIL > Cohort, or train from a CSV file")
            cohort = table.to_cohort()
        cache = self.cache_dir.path() or (self.state.cache_dir if table is not None else None)
        if cache is None:
            raise CohortError("choose the embedding cache folder")
        return cohort, cache

    def refresh_contexts(self) -> None:
        """List the context embeddings (several scales) that the cohort's caches hold."""
        from napari_regional_mil.training.workflow import available_contexts  # lazy: torch (training)

        try:
            cohort, cache = self.cohort_and_cache()
            counts, n_cached = available_contexts(cohort, cache_dir=cache)
        except (RegionalMilError, OSError):
            self.context_fields.set_available({}, 0, note="Choose the cohort and its cache folder to list them.")
            return
        self.context_fields.set_available(counts, n_cached)

    def refresh_clinical(self) -> None:
        """List the cohort table's other columns: the candidate clinical variables ([0279])."""
        from napari_regional_mil.training.cohort import read_cohort  # lazy: torch (the training package imports torch)

        columns: tuple[str, ...] = ()
        try:
            if self.source.currentIndex() == 1:
                path = self.csv.path()
                columns = read_cohort(path).columns if path is not None else ()
            elif self.state.cohort is not None:
                columns = tuple(self.state.cohort.extra_columns)
        except (RegionalMilError, OSError):
            columns = ()
        self.clinical_fields.set_columns(columns)

    def showEvent(self, event: QShowEvent) -> None:
        """Look for context embeddings again when shown (the cohort may have changed)."""
        super().showEvent(event)
        self.refresh_contexts()

    # -- running -----------------------------------------------------------------------------
    def start(self) -> JobHandle | None:
        """Validate the inputs and train in the background."""
        self.refresh_contexts()
        try:
            cohort, cache = self.cohort_and_cache()
            options = dataclasses.replace(self.model_fields.options(), contexts=self.context_fields.selected())
            config = self.optim_fields.train_config()
            out = self._out_path()
            clinical = self.clinical_fields.spec()
            if clinical is not None:  # every row's values, before anything runs
                from napari_regional_mil.training.clinical_values import (  # lazy: torch (training)
                    check_cohort_clinical,
                )

                check_cohort_clinical(cohort, clinical)
        except Exception as exc:
            notify_error(exc, context="Train")
            return None
        n_folds = self.optim_fields.n_folds
        self.plot.clear()
        self.report_view.clear("Shown when training finished.")
        self.result = self.crossval = self.saved_path = None
        what = f"{n_folds}-fold cross-validation, then " if n_folds else ""
        if clinical is not None:
            what += f"with {', '.join(clinical.names)}: "
        self.status.setText(f"Training ({what}{options.model_type}) on {len(cohort)} slides...")
        self.job = start_job(
            lambda: _train_job.train_job(cohort, cache, options, config, n_folds, clinical),
            kind="train",
            description=f"Training a {options.model_type} model",
            on_progress=self._on_progress,
            on_result=lambda result: self._finished(result, out),
            on_finish=self._on_finish,
            viewer=self.viewer,
            owner=self,
            progress_bar=self.progress,
        )
        if self.job is not None:
            self._set_busy(True)
        return self.job

    def _out_path(self) -> Path:
        text = self.out_path.text().strip()
        if not text:
            raise CheckpointError("choose where to save the checkpoint (.safetensors)")
        path = Path(text).expanduser()
        if path.suffix.lower() != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        if not path.parent.is_dir():
            raise CheckpointError(f"{path}: folder {path.parent} does not exist")
        return path

    def _on_progress(self, event: object) -> None:
        if not isinstance(event, Progress) or not event.metrics:
            return
        if "epoch" in event.metrics:
            self.plot.add(event.metrics)
            self.status.setText(event.message)
        elif "fold_auc" in event.metrics:
            self.status.setText(event.message)

    def _finished(self, result: _train_job.TrainOutcome, out: Path) -> None:
        from napari_regional_mil.model.checkpoint import save_checkpoint  # lazy: torch (model.checkpoint imports torch)

        trained, cv, report, what, images = result
        self.result, self.crossval = trained.result, cv
        path = save_checkpoint(trained.result.checkpoint, out)
        if cv is not None:
            cv.write_json(path.with_name(path.stem + ".crossval.json"), report)
        self.saved_path = path
        checkpoint = dataclasses.replace(trained.result.checkpoint, path=path)
        best = trained.result.history[trained.result.best_epoch - 1]
        lines = [f"Saved <b>{path.name}</b>: best epoch {trained.result.best_epoch}/{len(trained.result.history)}"]
        if not math.isnan(best["val_auc"]):
            lines[0] += f", validation AUC {best['val_auc']:.3f}"
        lines.append(
            f"{trained.n_train} training, {trained.n_validation} validation, {len(trained.held_out)} held-out slides"
        )
        if cv is not None:
            mean, sd = cv.auc
            lines.append(f"cross-validation AUC {mean:.3f} ± {sd:.3f} ({len(cv.folds)} folds)")
        self.state.model = checkpoint  # the viewer's current model: the Predict widget shows it
        lines.append("handed to the Predict widget (the current model)")
        self.status.setText("<br>".join(lines))
        self.status.setToolTip(str(path))
        if report is None:
            self.report_view.clear("No validation slides of both classes to draw a ROC curve from.")
        else:
            self.report_view.show_report(
                report, images, caption=_caption(report, what), folder=path.with_name(path.stem + ".evaluation"),
                extra={"what": what, "model": path.name}, viewer=self.viewer,
            )
        notifications.show_info(f"Trained model saved to {path}")
        self.trained.emit(checkpoint)

    def _on_finish(self, status: str) -> None:
        self._set_busy(False)
        self.plot.flush()
        if status == "cancelled":
            self.status.setText("Cancelled: no checkpoint written.")
        elif status == "failed":
            self.status.setText("Failed (see the notification).")

    def cancel(self) -> None:
        """Cancel training (nothing is written)."""
        if self.job is not None:
            self.job.cancel()


def _caption(report: EvaluationReport, what: str) -> str:
    """One line of the report's headline figures and what they were computed on."""
    low, high = report.auroc_ci
    ci = "" if math.isnan(low) else f" (95% CI {low:.2f}-{high:.2f})"
    line = f"AUROC {report.auroc:.3f}{ci}, balanced accuracy {report.balanced_accuracy:.3f}"
    return f"{line}<br>on {what}, {len(report.labels)} slides"
