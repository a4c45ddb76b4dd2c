"""The "Cohort" dock widget: the slides of a study, their labels, splits and status.

Thin: the table's state and rules are the core's
:class:`~napari_regional_mil.training.cohort_table.CohortTable` (CSV import/export through
:func:`~napari_regional_mil.training.cohort.read_cohort`); embedding runs
:func:`~napari_regional_mil.embedding.pipeline.embed_slide` through
:func:`~napari_regional_mil._widgets._worker.start_job` (progress bar, Cancel). Double-click
a slide to open it with its tissue and its patch and region grids.

The table and its cache folder are shared with the other widgets through the viewer's
:class:`~._state.ViewerState` (Train and Pretrain read them); the Predict widget's
predictions appear in the table, decided at the threshold the user sets there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._cohort_embedding import CohortEmbedding
from napari_regional_mil._widgets._cohort_model import (
    LABEL,
    PREDICTION,
    SPLIT,
    ChoiceDelegate,
    CohortTableModel,
)
from napari_regional_mil._widgets._cohort_tools import (
    ClassEditor,
    EmbedBox,
    open_with_grids,
)
from napari_regional_mil._widgets._evaluate_box import EvaluateBox
from napari_regional_mil._widgets._state import follow, offer_encoder, viewer_state
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.errors import CohortError, SlideError
from napari_regional_mil.slide.formats import dialog_filter
from napari_regional_mil.training.cohort_table import (
    CohortTable,
    RowStatus,
    check_status,
)
from napari_regional_mil.training.evaluation import decide

if TYPE_CHECKING:
    import napari.viewer
    from qtpy.QtCore import QModelIndex

    from napari_regional_mil.heatmap import AttentionMaps
    from napari_regional_mil.training.evaluate import Evaluation
    from napari_regional_mil.training.prediction import SlidePrediction

__all__ = ["CSV_FILTER", "CohortWidget"]

CSV_FILTER = "Cohort CSV (*.csv);;All files (*)"
SLIDE_FILTER = dialog_filter()  # the one list of slide suffixes (slide/formats.py)

class CohortWidget(CohortEmbedding, QWidget):
    """A table of slides: label them, import/export the CSV, open them, embed the missing ones.

    Parameters
    ----------
    viewer
        The napari viewer (napari passes it).

    Signals
    -------
    cohort_changed
        Emitted when slides, labels, splits or classes change.
    """

    cohort_changed = Signal()

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
        self.table = CohortTable()
        self.job: JobHandle | None = None
        self.predictions: dict[str, Any] = {}  # slide name -> its latest SlidePrediction
        self.state = viewer_state(self.viewer)
        self._build()
        follow(self, self.state.predicted, self._on_predicted)
        follow(self, self.state.threshold_changed, lambda _: self._redecide())
        follow(self, self.state.encoder_registered, lambda name: offer_encoder(self, name))
        table = self.table
        self.destroyed.connect(lambda *_, state=self.state: state.withdraw_cohort(table))
        self.state.publish_cohort(self.table, self.cache_dir())

    # -- UI ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.model = CohortTableModel(self.table, on_error=lambda exc: notify_error(exc, context="Cohort"))
        self.model.dataChanged.connect(lambda *_: self._changed())
        self.view = QTableView()
        self.view.setModel(self.model)
        self.delegate = ChoiceDelegate(self.table, self.view)
        for column in (LABEL, SPLIT):
            self.view.setItemDelegateForColumn(column, self.delegate)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.SelectedClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.view.setMinimumHeight(180)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setResizeContentsPrecision(64)  # column widths from the first rows, not all 1,000
        header.setStretchLastSection(True)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.doubleClicked.connect(self._on_double_click)

        self.add_files_button = QPushButton("Add files...")
        self.add_files_button.setToolTip("Add slide files to the cohort.")
        self.add_folder_button = QPushButton("Add folder...")
        self.add_folder_button.setToolTip("Add every slide file of a folder.")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected slides from the cohort (no file is deleted).")
        self.import_button = QPushButton("Import CSV...")
        self.import_button.setToolTip("Load a cohort CSV: slide,label[,patient][,split].")
        self.export_button = QPushButton("Export CSV...")
        self.export_button.setToolTip("Save the cohort CSV (every slide needs a label).")
        self.add_files_button.clicked.connect(self._browse_files)
        self.add_folder_button.clicked.connect(self._browse_folder)
        self.remove_button.clicked.connect(self.remove_selected)
        self.import_button.clicked.connect(self._browse_import)
        self.export_button.clicked.connect(self._browse_export)
        top = QHBoxLayout()
        for button in (self.add_files_button, self.add_folder_button, self.remove_button):
            top.addWidget(button)
        csv_row = QHBoxLayout()
        for button in (self.import_button, self.export_button):
            csv_row.addWidget(button)

        self.bulk_label = QComboBox()
        self.bulk_label.setToolTip("Label every selected slide with this class.")
        self.apply_label_button = QPushButton("Label selected")
        self.apply_label_button.clicked.connect(lambda: self.label_selected(self.bulk_label.currentText()))
        bulk = QHBoxLayout()
        bulk.addWidget(self.bulk_label, 1)
        bulk.addWidget(self.apply_label_button)
        self.summary = QLabel()
        self.summary.setWordWrap(True)

        slides_box = QGroupBox("Slides")
        slides_layout = QVBoxLayout(slides_box)
        slides_layout.setContentsMargins(6, 6, 6, 6)
        slides_layout.addLayout(top)
        slides_layout.addWidget(self.view, 1)
        slides_layout.addLayout(bulk)
        slides_layout.addLayout(csv_row)
        slides_layout.addWidget(self.summary)

        self.classes = ClassEditor(self.table, on_error=lambda exc: notify_error(exc, context="Classes"))
        self.classes.changed.connect(self._classes_changed)
        self.embed_box = EmbedBox()
        self.embed_box.embed_button.clicked.connect(self.embed_missing)
        self.embed_box.cancel_button.clicked.connect(self.cancel)
        self.embed_box.cache_dir.line.editingFinished.connect(self.check_status_later)
        self.embed_box.cache_dir.picked.connect(lambda *_: self.check_status_later())

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(slides_box, 1)
        layout.addWidget(self.classes)
        layout.addWidget(self.embed_box)
        self.evaluate_box = EvaluateBox()
        self.evaluate_box.button.clicked.connect(self.evaluate)
        layout.addWidget(self.evaluate_box)
        self._classes_changed()
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.embed_box.embed_button.setEnabled(not busy)
        self.embed_box.cancel_button.setEnabled(busy)
        self.import_button.setEnabled(not busy)

    def _changed(self) -> None:
        counts = self.table.class_counts()
        unlabelled = counts.pop("", 0)
        parts = [f"{len(self.table)} slides"] + [f"{name}: {n}" for name, n in counts.items()]
        if unlabelled:
            parts.append(f"<span style='color:#e0a800'>unlabelled: {unlabelled}</span>")
        embedded = sum(row.embedded == "yes" for row in self.table.rows)
        parts.append(f"embedded: {embedded}/{len(self.table)}")
        self.summary.setText(" · ".join(parts))
        self.state.publish_cohort(self.table, self.cache_dir())
        self.cohort_changed.emit()

    def _classes_changed(self) -> None:
        current = self.bulk_label.currentText()
        self.bulk_label.clear()
        self.bulk_label.addItems(self.table.class_names)
        if current in self.table.class_names:
            self.bulk_label.setCurrentText(current)
        self.model.rows_changed(list(range(len(self.table))), LABEL)
        self._changed()

    def _reset(self) -> None:
        self.model.reset()
        self.classes.refresh()
        self._classes_changed()

    # -- slides ------------------------------------------------------------------------------
    def add_slides(self, paths: list[str | Path]) -> int:
        """Add slide files; return how many were new."""
        added = self.table.add_slides(paths)
        self._after_adding(added)
        return len(added)

    def add_folder(self, folder: str | Path) -> int:
        """Add every slide file of ``folder``; return how many were new."""
        try:
            added = self.table.add_folder(folder)
        except CohortError as exc:
            notify_error(exc, context="Add folder")
            return 0
        if not added:
            notifications.show_info(f"Add folder: no new slide files in {folder}")
        self._after_adding(added)
        return len(added)

    def _after_adding(self, added: list[int]) -> None:
        if not added:
            return
        first = self.table.rows[added[0]].path
        if first is not None:
            self.embed_box.suggest_cache_dir(first.parent)
        self._reset()
        self.check_status_later()

    def remove_selected(self) -> None:
        """Remove the selected rows from the cohort."""
        self.table.remove(self.selected_rows())
        self._reset()

    def selected_rows(self) -> list[int]:
        """Indices of the selected rows."""
        return sorted({index.row() for index in self.view.selectionModel().selectedRows()})

    def label_selected(self, label: str) -> None:
        """Label the selected rows with ``label``."""
        rows = self.selected_rows()
        if not rows:
            notifications.show_info("Cohort: select slides first")
            return
        try:
            for row in rows:
                self.table.set_label(row, label)
        except CohortError as exc:
            notify_error(exc, context="Cohort")
        self.model.rows_changed(rows, LABEL)

    # -- CSV ---------------------------------------------------------------------------------
    def import_csv(self, path: str | Path) -> bool:
        """Load a cohort CSV (replacing the table); a bad file gives a notification naming its row."""
        try:
            self.table.load_csv(path, resolve=False)  # listed at once; files and caches looked up in a worker
        except CohortError as exc:
            notify_error(exc, context="Import")
            return False
        self.embed_box.suggest_cache_dir(Path(path).resolve().parent)
        self._reset()
        self.check_status_later()
        return True

    def export_csv(self, path: str | Path) -> Path | None:
        """Save the cohort CSV atomically; ``None`` (and a notification) on failure."""
        try:
            written = self.table.save_csv(path)
        except CohortError as exc:
            notify_error(exc, context="Export")
            return None
        notifications.show_info(f"Saved cohort {written}")
        return written

    def _browse_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add slides", "", SLIDE_FILTER)
        if paths:
            self.add_slides(paths)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add every slide of a folder")
        if folder:
            self.add_folder(folder)

    def _browse_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a cohort CSV", "", CSV_FILTER)
        if path:
            self.import_csv(path)

    def _browse_export(self) -> None:
        start = str(self.table.csv_path or "cohort.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export the cohort CSV", start, CSV_FILTER)
        if path:
            self.export_csv(path)

    # -- status ------------------------------------------------------------------------------
    def cache_dir(self) -> Path | None:
        """The embedding cache folder in the field (``None`` when empty)."""
        return self.embed_box.cache_path()

    def refresh_embedded(self) -> None:
        """Find the slides' files and re-read which have a complete cache, now (before embedding)."""
        self._apply_status(check_status(self.table.unresolved(), base=self.table.base, cache_dir=self.cache_dir()))

    def check_status_later(self) -> JobHandle | None:
        """The same in a worker: the Embedded column fills in when done (a newer check replaces a running one)."""
        entries, base, cache = self.table.unresolved(), self.table.base, self.cache_dir()
        return start_job(
            lambda: check_status(entries, base=base, cache_dir=cache), kind="cohort-status",
            description="Looking for the slides' files and caches", on_result=self._apply_status, viewer=self.viewer,
            owner=self, show_progress=False, on_busy="replace",
        )

    def _apply_status(self, status: RowStatus) -> None:
        self.model.rows_changed(self.table.apply_status(status))
        self._changed()

    def set_prediction(self, name: str, text: str) -> None:
        """Show ``text`` in the prediction column of slide ``name`` (ignored when not listed)."""
        row = self.table.set_prediction(name, text)
        if row is not None:
            self.model.rows_changed([row], PREDICTION)

    def _on_predicted(self, maps: AttentionMaps) -> None:
        prediction = maps.prediction
        self.predictions[prediction.slide_name] = prediction
        self._show_prediction(prediction)

    def _show_prediction(self, prediction: SlidePrediction) -> None:
        """The decision at the viewer's threshold (the Predict widget's spin box) and its probability."""
        index = decide(prediction.probabilities, self.state.threshold, prediction.positive_class)
        p = float(prediction.probabilities[index])
        self.set_prediction(prediction.slide_name, f"{prediction.class_names[index]} {p:.2f}")

    def _redecide(self) -> None:
        for prediction in self.predictions.values():
            self._show_prediction(prediction)

    # -- evaluating the test split -----------------------------------------------------------
    def evaluate(self) -> JobHandle | None:
        """Score the viewer's current model on the ``split=test`` rows, in the background.

        The rows are coloured by whether their decision was correct.
        """
        def evaluated(result: tuple[Evaluation, dict[str, bytes]]) -> None:
            self.model.rows_changed(self.evaluate_box.show_evaluation(*result, table=self.table, viewer=self.viewer))

        return self.evaluate_box.start(self.state, self.table, self.cache_dir(), on_result=evaluated,
                                       owner=self, progress_bar=self.embed_box.progress)

    # -- opening -----------------------------------------------------------------------------
    def _on_double_click(self, index: QModelIndex) -> None:
        if index.column() not in (LABEL, SPLIT):
            self.open_row(index.row())

    def open_row(self, row: int) -> JobHandle | None:
        """Open the slide of ``row`` in a worker, then find its tissue and grids in another.

        Other slides are hidden; the slide becomes the viewer's open slide.

        Returns the opening job (``None`` on error, with a notification).
        """
        entry = self.table.rows[row]
        if self.table.resolve(row) is None:
            notify_error(SlideError(f"slide {entry.name!r}: no slide file found for {entry.slide!r}"))
            return None
        return open_with_grids(self.viewer, entry.path, self.embed_box.tiling.params(), self.cache_dir(), owner=self,
                               progress_bar=self.embed_box.progress)
