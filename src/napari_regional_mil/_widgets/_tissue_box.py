"""The Slide widget's tissue box: detection options, saving/loading a mask, QuPath annotations.

Thin: the options become a :class:`~napari_regional_mil.tissue.TissueOptions`; the file
work (:mod:`napari_regional_mil.masks`, :mod:`napari_regional_mil.annotations`) runs in
workers through the jobs below, started by the Slide widget.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._fields import form
from napari_regional_mil.annotations import apply_annotations, read_annotations
from napari_regional_mil.errors import TilingError
from napari_regional_mil.masks import load_mask, save_mask
from napari_regional_mil.tissue import METHODS, Method, TissueMask, TissueOptions

__all__ = ["ANNOTATION_FILTER", "MASK_FILTER", "TissueBox", "annotate_job", "load_mask_job", "save_mask_job"]

MASK_FILTER = "Tissue masks (*.png *.tif *.tiff);;All files (*)"
ANNOTATION_FILTER = "QuPath GeoJSON (*.geojson *.json);;All files (*)"

_METHOD_LABELS = {
    "otsu-saturation": "Otsu on saturation",
    "otsu-od": "Otsu on optical density",
    "threshold-saturation": "Fixed threshold on saturation",
    "threshold-od": "Fixed threshold on optical density",
}


class TissueBox(QGroupBox):
    """Tissue detection options and the mask / annotation buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Tissue", parent)
        defaults = TissueOptions()
        self.method = QComboBox()
        for key in METHODS:
            self.method.addItem(_METHOD_LABELS[key], key)
        self.method.setToolTip("Otsu's threshold adapts to the slide; a fixed threshold is the same on every slide.")
        self.cutoff = QDoubleSpinBox()
        self.cutoff.setDecimals(3)
        self.cutoff.setRange(0.0, 5.0)
        self.cutoff.setSingleStep(0.01)
        self.cutoff.setValue(0.07)
        self.cutoff.setToolTip("The fixed threshold (saturation 0..1, or optical density).")
        self.min_area = QDoubleSpinBox()
        self.min_area.setRange(0.0, 1e7)
        self.min_area.setDecimals(0)
        self.min_area.setSingleStep(500)
        self.min_area.setValue(defaults.min_area_um2)
        self.min_area.setSuffix(" µm²")
        self.min_area.setToolTip("Tissue pieces smaller than this are dropped (dust, specks).")
        self.closing = QDoubleSpinBox()
        self.closing.setRange(0.0, 200.0)
        self.closing.setDecimals(1)
        self.closing.setValue(defaults.closing_um)
        self.closing.setSuffix(" µm")
        self.closing.setToolTip("Radius of the closing that joins nearby tissue; 0 turns it off.")
        self.fill_holes = QCheckBox("Fill holes")
        self.fill_holes.setChecked(defaults.fill_holes)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        fields = QWidget()
        rows = form(fields)
        rows.setContentsMargins(0, 0, 0, 0)
        rows.addRow("Method", self.method)
        rows.addRow("Threshold", self.cutoff)
        rows.addRow("Minimum area", self.min_area)
        rows.addRow("Closing", self.closing)
        rows.addRow(self.fill_holes)
        layout.addWidget(fields)
        self.save_button = QPushButton("Save mask…")
        self.save_button.setToolTip("Save the tissue layer (as painted) as a PNG covering the whole slide.")
        self.load_button = QPushButton("Load mask…")
        self.load_button.setToolTip("Load a saved or painted mask as the tissue layer.")
        files = QHBoxLayout()
        files.addWidget(self.save_button)
        files.addWidget(self.load_button)
        layout.addLayout(files)
        self.annotations_as = QComboBox()
        self.annotations_as.addItem("Keep tissue inside", "include")
        self.annotations_as.addItem("Remove (pen, folds)", "exclude")
        self.annotations_as.setToolTip("Included regions keep only the tissue inside them; excluded ones are removed.")
        self.annotations_button = QPushButton("QuPath annotations…")
        self.annotations_button.setToolTip("Import QuPath GeoJSON annotations (polygons) into the tissue layer.")
        notes = QHBoxLayout()
        notes.addWidget(self.annotations_button)
        notes.addWidget(self.annotations_as)
        layout.addLayout(notes)
        self.method.currentIndexChanged.connect(self._method_changed)
        self._method_changed()

    def _method_changed(self) -> None:
        fixed = str(self.method.currentData()).startswith("threshold")
        self.cutoff.setEnabled(fixed)
        if fixed:
            self.cutoff.setValue(0.07 if self.method.currentData().endswith("saturation") else 0.08)

    def options(self) -> TissueOptions:
        """The :class:`TissueOptions` the fields describe."""
        method = cast("Method", str(self.method.currentData()))  # the combo holds METHODS' keys only
        return TissueOptions(
            method=method,
            threshold=float(self.cutoff.value()) if method.startswith("threshold") else None,
            min_area_um2=float(self.min_area.value()), closing_um=float(self.closing.value()),
            fill_holes=self.fill_holes.isChecked(),
        )

    def mode(self) -> str:
        """``"include"`` or ``"exclude"``."""
        return str(self.annotations_as.currentData())


def save_mask_job(path: Path, mask: np.ndarray, slide_dimensions: tuple[int, int], slide_name: str) -> Path:
    """Job: write a tissue mask file (atomically)."""
    return save_mask(path, mask, slide_dimensions=slide_dimensions, slide_name=slide_name)


def load_mask_job(path: Path, slide_dimensions: tuple[int, int]) -> TissueMask:
    """Job: read and check a tissue mask file for this slide."""
    return load_mask(path, slide_dimensions=slide_dimensions)


def annotate_job(path: Path, tissue: TissueMask, slide_dimensions: tuple[int, int], mode: str) -> TissueMask:
    """Job: the tissue inside (``"include"``) or outside (``"exclude"``) a QuPath file's polygons."""
    kept = apply_annotations(tissue, read_annotations(path, slide_dimensions=slide_dimensions),
                             mode="include" if mode == "include" else "exclude")
    if not kept.mask.any():
        raise TilingError(f"{path}: no tissue lies {'inside' if mode == 'include' else 'outside'} the annotations")
    return kept
