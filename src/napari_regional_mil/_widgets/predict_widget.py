"""The "Predict" dock widget: run a first model on the open slide and show its heatmaps.

Thin: loading, embedding, prediction and the heatmap maths are core calls
(:mod:`~napari_regional_mil.model.checkpoint`, :mod:`~napari_regional_mil.embedding`,
:mod:`~napari_regional_mil.training.predict`, :mod:`~napari_regional_mil.heatmap`,
:mod:`~napari_regional_mil.export`); long steps run through
:func:`~napari_regional_mil._widgets._worker.start_job` (progress bar, Cancel, one-line
notifications on bad input). The heatmap controls, layers, canvas selection and exports
are :class:`~._heatmap_view.HeatmapView`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils import notifications
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets import _predict_job
from napari_regional_mil._widgets._clinical_fields import ClinicalForm
from napari_regional_mil._widgets._encoder_fields import ModelEncoderFields
from napari_regional_mil._widgets._heatmap_layers import HeatmapSpec, heatmap_specs
from napari_regional_mil._widgets._heatmap_view import HeatmapView
from napari_regional_mil._widgets._layers import (
    layer_mpp,
    slide_path_of,
    tiling_params_of,
    tissue_mask_of,
)
from napari_regional_mil._widgets._prediction_panel import PredictionPanel
from napari_regional_mil._widgets._progress_bar import JobProgressBar
from napari_regional_mil._widgets._state import follow, viewer_state
from napari_regional_mil._widgets._worker import notify_error, start_job
from napari_regional_mil.errors import ClinicalError
from napari_regional_mil.heatmap import AttentionMaps

if TYPE_CHECKING:
    import napari.viewer
    from napari.layers import Layer

    from napari_regional_mil._widgets._job_handle import JobHandle
    from napari_regional_mil.model.checkpoint import Checkpoint

__all__ = ["PredictWidget"]


class PredictWidget(HeatmapView, QWidget):
    """Load a first model, predict the open slide, show probabilities and attention maps.

    The model, the open slide and the decision threshold are the viewer's
    (:class:`~._state.ViewerState`): a model trained in the Train widget becomes the model
    here, and the threshold set here decides the Cohort table's predictions too.

    Signals
    -------
    predicted(object)
        Emitted with the :class:`~napari_regional_mil.heatmap.AttentionMaps` of each run.
    """

    predicted = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
        self.model: Checkpoint | None = None
        self.maps: AttentionMaps | None = None
        self._slide_layer: Layer | None = None
        self.job: JobHandle | None = None
        self._init_heatmaps()
        self.state = viewer_state(self.viewer)
        self._build()
        callback, callbacks = self._on_mouse_drag, self.viewer.mouse_drag_callbacks
        callbacks.append(callback)
        # closing the dock deletes the widget: stop listening to the viewer's clicks then
        self.destroyed.connect(lambda *_: callback in callbacks and callbacks.remove(callback))
        follow(self, self.state.model_changed, self._show_model)
        follow(self, self.state.slide_changed, lambda *_: self._fill_clinical())
        follow(self, self.state.cohort_changed, self._fill_clinical)
        follow(self, self.state.threshold_changed, self.result.set_threshold)
        self.result.threshold_edited.connect(self._threshold_edited)
        self.result.set_threshold(self.state.threshold)
        if self.state.model is not None:
            self._show_model(self.state.model)
        self._refresh_state()

    # -- UI ---------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        box = QGroupBox("Model")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.model_path = QLineEdit(placeholderText="checkpoint (.safetensors)")
        self.browse_button = QPushButton("Browse...")
        self.load_button = QPushButton("Load")
        for w in (self.model_path, self.browse_button, self.load_button):
            row.addWidget(w)
        form.addRow(row)
        self.model_label = QLabel("no model loaded")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        self.model_encoder = ModelEncoderFields()  # weights or file of the model's encoder, when it needs them
        form.addRow(self.model_encoder)
        self.cache_dir = QLineEdit(placeholderText="embedding cache folder (default: as the Embed widget)")
        form.addRow("Cache", self.cache_dir)
        self.predict_button = QPushButton("Predict open slide")
        self.predict_button.setToolTip("Predict the viewer's open slide in the background (embedding it first "
                                       "with the model's encoder and tiling when it has no cache).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.predict_button, 1)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self.progress = JobProgressBar()
        form.addRow(self.progress)
        layout.addWidget(box)

        self.clinical_form = ClinicalForm()  # shown for a model with clinical variables
        layout.addWidget(self.clinical_form)

        self.result = PredictionPanel()
        self.prob_table, self.threshold = self.result.prob_table, self.result.threshold
        self.decision_label = self.result.decision_label
        layout.addWidget(self.result)

        layout.addWidget(self._build_heatmap_box())
        layout.addLayout(self._build_export_row())
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._browse_model)
        self.load_button.clicked.connect(lambda: self.set_model(self.model_path.text().strip()))
        self.model_path.returnPressed.connect(lambda: self.set_model(self.model_path.text().strip()))
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)

    def _refresh_state(self) -> None:
        for button in self.export_buttons.values():
            button.setEnabled(self.maps is not None)

    # -- model ------------------------------------------------------------------------------
    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a model checkpoint", "", "Checkpoints (*.safetensors);;All files (*)"
        )
        if path:
            self.model_path.setText(path)
            self.set_model(path)

    def set_model(self, model: str | Path | Checkpoint) -> None:
        """Use ``model``: a checkpoint path (loaded in the background) or a loaded ``Checkpoint``.

        It becomes the viewer's current model, and its stored threshold the decision
        threshold (for a binary model). A bad path or corrupt checkpoint gives an error
        notification and keeps the previous model.
        """
        if isinstance(model, (str, Path)):
            path = str(model)
            if not path:
                notifications.show_warning("Predict: choose a checkpoint file first")
                return
            self.model_path.setText(path)
            start_job(lambda: _predict_job.load_model(path), kind="predict-load",
                      description=f"Loading {Path(path).name}", on_result=self.set_model,
                      viewer=self.viewer, owner=self, show_progress=False)
            return
        self.state.model = model  # -> _show_model

    def _show_model(self, model: Checkpoint | None) -> None:
        self.model = model
        self.model_encoder.set_record(None if model is None else model.encoder)
        self.clinical_form.set_encoding(None if model is None else getattr(model.config, "clinical", None))
        self._fill_clinical()
        if model is None:
            self.model_label.setText("no model loaded")
            self.result.set_model_threshold(None)
            return
        self.model_label.setText(_predict_job.describe_model(model))
        self.result.set_model_threshold(model.threshold if len(model.class_names) == 2 else None)

    def _fill_clinical(self) -> None:
        """Fill the clinical form from the open slide's row of the Cohort widget's table, if any."""
        layer, table = self.state.slide_layer, self.state.cohort
        if self.clinical_form.encoding is None or layer is None or table is None:
            return
        index = table.index_of(Path(str(slide_path_of(layer))).name)
        if index is not None:
            self.clinical_form.fill(getattr(table.rows[index], "extra", {}) or {})

    def _threshold_edited(self, value: float) -> None:
        self.state.threshold = value

    # -- prediction -------------------------------------------------------------------------
    def slide_layer(self) -> Layer | None:
        """The slide layer predicted on: the viewer's open slide."""
        return self.state.slide_layer

    def predict(self) -> None:
        """Predict the open slide in the background (embedding it first if it has no cache)."""
        if self.model is None:
            notifications.show_warning("Predict: no model loaded; load a checkpoint or train one first")
            return
        layer = self.slide_layer()
        if layer is None:
            notifications.show_warning("Predict: no slide open; open a whole-slide image first")
            return
        slide_path = str(slide_path_of(layer))
        try:  # a required clinical value left empty, or one the model cannot take: refuse now
            clinical = self.clinical_form.record(Path(slide_path).stem)
        except ClinicalError as exc:
            notify_error(exc, context="Predict")
            return
        cache_dir = self.cache_dir.text().strip() or layer.metadata.get("cache_dir") or None
        model = self.model
        mpp = tuple(float(v) for v in layer.scale[-2:])
        recorded = layer_mpp(layer)  # as the Embed widget passes it, so the cache key matches
        options = {"cache_dir": cache_dir, "mpp": mpp, "layer_params": tiling_params_of(layer),
                   "slide_mpp": (recorded[0] + recorded[1]) / 2 if recorded else None,
                   "tissue_mask": tissue_mask_of(self.viewer, layer, only_if_edited=True),
                   "clinical": clinical, **self.model_encoder.options()}
        self._slide_layer = layer
        settings = self._layer_settings()
        self.job = start_job(
            lambda: _predict_job.with_layers(_predict_job.predict_job(model, slide_path, **options), settings),
            kind="predict",
            description=f"Predicting {Path(slide_path).name}",
            on_result=lambda out: self.show_maps(*out),
            on_finish=lambda status: self._set_busy(False),
            viewer=self.viewer,
            owner=self,
            progress_bar=self.progress,
        )
        if self.job is not None:
            self._set_busy(True)

    def _set_busy(self, busy: bool) -> None:
        self.predict_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def cancel(self) -> None:
        """Cancel the running prediction (and the embedding it may have started; its cache is kept)."""
        if self.job is not None:
            self.job.cancel()

    def show_maps(self, maps: AttentionMaps, specs: list[HeatmapSpec] | None = None) -> None:
        """Show a prediction: probabilities, decision, heatmap layers.

        ``specs``: the layers, made in the worker (:func:`._predict_job.with_layers`) with
        the settings of :meth:`_layer_settings`; made here when not given. The heatmaps of
        another slide shown before stay in the viewer (new layers are made).
        """
        if self.maps is not None and self.maps.embeddings.slide_name != maps.embeddings.slide_name:
            self.heatmap_layers = {}
        self.maps = maps
        self.result.show_prediction(maps.prediction)
        self._follow_slide_mpp()
        if specs is None or self.maps is not maps:  # the slide's mpp changed meanwhile: lay out again
            self._sync_layers(heatmap_specs(self.maps, **self._layer_settings()))
        else:
            self._sync_layers(specs, incremental=True)
        self.patch_list.clear()
        self.selection_label.setText("click a patch or region on the canvas")
        self._refresh_state()
        self.state.announce_prediction(maps)
        self.predicted.emit(maps)
