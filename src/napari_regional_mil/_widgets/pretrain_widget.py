"""The "Pretrain" dock widget: train the second model (a frozen encoder) on your slides.

Autoencoder (:func:`~napari_regional_mil.pretrain.train_autoencoder`) or attention-MIL
pretraining (:func:`~napari_regional_mil.pretrain.train_mil_encoder`) runs in a worker
(:mod:`._worker`) with a progress bar and Cancel. The slides come from a folder or from
the Cohort widget's table (its labels serve MIL). For the autoencoder, the originals and
their reconstructions are shown after every epoch. When done, the encoder is registered
under its file stem and offered in the encoder lists of the Embed and Cohort widgets (through
the viewer's :class:`~._state.ViewerState`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._devices import DeviceBox
from napari_regional_mil._widgets._fields import PathPicker, form
from napari_regional_mil._widgets._progress_bar import JobProgressBar
from napari_regional_mil._widgets._state import viewer_state
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.errors import CohortError, EncoderError, TrainingError
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["METHODS", "SOURCES", "PretrainWidget", "preview_pixmap"]

#: The pretraining methods offered, in order.
METHODS = ("Autoencoder", "Attention-MIL")
#: Where the slides come from.
SOURCES = ("Folder", "Cohort widget")


def preview_pixmap(montage: np.ndarray, *, scale: int = 2) -> QPixmap:
    """A QPixmap of an RGB uint8 image, enlarged ``scale`` times (nearest neighbour)."""
    image = np.ascontiguousarray(np.repeat(np.repeat(montage, scale, 0), scale, 1))
    h, w = image.shape[:2]
    qimage = QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(qimage)




class PretrainWidget(QWidget):
    """Train a frozen encoder (autoencoder or attention-MIL) and offer it to the Embed widget.

    Parameters
    ----------
    viewer
        The napari viewer (napari passes it).

    Signals
    -------
    encoder_saved(str)
        The path of a newly saved encoder.
    """

    encoder_saved = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
        self.state = viewer_state(self.viewer)
        self.job: JobHandle | None = None
        self.result: Any = None
        self.preview: Any = None
        self._labels_tmp: tempfile.TemporaryDirectory | None = None
        self._build()

    # -- UI ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.method.setToolTip(
            "Autoencoder: learns to reconstruct tissue patches, needs no labels. Attention-MIL: a CNN with "
            "gated attention and a classifier trained on labelled slides; its CNN becomes the encoder."
        )
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setToolTip("Slides from a folder, or the slides (and labels) of the Cohort widget.")
        self.folder = PathPicker(caption="Folder of slides", directory=True, placeholder="folder of slides")
        self.labels = PathPicker(
            caption="Labels CSV", filter="CSV (*.csv);;All files (*)", placeholder="slide,label CSV (MIL)"
        )
        self.out = PathPicker(
            caption="Encoder file", filter="Encoder (*.safetensors)", placeholder="my_encoder.safetensors"
        )
        self.out.line.setToolTip(
            "Where the encoder is saved (one .safetensors file: weights and description), once, at the end."
        )
        data_box = QGroupBox("Data")
        data = form(data_box)
        data.addRow("Method", self.method)
        data.addRow("Slides from", self.source)
        data.addRow("Folder", self.folder)
        data.addRow("Labels", self.labels)
        data.addRow("Save as", self.out)

        self.patch_size = QSpinBox()
        self.patch_size.setRange(16, 1024)
        self.patch_size.setSingleStep(16)
        self.patch_size.setValue(64)
        self.patch_size.setSuffix(" px")
        self.mpp = QDoubleSpinBox()
        self.mpp.setDecimals(2)
        self.mpp.setRange(0.1, 32.0)
        self.mpp.setValue(2.0)
        self.mpp.setSuffix(" µm/px")
        self.mpp.setToolTip("Resolution of the patches (2 µm/px x 64 px = the footprint of 256 px at 0.5 µm/px).")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(8)
        self.patches = QSpinBox()
        self.patches.setRange(8, 1_000_000)
        self.patches.setValue(3072)
        self.patches.setToolTip("Autoencoder: tissue patches in all. MIL: tissue patches per slide.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.device = DeviceBox(self.viewer, kind="pretrain-devices")
        train_box = QGroupBox("Training")
        train = form(train_box)
        train.addRow("Patch size", self.patch_size)
        train.addRow("Resolution", self.mpp)
        train.addRow("Epochs", self.epochs)
        train.addRow("Patches", self.patches)
        train.addRow("Seed", self.seed)
        train.addRow("Device", self.device)

        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.preview_label = QLabel()
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setToolTip("Top: tissue patches. Bottom: the autoencoder's reconstructions.")
        self.encoder_name = QLineEdit()
        self.encoder_name.setReadOnly(True)
        self.encoder_name.setPlaceholderText("the saved encoder (use it in the Embed widget)")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        for box in (data_box, train_box):
            layout.addWidget(box)
        layout.addLayout(buttons)
        self.progress = JobProgressBar()
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.preview_label)
        layout.addWidget(self.encoder_name)
        layout.addStretch(1)
        self.method.currentIndexChanged.connect(self._method_changed)
        self.source.currentIndexChanged.connect(self._source_changed)
        self._method_changed(0)
        self._source_changed(0)
        self._set_busy(False)

    def _method_changed(self, index: int) -> None:
        mil = index == 1
        self.labels.setEnabled(mil and self.source.currentIndex() == 0)
        self.epochs.setValue(15 if mil else 8)
        self.patches.setValue(256 if mil else 3072)
        self.preview_label.setVisible(not mil)

    def _source_changed(self, index: int) -> None:
        self.folder.setEnabled(index == 0)
        self.labels.setEnabled(index == 0 and self.method.currentIndex() == 1)

    def _set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # -- data ----------------------------------------------------------------------------------
    def _cohort_slides(self, *, with_labels: bool) -> tuple[list[Path], Path | None]:
        table = self.state.cohort
        if table is None:
            raise CohortError(
                "no Cohort widget in this viewer: open it (Plugins > Regional MIL > Cohort) or use a folder"
            )
        rows = [row for row in table.rows if row.path is not None]
        if not rows:
            raise CohortError("the Cohort widget lists no slide files")
        labels = None
        if with_labels:
            table.to_cohort()  # validates: every slide labelled, two classes
            self._labels_tmp = tempfile.TemporaryDirectory(prefix="pretrain-labels-")
            labels = Path(self._labels_tmp.name) / "cohort.csv"
            labels.write_text(table.csv_text(), encoding="utf-8")
        return [Path(row.path) for row in rows], labels

    def _job_factory(self):
        """The job as chosen in the form (raises a RegionalMilError on a bad field)."""
        from napari_regional_mil.pretrain import (  # lazy: torch (when the job starts)
            AutoencoderConfig,
            MilPretrainConfig,
            train_autoencoder,
            train_mil_encoder,
        )

        mil = self.method.currentIndex() == 1
        out = self.out.path()
        if out is None:
            raise EncoderError("choose where to save the encoder (.safetensors)")
        if self.source.currentIndex() == 1:
            slides, labels = self._cohort_slides(with_labels=mil)
        else:
            if self.folder.path() is None:
                raise TrainingError("choose a folder of slides")
            slides, labels = self.folder.path(), self.labels.path() if mil else None
            if mil and labels is None:
                raise CohortError("attention-MIL pretraining needs a labels CSV (slide,label)")
        common = {
            "patch_size": int(self.patch_size.value()),
            "mpp": float(self.mpp.value()),
            "epochs": int(self.epochs.value()),
            "seed": int(self.seed.value()),
            "device": self.device.currentText(),
        }
        try:
            if mil:
                config = MilPretrainConfig(patches_per_slide=int(self.patches.value()), **common)
                return lambda: train_mil_encoder(slides, labels=labels, out=out, config=config)
            config = AutoencoderConfig(max_patches=int(self.patches.value()), **common)
            return lambda: train_autoencoder(slides, out=out, config=config)
        except ValueError as exc:
            raise TrainingError(f"invalid setting: {exc}") from None

    # -- run -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start pretraining in a worker (progress bar, Cancel, preview)."""
        try:
            factory = self._job_factory()
        except Exception as exc:
            notify_error(exc, context="Pretrain")
            return
        self.result = None
        self.preview_label.clear()
        self.status.setText(f"{self.method.currentText()}: sampling tissue patches...")
        self.job = start_job(
            factory,
            kind="pretrain",
            description=f"Pretraining ({self.method.currentText()})",
            on_result=self._show_result,
            on_progress=self._on_progress,
            on_finish=self._on_finish,
            viewer=self.viewer,
            owner=self,
            progress_bar=self.progress,
        )
        if self.job is not None:
            self._set_busy(True)

    def cancel(self) -> None:
        """Stop the running job at its next step; an earlier encoder file stays as it was."""
        if self.job is not None:
            self.job.cancel()

    def _on_progress(self, event: object) -> None:
        if not isinstance(event, Progress):
            return
        if event.stage == "sample":
            self.status.setText(f"Sampling tissue patches: {event.message}")
        elif event.metrics.get("epoch"):
            m = event.metrics
            acc = f", accuracy {m['accuracy']:.2f}" if "accuracy" in m else ""
            rate = f", {event.rate:.0f} patches/s" if event.rate else ""
            self.status.setText(f"Epoch {int(m['epoch'])}: loss {m['loss']:.4f}{acc}{rate}")
            preview = m.get("preview")
            if preview is not None:
                self.preview = preview
                self.preview_label.setPixmap(
                    preview_pixmap(preview.montage(), scale=max(1, 96 // preview.originals.shape[1]))
                )

    def _on_finish(self, status: str) -> None:
        self._set_busy(False)
        if self._labels_tmp is not None:
            self._labels_tmp.cleanup()
            self._labels_tmp = None
        if status == "cancelled":
            self.status.setText("Cancelled: no encoder was written (an earlier file is unchanged).")
        elif status == "failed":
            self.status.setText("Failed (see the notification).")

    def _show_result(self, result: Any) -> None:
        self.result = result
        name = result.registered_as or str(result.path)
        self.encoder_name.setText(name)
        self.status.setText(
            f"Saved {result.path.name}: {result.spec.embedding_dim}-d, {result.spec.input_size} px at "
            f"{result.spec.mpp:g} µm/px, {result.n_patches} patches, {result.seconds:.0f} s. "
            f"Choose '{name}' in the Embed widget."
        )
        if result.registered_as is not None:
            self.state.encoder_registered.emit(result.registered_as)  # the encoder lists offer it
        self.encoder_saved.emit(str(result.path))
