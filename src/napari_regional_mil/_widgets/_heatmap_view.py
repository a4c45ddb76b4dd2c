"""The Predict widget's heatmaps: their layers, the canvas selection and the exports.

:class:`HeatmapView` is the half of :class:`~._widgets.predict_widget.PredictWidget` that
shows a prediction's :class:`~napari_regional_mil.heatmap.AttentionMaps`: the heatmap
controls (normalisation, opacity, evidence layers, top-k), the heatmap layers (made in a
worker by :func:`._heatmap_layers.heatmap_specs`, added one per turn of the event loop),
a click on the canvas listing the region's top patches, and the exports
(:func:`._predict_job.export`, in the background).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils import notifications
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
)

from napari_regional_mil._widgets import _predict_job
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
from napari_regional_mil._widgets._worker import start_job
from napari_regional_mil.heatmap import NORMALISATIONS, AttentionMaps, normalise

if TYPE_CHECKING:
    from collections.abc import Generator

    from napari.components import ViewerModel
    from napari.layers import Image, Layer, Vectors
    from napari.utils.events import Event

    from napari_regional_mil._widgets._job_handle import JobHandle

__all__ = ["THUMB_PX", "HeatmapView"]

#: Side of a patch thumbnail in the top-patch list (px).
THUMB_PX = 96


class HeatmapView:
    """Heatmap controls, layers, canvas selection and exports of a prediction (a mixin of a ``QWidget``).

    The widget that mixes it in sets ``viewer``, ``maps`` (the shown
    :class:`~napari_regional_mil.heatmap.AttentionMaps` or ``None``) and ``_slide_layer``
    (the layer predicted on), calls :meth:`_init_heatmaps` before building its UI and adds
    :meth:`_build_heatmap_box` and :meth:`_build_export_row` to its layout.
    """

    viewer: ViewerModel
    maps: AttentionMaps | None
    _slide_layer: Layer | None

    def _init_heatmaps(self) -> None:
        """The heatmap state: no layers yet, and the timer that adds queued layers one by one."""
        self.heatmap_layers: dict[str, Image] = {}
        self.selection_layer: Vectors | None = None
        self._layer_queue: list[tuple[HeatmapSpec, dict[str, Any]]] = []
        self._layer_timer = QTimer(self)  # the widget this is mixed into is a QObject
        self._layer_timer.setSingleShot(True)
        self._layer_timer.setInterval(0)
        self._layer_timer.timeout.connect(self._show_next_layer)

    def _build_heatmap_box(self) -> QGroupBox:
        """The "Heatmaps" group: how the layers are drawn, and the clicked region's top patches."""
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
        self.normalisation.currentTextChanged.connect(lambda _: self._update_layers())
        self.evidence_check.toggled.connect(lambda _: self._update_layers())
        self.region_on_tissue.toggled.connect(lambda _: self._update_layers())
        self.opacity.valueChanged.connect(self._set_opacity)
        self.patch_list.itemDoubleClicked.connect(self._on_patch_item)
        return box

    def _build_export_row(self) -> QHBoxLayout:
        """One button per export format (enabled once a slide is predicted)."""
        row = QHBoxLayout()
        self.export_buttons: dict[str, QPushButton] = {}
        for kind, text in (("geojson", "GeoJSON"), ("tiff", "Heatmap TIFF"), ("csv", "CSV")):
            button = QPushButton(f"Export {text}")
            button.clicked.connect(lambda _=False, k=kind: self._export_dialog(k))
            row.addWidget(button)
            self.export_buttons[kind] = button
        return row

    def _units(self) -> Any:
        layer = self._slide_layer
        return getattr(layer, "units", None) if layer is not None and layer in self.viewer.layers else None

    def _offset(self) -> tuple[float, float]:
        layer = self._slide_layer
        if layer is None or layer not in self.viewer.layers:
            return (0.0, 0.0)
        y, x = (float(v) for v in layer.translate[-2:])
        return (y, x)

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
    def _on_mouse_drag(self, viewer: ViewerModel, event: Event) -> Generator[None, None, None]:
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

    def _set_thumbnails(self, tiles: list[np.ndarray]) -> None:
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

    def export(self, kind: str, path: str | Path) -> JobHandle | None:
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
