"""The Slide widget's tissue mask files: save the painted mask, load one, apply QuPath annotations.

:class:`TissueFiles` is the part of :class:`~._widgets.slide_widget.SlideWidget` that
reads and writes files about the tissue layer; each file is read or written in a worker
(:mod:`._tissue_box`'s jobs) and the result shown as the slide's tissue Labels layer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtWidgets import QFileDialog

from napari_regional_mil._widgets import _layers
from napari_regional_mil._widgets._slide_jobs import tissue_job
from napari_regional_mil._widgets._tissue_box import (
    ANNOTATION_FILTER,
    MASK_FILTER,
    TissueBox,
    annotate_job,
    load_mask_job,
    save_mask_job,
)
from napari_regional_mil._widgets._worker import notify_error
from napari_regional_mil.errors import SlideError
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from napari.layers import Layer

    from napari_regional_mil.slide import Slide
    from napari_regional_mil.tissue import TissueMask

__all__ = ["TissueFiles"]


class TissueFiles:
    """Tissue mask files and QuPath annotations (a mixin of the Slide widget, a ``QWidget``).

    The widget that mixes it in has ``viewer``, ``slide``, ``slide_layer``, ``tissue_box``,
    :meth:`current_mpp`, :meth:`_start` (a job in the widget's worker) and :meth:`_show_tissue`.
    """

    viewer: ViewerModel
    slide: Slide | None
    slide_layer: Layer | None
    tissue_box: TissueBox
    current_mpp: Callable[[], float | None]
    _start: Callable[..., None]
    _show_tissue: Callable[..., None]

    def _ask_path(self, save: bool, caption: str, filter: str) -> Path | None:
        ask = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        chosen, _ = ask(self, caption, "", filter)  # self: the QWidget this is mixed into
        return Path(chosen) if chosen else None

    def save_mask(self, path: str | Path | None = None) -> None:
        """Save the tissue layer, as painted, as a PNG mask of the whole slide (in a worker)."""
        layer = _layers.tissue_layer_of(self.viewer, self.slide_layer) if self.slide_layer is not None else None
        if layer is None:
            notify_error(SlideError("detect tissue (or load a mask) first: there is no tissue layer to save"))
            return
        target = Path(path) if path is not None else self._ask_path(True, "Save the tissue mask", MASK_FILTER)
        if target is None:
            return
        target = target if target.suffix.lower() == ".png" else target.with_name(target.name + ".png")
        mask, info = _layers.read_tissue_mask(layer), self.slide.info
        name = Path(info.path).stem
        self._start(lambda: save_mask_job(target, mask, info.dimensions, name), "tissue-file",
                    f"Saving {target.name}", lambda saved: None, show_progress=False)

    def load_mask(self, path: str | Path | None = None) -> None:
        """Load a mask file (checked against this slide) as the tissue layer (in a worker)."""
        if self.slide is None:
            notify_error(SlideError("open a slide first"))
            return
        source = Path(path) if path is not None else self._ask_path(False, "Load a tissue mask", MASK_FILTER)
        if source is None:
            return
        dims = self.slide.info.dimensions
        self._start(lambda: load_mask_job(source, dims), "tissue-file", f"Loading {source.name}",
                    self._show_tissue, show_progress=False)

    def import_annotations(self, path: str | Path | None = None, mode: str | None = None) -> None:
        """Apply QuPath annotations to the tissue layer as painted (detecting tissue first if absent)."""
        if self.slide is None:
            notify_error(SlideError("open a slide first"))
            return
        source = Path(path) if path is not None else self._ask_path(False, "QuPath annotations", ANNOTATION_FILTER)
        if source is None:
            return
        how = mode or self.tissue_box.mode()
        tissue = _layers.tissue_mask_of(self.viewer, self.slide_layer)
        slide_path, mpp, options, dims = Path(self.slide.info.path), self.current_mpp(), self.tissue_box.options(), (
            self.slide.info.dimensions)

        def job() -> Generator[Progress, None, TissueMask]:
            base = tissue if tissue is not None else (yield from tissue_job(slide_path, mpp, options))
            return annotate_job(source, base, dims, how)

        self._start(job, "tissue", f"Annotations of {slide_path.name}", self._show_tissue)
