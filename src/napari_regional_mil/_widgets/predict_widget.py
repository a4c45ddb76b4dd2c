"""The "Predict" dock widget: run a first model on the open slide and show its heatmaps.

Thin: loading, embedding, prediction and the heatmap maths are core calls
(:mod:`~napari_regional_mil.model.checkpoint`, :mod:`~napari_regional_mil.embedding`,
:mod:`~napari_regional_mil.training.predict`, :mod:`~napari_regional_mil.heatmap`,
:mod:`~napari_regional_mil.export`); long steps run through
:func:`~napari_regional_mil._widgets._worker.start_job` (progress bar, Cancel, one-line
notifications on bad input).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils import notifications
from qtpy.QtCore import QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets import _predict_job
from napari_regional_mil._widgets._clinical_fields import ClinicalForm
from napari_regional_mil._widgets._encoder_fields import ModelEncoderFields
from napari_regional_mil._widgets._heatmap_layers import (
    HeatmapSpec,
    heatmap_specs,
    jump_to,
    read_thumbnail,
    remove_unwanted,
    rgb_icon,
    show_heatmap_layer,
    show_selection,
    sync_heatmap_layers,
)
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
from napari_regional_mil.heatmap import NORMALISATIONS, AttentionMaps, normalise

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["PredictWidget"]

THUMB_PX = 96


class PredictWidget(QWidget):
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
        self.model: Any = None  # a loaded Checkpoint
        self.maps: AttentionMaps | None = None
        self.heatmap_layers: dict[str, Any] = {}
        self._slide_layer: Any = None
        self.selection_layer: Any = None
        self.job: Any = None
        self._layer_queue: list[tuple[HeatmapSpec, dict[str, Any]]] = []
        self._layer_timer = QTimer(self)
        self._layer_timer.setSingleShot(True)
        self._layer_timer.setInterval(0)
        self._layer_timer.timeout.connect(self._show_next_layer)
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

        box = QGroupBox("Heatmaps")
        form = QFormLayout(box)
        self.normalisation = QComboBox()
        self.normalisation.addItems(NORMALISATIONS)
        self.normalisation.setToolTip("rank: percentile of each value (raw gated attention looks uniformly cold)")
        form.addRow("Normalisation", self.normalisation)
        self.opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=60)
        form.addRow("Opacity", self.opacity)
        self.evidence_check = QCheckBox("per-class evidence layers")
        form.addRow(self.evidence_check)
        self.region_on_tissue = QCheckBox("region attention on tissue patches only")
        self.region_on_tissue.setToolTip("Draw each region's attention only where it has tissue patches "
                                         "(otherwise over its whole square, cut at the slide's edge).")
        form.addRow(self.region_on_tissue)
        self.top_k = QSpinBox(minimum=1, maximum=64, value=8)
        form.addRow("Top-k patches", self.top_k)
        self.selection_label = QLabel("click a patch or region on the canvas")
        self.selection_label.setWordWrap(True)
        form.addRow(self.selection_label)
        self.patch_list = QListWidget()
        self.patch_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.patch_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.patch_list.setMovement(QListWidget.Movement.Static)
        self.patch_list.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.patch_list.setGridSize(QSize(THUMB_PX + 16, THUMB_PX + 36))
        self.patch_list.setMinimumHeight(2 * (THUMB_PX + 36) + 8)
        self.patch_list.setToolTip("top patches of the clicked region; double-click one to go there")
        form.addRow(self.patch_list)
        layout.addWidget(box)

        row = QHBoxLayout()
        self.export_buttons = {}
        for kind, text in (("geojson", "GeoJSON"), ("tiff", "Heatmap TIFF"), ("csv", "CSV")):
            button = QPushButton(f"Export {text}")
            button.clicked.connect(lambda _=False, k=kind: self._export_dialog(k))
            row.addWidget(button)
            self.export_buttons[kind] = button
        layout.addLayout(row)
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._browse_model)
        self.load_button.clicked.connect(lambda: self.set_model(self.model_path.text().strip()))
        self.model_path.returnPressed.connect(lambda: self.set_model(self.model_path.text().strip()))
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)
        self.normalisation.currentTextChanged.connect(lambda _: self._update_layers())
        self.evidence_check.toggled.connect(lambda _: self._update_layers())
        self.region_on_tissue.toggled.connect(lambda _: self._update_layers())
        self.opacity.valueChanged.connect(self._set_opacity)
        self.patch_list.itemDoubleClicked.connect(self._on_patch_item)

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

    def set_model(self, model: Any) -> None:
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

    def _show_model(self, model: Any) -> None:
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
    def slide_layer(self) -> Any:
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

    def _units(self) -> Any:
        layer = self._slide_layer
        return getattr(layer, "units", None) if layer is not None and layer in self.viewer.layers else None

    def _offset(self) -> tuple[float, float]:
        layer = self._slide_layer
        if layer is None or layer not in self.viewer.layers:
            return (0.0, 0.0)
        return tuple(float(v) for v in layer.translate[-2:])  # type: ignore[return-value]

    def _follow_slide_mpp(self) -> None:
        """Re-place the maps when the slide layer's mpp changed (e.g. set in the Slide widget)."""
        layer = self._slide_layer
        if self.maps is None or layer is None or layer not in self.viewer.layers:
            return
        mpp = tuple(float(v) for v in layer.scale[-2:])
        if not np.allclose(mpp, self.maps.patch.mpp):
            self.maps = AttentionMaps.from_prediction(self.maps.embeddings, self.maps.prediction, mpp=mpp,
                                                      grid_shape=self.maps.grid_shape)

    def _layer_settings(self) -> dict[str, Any]:
        """How the heatmap layers are made (:func:`._heatmap_layers.heatmap_specs` options)."""
        return {"normalisation": self.normalisation.currentText(), "evidence": self.evidence_check.isChecked(),
                "offset": self._offset(), "region_on_tissue": self.region_on_tissue.isChecked()}

    def _update_layers(self) -> None:
        """Make the heatmap layers again in a worker (normalisation, evidence, ... changed)."""
        if self.maps is None:
            return
        self._follow_slide_mpp()
        maps, settings = self.maps, self._layer_settings()
        start_job(lambda: heatmap_specs(maps, **settings), kind="predict-layers", description="Heatmap layers",
                  on_result=lambda specs: self.maps is maps and self._sync_layers(specs, incremental=True),
                  viewer=self.viewer,
                  owner=self, show_progress=False, on_busy="replace")

    def _sync_layers(self, specs: list[HeatmapSpec], *, incremental: bool = False) -> None:
        """Add or update the heatmap layers (GUI thread: layers only, their data are made).

        ``incremental``: one layer per turn of the event loop (each napari layer added costs
        the GUI thread tens of ms; one after the other, the viewer keeps responding between
        them). Layers not in ``specs`` are removed at once.
        """
        layer = self._slide_layer
        options = {"opacity": self.opacity.value() / 100, "units": self._units(),
                   "derived_from": layer.name if layer is not None and layer in self.viewer.layers else None}
        self._layer_queue = []
        if not incremental:
            self.heatmap_layers = sync_heatmap_layers(self.viewer, self.heatmap_layers, specs, **options)
            return
        keys = {spec.key for spec in specs}
        remove_unwanted(self.viewer, self.heatmap_layers, keys)
        self.heatmap_layers = {key: value for key, value in self.heatmap_layers.items() if key in keys}
        self._layer_queue = [(spec, options) for spec in specs]
        self._show_next_layer()

    @property
    def layers_pending(self) -> bool:
        """Whether heatmap layers of the last prediction or change are still to be added."""
        return bool(self._layer_queue)

    def _show_next_layer(self) -> None:
        if not self._layer_queue:
            return
        spec, options = self._layer_queue.pop(0)
        self.heatmap_layers[spec.key] = show_heatmap_layer(self.viewer, self.heatmap_layers.get(spec.key), spec,
                                                           **options)
        if self._layer_queue:
            self._layer_timer.start()  # the next one on the next turn of the event loop

    def _set_opacity(self, value: int) -> None:
        for layer in self.heatmap_layers.values():
            if layer in self.viewer.layers:
                layer.opacity = value / 100

    # -- clicking ---------------------------------------------------------------------------
    def _on_mouse_drag(self, viewer: Any, event: Any):
        """A click (press and release without moving) on the canvas selects what is under it.

        Only while the widget is docked (napari un-parents a closed dock's widget) and in
        pan/zoom mode: clicks that paint, draw or pick on another layer are theirs.
        """
        if self.maps is None or self.parent() is None or getattr(event, "button", 1) != 1:
            return
        active = viewer.layers.selection.active
        if active is not None and str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return
        position = tuple(event.position)
        yield
        if getattr(event, "type", None) == "mouse_move":
            return  # a drag (pan), not a click
        self.select_at(position[-2:])

    def select_at(self, world_yx: tuple[float, float]) -> int | None:
        """Select the region under world point ``(y, x)`` (um): list its top-k patches.

        Returns the region index (``None`` where there is none).
        """
        if self.maps is None:
            return None
        self._follow_slide_mpp()
        maps = self.maps
        y, x = (float(v) - o for v, o in zip(world_yx, self._offset()))
        patch = maps.patch_at((y, x))
        region = maps.region_at((y, x))
        if region is None:
            self.selection_label.setText("no region here")
            return None
        text = [f"region {region}"]
        if maps.has_region_attention:
            r_att = float(maps.prediction.region_attention[region])
            text.append(f"region attention {r_att:.4g}")
        if patch is not None:
            text.append(f"patch {patch}: attention {float(maps.prediction.patch_attention[patch]):.4g}")
        self.selection_label.setText("; ".join(text))
        top = maps.top_patches(region, self.top_k.value())
        self._list_patches(top)
        offset = self._offset()
        self.selection_layer = show_selection(self.viewer, self.selection_layer, maps, region, top,
                                              units=self._units(), offset=offset)
        centre = maps.region_centre_world(region)
        jump_to(self.viewer, (centre[0] + offset[0], centre[1] + offset[1]),
                maps.region.scale[0] * 1.2)
        return region

    def _list_patches(self, patches: Any) -> None:
        maps = self.maps
        self.patch_list.clear()
        layer = self._slide_layer
        boxes = [maps.patch_box_level0(int(i)) for i in patches]
        percentile = 100 * normalise(maps.prediction.patch_attention, "rank")
        for i in patches:
            att = float(maps.prediction.patch_attention[i])
            item = QListWidgetItem(f"#{int(i)}\n{att:.4g} (p{percentile[i]:.0f})")
            item.setToolTip(f"patch {int(i)}: attention {att:.4g}, percentile {percentile[i]:.1f} of the slide")
            item.setData(Qt.ItemDataRole.UserRole, int(i))
            self.patch_list.addItem(item)
        if layer is None or layer not in self.viewer.layers:
            return
        data = list(layer.data) if layer.multiscale else layer.data
        start_job(lambda: [read_thumbnail(data, box, size=THUMB_PX) for box in boxes],
                  kind="predict-thumbnails", description="Reading patch thumbnails",
                  on_result=self._set_thumbnails, viewer=self.viewer, owner=self, show_progress=False,
                  on_busy="replace")  # a new click supersedes the thumbnails of the previous one

    def _set_thumbnails(self, tiles: list[Any]) -> None:
        for row, tile in enumerate(tiles):
            item = self.patch_list.item(row)
            if item is None:
                return
            item.setIcon(rgb_icon(tile, THUMB_PX))

    def _on_patch_item(self, item: QListWidgetItem) -> None:
        patch = item.data(Qt.ItemDataRole.UserRole)
        if self.maps is not None and patch is not None:
            y, x = self.maps.patch_centre_world(int(patch))
            oy, ox = self._offset()
            jump_to(self.viewer, (y + oy, x + ox), self.maps.patch.scale[0] * 3)

    # -- export -----------------------------------------------------------------------------
    def _export_dialog(self, kind: str) -> None:
        if self.maps is None:
            notifications.show_warning("Export: predict a slide first")
            return
        suffix, filt = {"geojson": (".geojson", "GeoJSON (*.geojson *.json)"),
                        "tiff": ("_heatmap.tif", "TIFF (*.tif *.tiff)"),
                        "csv": ("_scores.csv", "CSV (*.csv)")}[kind]
        default = self.maps.embeddings.slide_name + suffix
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind}", default, filt)
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str | Path) -> Any:
        """Export the current prediction as ``kind`` (``geojson``, ``tiff``, ``csv``) to ``path``.

        Runs in the background (large slides have 100k patches); returns the job handle
        (``None`` when there is nothing to export or an export is running).
        """
        if self.maps is None:
            notifications.show_warning("Export: predict a slide first")
            return None
        maps, norm = self.maps, self.normalisation.currentText()
        return start_job(lambda: _predict_job.export(kind, path, maps, normalisation=norm),
                         kind="predict-export", description=f"Exporting {Path(path).name}",
                         on_result=lambda written: notifications.show_info(f"Exported {written}"),
                         viewer=self.viewer, owner=self, show_progress=False)
