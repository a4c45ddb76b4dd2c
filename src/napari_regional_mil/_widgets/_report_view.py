"""An evaluation's ROC curve and confusion matrix in a dock widget, and "Save plots" (one click).

Thin: the report is the core's :class:`~napari_regional_mil.training.report.EvaluationReport`;
its images are rendered by :func:`~napari_regional_mil.training.plots.report_images` in the
job's worker (never on the GUI thread) and shown here as pixmaps; "Save plots" writes every
plot (PNG and SVG), the metrics and the tables with
:func:`~napari_regional_mil.training.outputs.save_report` through
:func:`~._worker.start_job`, into a folder the owner names (next to the model).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._worker import JobHandle, start_job

if TYPE_CHECKING:
    from napari.components import ViewerModel

    from napari_regional_mil.training.report import EvaluationReport

__all__ = ["ReportView"]

#: Width of each image in the dock (px).
IMAGE_WIDTH = 260


class ReportView(QGroupBox):
    """ROC curve and confusion matrix of a report, a one-line summary, and "Save plots".

    Parameters
    ----------
    title
        The box's title.
    """

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.report: EvaluationReport | None = None
        self.folder: Path | None = None
        self.extra: dict[str, Any] = {}
        self.saved: Path | None = None
        self.viewer: ViewerModel | None = None
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.images = {kind: QLabel() for kind in ("roc", "confusion")}
        row = QHBoxLayout()
        for label in self.images.values():
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            row.addWidget(label)
        self.save_button = QPushButton("Save plots")
        self.save_button.setToolTip(
            "Write the ROC, precision-recall, calibration and confusion plots (PNG and SVG), metrics.json and the "
            "prediction tables into the folder shown here (next to the model)."
        )
        self.save_button.clicked.connect(lambda: self.save())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.caption)
        layout.addLayout(row)
        layout.addWidget(self.save_button)
        self.clear()

    def clear(self, text: str = "") -> None:
        """Show nothing (``text`` says why)."""
        self.report = None
        self.caption.setText(text)
        for label in self.images.values():
            label.clear()
        self.save_button.setEnabled(False)

    def show_report(self, report: EvaluationReport, images: dict[str, bytes], *, caption: str, folder: Path,
                    extra: dict[str, Any] | None = None, viewer: ViewerModel | None = None) -> None:
        """Show ``images`` (PNG bytes by plot) of ``report``; "Save plots" will write into ``folder``."""
        self.report, self.folder, self.extra, self.viewer = report, Path(folder), dict(extra or {}), viewer
        self.caption.setText(caption)
        for kind, label in self.images.items():
            pixmap = QPixmap()
            if kind in images and pixmap.loadFromData(images[kind], "PNG"):
                label.setPixmap(pixmap.scaledToWidth(IMAGE_WIDTH, Qt.TransformationMode.SmoothTransformation))
            else:
                label.clear()
        self.save_button.setEnabled(True)
        self.save_button.setToolTip(f"Write the plots (PNG and SVG), metrics.json and the tables into {self.folder}")

    def pixmap(self, kind: str) -> QPixmap | None:
        """The shown image of ``kind`` (``roc``, ``confusion``), or ``None``."""
        pixmap = self.images[kind].pixmap()
        return None if pixmap is None or pixmap.isNull() else pixmap

    def save(self, on_saved: Callable[[Path], Any] | None = None) -> JobHandle | None:
        """Write the report's plots and tables into the folder, in the background."""
        if self.report is None or self.folder is None:
            notifications.show_warning("Save plots: nothing to save yet")
            return None
        from napari_regional_mil.training.outputs import save_report  # lazy: torch (when saving)

        report, folder, extra = self.report, self.folder, self.extra

        def done(path: Path) -> None:
            self.saved = path
            notifications.show_info(f"Saved the plots and metrics to {path}")
            if on_saved is not None:
                on_saved(path)

        return start_job(lambda: save_report(folder, report, extra=extra), kind="save-plots",
                         description=f"Saving plots to {folder.name}", on_result=done, viewer=self.viewer,
                         owner=self, show_progress=False)
