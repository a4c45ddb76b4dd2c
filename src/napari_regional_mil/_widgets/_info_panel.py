"""A read-only panel of a slide's metadata and its associated images (label, macro, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_regional_mil._widgets._fields import form

if TYPE_CHECKING:
    from napari_regional_mil.slide import Slide

__all__ = ["SlideInfoPanel", "rgb_pixmap"]

_THUMB_PX = 80
_DASH = "–"


def rgb_pixmap(rgb: np.ndarray, max_px: int = _THUMB_PX) -> QPixmap:
    """A QPixmap of an ``(h, w, 3)`` uint8 image, scaled to fit ``max_px`` x ``max_px``."""
    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[..., :3])
    h, w = arr.shape[:2]
    image = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    pix = QPixmap.fromImage(image)
    return pix.scaled(max_px, max_px, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


class SlideInfoPanel(QGroupBox):
    """Vendor, size, levels, mpp, objective, tiles, warnings and associated images of a slide."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Slide information", parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        rows = QWidget()
        layout = form(rows)
        layout.setContentsMargins(0, 0, 0, 0)
        self.fields: dict[str, QLabel] = {}
        for key, title, tip in [
            ("vendor", "Vendor", "Format reported by tiffslide (generic TIFF when none)."),
            ("size", "Size", "Level-0 width x height in pixels (and microns when the mpp is known)."),
            ("levels", "Levels", "Native pyramid levels and their downsamples."),
            ("mpp", "mpp", "Level-0 microns per pixel, and where the value comes from."),
            ("objective", "Objective", "Scanning objective magnification stored in the file."),
            ("tiles", "Tiles", "Native tile size (strip TIFFs have none)."),
        ]:
            label = QLabel(_DASH)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            label.setToolTip(tip)
            layout.addRow(title, label)
            self.fields[key] = label
        outer.addWidget(rows)
        self.warnings = QLabel()
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #e0a800;")
        self.warnings.hide()
        outer.addWidget(self.warnings)
        self.images = QWidget()
        self._images_layout = QHBoxLayout(self.images)
        self._images_layout.setContentsMargins(0, 4, 0, 0)
        self._images_layout.setSpacing(8)
        self._images_layout.addStretch(1)
        outer.addWidget(self.images)
        self.images.hide()
        self.image_labels: dict[str, QLabel] = {}

    def clear(self) -> None:
        """Show no slide."""
        for label in self.fields.values():
            label.setText(_DASH)
        self.warnings.hide()
        self._set_images({})

    def show_slide(self, slide: Slide, *, mpp: tuple[float, float] | None = None) -> None:
        """Show ``slide``'s metadata (``mpp``: the one in use); no pixels are read.

        The associated images are read in a worker and given to :meth:`show_images`.
        """
        info = slide.info
        w, h = info.dimensions
        mpp = mpp if mpp is not None else info.mpp
        size = f"{w:,} x {h:,} px"
        if mpp is not None:
            size += f"  ({w * mpp[0] / 1000:.2f} x {h * mpp[1] / 1000:.2f} mm)"
        downs = ", ".join(f"{d:.4g}" for d in info.level_downsamples)
        self.fields["vendor"].setText(info.vendor or "generic TIFF")
        self.fields["size"].setText(size)
        self.fields["levels"].setText(f"{info.level_count}  (downsamples {downs})")
        if mpp is None:
            self.fields["mpp"].setText("<b>unknown</b> (the slide stores none)")
        else:
            source = {"slide": "from the slide", "user": "given by you"}.get(info.mpp_source, "given by you")
            if info.mpp is None or tuple(mpp) != tuple(info.mpp):
                source = "given by you"
            text = f"{mpp[0]:.4g}" if abs(mpp[0] - mpp[1]) < 1e-9 else f"{mpp[0]:.4g} x {mpp[1]:.4g}"
            self.fields["mpp"].setText(f"{text} µm/px ({source})")
        objective = f"{info.objective_power:g}x" if info.objective_power else _DASH
        self.fields["objective"].setText(objective)
        tiles = f"{info.tile_size[0]} x {info.tile_size[1]} px" if info.tile_size else "none (strip TIFF)"
        self.fields["tiles"].setText(tiles)
        if info.warnings:
            self.warnings.setText("⚠ " + "\n⚠ ".join(info.warnings))
            self.warnings.show()
        else:
            self.warnings.hide()

    def show_images(self, images: dict[str, np.ndarray]) -> None:
        """Show a slide's associated images (label, macro, ...) as small thumbnails."""
        self._set_images(images)

    def _set_images(self, images: dict[str, np.ndarray]) -> None:
        layout = self._images_layout
        while layout.count() > 1:
            item = layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.image_labels = {}
        for name, rgb in images.items():
            box = QWidget()
            col = QVBoxLayout(box)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(2)
            pic = QLabel()
            pic.setFixedSize(_THUMB_PX, _THUMB_PX)
            pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
            pic.setPixmap(rgb_pixmap(rgb))
            pic.setToolTip(f"{name}: {rgb.shape[1]} x {rgb.shape[0]} px")
            caption = QLabel(name)
            caption.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            col.addWidget(pic, 0, Qt.AlignmentFlag.AlignHCenter)
            col.addWidget(caption)
            layout.insertWidget(layout.count() - 1, box)
            self.image_labels[name] = pic
        self.images.setVisible(bool(images))
