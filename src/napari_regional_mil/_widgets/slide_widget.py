"""The "Slide" dock widget: open a slide, check its metadata and mpp, find tissue, tile it.

Nothing here reads the slide in the GUI thread: **Open** reads the slide with this
plugin's reader in a worker (napari is not asked which reader to use), the associated
images are read in another, and tissue detection and tiling run in a worker
(:mod:`._worker`) with a progress bar and Cancel; the GUI thread only adds layers. The
tissue mask is an editable Labels layer: tiling uses it as painted. The widget shows the
viewer's open slide (:class:`~._state.ViewerState`), whoever opened it (File > Open, drag
and drop, the Cohort widget).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.settings import get_settings
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets import _layers
from napari_regional_mil._widgets._fields import (
    WARNING_STYLE,
    PathPicker,
    TilingFields,
    form,
    scrollable_column,
)
from napari_regional_mil._widgets._info_panel import SlideInfoPanel
from napari_regional_mil._widgets._progress_bar import JobProgressBar
from napari_regional_mil._widgets._reader_preference import (
    is_default_reader,
    reader_patterns,
    set_default_reader,
)
from napari_regional_mil._widgets._selection import activate_soon
from napari_regional_mil._widgets._slide_jobs import (
    associated_images_job,
    open_job,
    tiling_job,
    tissue_job,
)
from napari_regional_mil._widgets._state import follow, viewer_state
from napari_regional_mil._widgets._tissue_box import TissueBox
from napari_regional_mil._widgets._tissue_files import TissueFiles
from napari_regional_mil._widgets._warm_up import collect_after_imports, warm_up
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.errors import SlideError
from napari_regional_mil.slide.formats import dialog_filter

if TYPE_CHECKING:
    import napari.viewer
    from napari.layers import Image, Layer
    from napari.utils.events import Event

    from napari_regional_mil._widgets._layers import TilingLayers
    from napari_regional_mil.slide import Slide
    from napari_regional_mil.tiling import Tiling
    from napari_regional_mil.tissue import TissueMask

__all__ = ["SLIDE_FILTER", "SlideWidget"]

SLIDE_FILTER = dialog_filter()  # the one list of slide suffixes (slide/formats.py)


class SlideWidget(TissueFiles, QWidget):
    """Open a slide, see its metadata, set its mpp, detect tissue and tile it.

    Parameters
    ----------
    viewer
        The napari viewer (napari passes it, recognised by the annotation).
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
        self.viewer = viewer
        self.slide: Slide | None = None
        self.slide_layer: Layer | None = None
        self.tiling: Tiling | None = None
        self.job: JobHandle | None = None
        self.state = viewer_state(viewer)
        self._build()
        follow(self, self.state.slide_changed, self._on_slide_changed)
        follow(self, get_settings().plugins.events.extension2reader, self._show_reader_preference)
        follow(self, self.viewer.layers.selection.events.active, self._on_active_layer)
        if self.state.slide_layer is not None:
            self.use_layer(self.state.slide_layer)
        start_job(warm_up, kind="slide-warm-up", description="Preparing the viewer", viewer=self.viewer, owner=self,
                  on_result=lambda _: collect_after_imports(), show_progress=False)

    # -- UI ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.picker = PathPicker(caption="Open a whole-slide image", filter=SLIDE_FILTER, placeholder="slide file...")
        self.picker.line.setToolTip("Path of a whole-slide image (.svs, .tif, .ndpi, ...).")
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Open the slide as a multiscale layer (only its structure is read).")
        self.picker.picked.connect(lambda _: self.open_path())
        self.open_button.clicked.connect(lambda: self.open_path())
        self.default_reader = QCheckBox("Open slide files with Regional MIL (napari's default reader)")
        self.default_reader.setToolTip(
            "Sets napari's preference (Preferences > Plugins > File extension readers) for "
            + ", ".join(reader_patterns()) + ": File > Open and drag and drop then use this plugin "
            "without asking. Open here always uses it."
        )
        self.default_reader.setChecked(is_default_reader())
        self.default_reader.toggled.connect(set_default_reader)
        file_box = QGroupBox("File")
        file_layout = QVBoxLayout(file_box)
        file_layout.setContentsMargins(6, 6, 6, 6)
        row = QHBoxLayout()
        row.addWidget(self.picker, 1)
        row.addWidget(self.open_button)
        file_layout.addLayout(row)
        file_layout.addWidget(self.default_reader)

        self.info = SlideInfoPanel()

        self.mpp = QDoubleSpinBox()
        self.mpp.setDecimals(4)
        self.mpp.setRange(0.0, 50.0)
        self.mpp.setSingleStep(0.05)
        self.mpp.setSpecialValueText("required")
        self.mpp.setSuffix(" µm/px")
        self.mpp.setToolTip("Level-0 microns per pixel. Taken from the slide when it has it; you may override it.")
        self.mpp.editingFinished.connect(self._apply_mpp)
        self.mpp_warning = QLabel("⚠ This slide stores no microns per pixel: enter the scanner's value.")
        self.mpp_warning.setWordWrap(True)
        self.mpp_warning.setStyleSheet("color: #e0a800; font-weight: bold;")
        self.mpp_warning.hide()
        mpp_box = QGroupBox("Resolution")
        mpp_form = form(mpp_box)
        mpp_form.addRow("Slide mpp", self.mpp)
        mpp_form.addRow(self.mpp_warning)

        self.tissue_box = TissueBox()
        self.tissue_box.save_button.clicked.connect(lambda: self.save_mask())
        self.tissue_box.load_button.clicked.connect(lambda: self.load_mask())
        self.tissue_box.annotations_button.clicked.connect(lambda: self.import_annotations())

        self.fields = TilingFields()
        self.tissue_button = QPushButton("Detect tissue")
        self.tissue_button.setToolTip("Find tissue on a low-resolution level; paint on the layer to correct it.")
        self.tile_button = QPushButton("Tile")
        self.tile_button.setToolTip("Cut the tissue into patches and regions (uses the tissue layer as painted).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.tissue_button.clicked.connect(self.detect_tissue)
        self.tile_button.clicked.connect(self.tile)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        for button in (self.tissue_button, self.tile_button, self.cancel_button):
            buttons.addWidget(button)
        self.counts = QLabel("Not tiled yet.")
        self.counts.setWordWrap(True)
        tile_box = QGroupBox("Tissue and tiling")
        tile_layout = QVBoxLayout(tile_box)
        tile_layout.setContentsMargins(6, 6, 6, 6)
        tile_layout.addWidget(self.fields)
        tile_layout.addLayout(buttons)
        self.progress = JobProgressBar()
        tile_layout.addWidget(self.progress)
        tile_layout.addWidget(self.counts)

        scrollable_column(self, file_box, self.info, mpp_box, self.tissue_box, tile_box)
        self._set_busy(False)

    def _show_reader_preference(self, event: Event | None = None) -> None:
        """Follow napari's preference when it changes elsewhere (its reader dialog, Preferences)."""
        self.default_reader.blockSignals(True)
        self.default_reader.setChecked(is_default_reader())
        self.default_reader.blockSignals(False)

    def _set_busy(self, busy: bool) -> None:
        has_slide = self.slide is not None
        self.tissue_button.setEnabled(has_slide and not busy)
        self.tile_button.setEnabled(has_slide and not busy)
        for button in (self.tissue_box.save_button, self.tissue_box.load_button, self.tissue_box.annotations_button):
            button.setEnabled(has_slide and not busy)
        self.open_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # -- opening -------------------------------------------------------------------------------
    def open_path(self, path: str | Path | None = None) -> JobHandle | None:
        """Open ``path`` (default: the path field) with this plugin's reader, in a worker.

        The slide layer is added when the slide is read (a bad file gives one error
        notification). Returns the job, or ``None`` when there is no path or a job runs.
        """
        text = str(path) if path is not None else self.picker.text()
        if not text:
            notify_error(SlideError("choose a slide file first"))
            return None
        self.picker.set_text(text)
        file = Path(text).expanduser()
        self._start(lambda: open_job(file), "slide-open", f"Opening {file.name}", self._show_opened,
                    show_progress=False)
        return self.job

    def _show_opened(self, layer_data: Image) -> None:
        layer = _layers.show_slide_layer(self.viewer, layer_data)
        activate_soon(self.viewer, layer)  # the viewer's open slide: shown here (its controls: next pass)
        self.viewer.reset_view()

    def use_layer(self, layer: Layer) -> None:
        """Make an existing slide layer (e.g. the reader's) the current slide."""
        path = _layers.slide_path_of(layer)
        if path is None or layer is self.slide_layer:
            return
        try:
            slide = _layers.open_slide_of(layer)
        except Exception as exc:
            notify_error(exc, context="Cannot read slide layer")
            return
        self.picker.set_text(str(path))
        self._show(slide, layer)

    def _show(self, slide: Slide, layer: Layer) -> None:
        self._follow_metadata(self.slide_layer, False)
        self.slide, self.slide_layer, self.tiling = slide, layer, None
        self._follow_metadata(layer, True)
        mpp = _layers.layer_mpp(layer) or slide.info.mpp
        self.mpp.blockSignals(True)
        self.mpp.setValue(float(mpp[0]) if mpp else 0.0)
        self.mpp.blockSignals(False)
        params = _layers.tiling_params_of(layer)
        if params is not None:
            self.fields.set_params(params)
        self._update_mpp_state()
        self.refresh_tiling()
        self._set_busy(self.job is not None and self.job.running)
        self.info.show_images({})
        path = Path(slide.info.path)
        start_job(lambda: associated_images_job(path), kind="slide-images", description=f"Label of {path.name}",
                  on_result=lambda images: self.slide_layer is layer and self.info.show_images(images),
                  viewer=self.viewer, owner=self, show_progress=False, on_busy="replace")

    def _follow_metadata(self, layer: Layer | None, on: bool) -> None:
        """(Dis)connect :meth:`refresh_tiling` to a slide layer's ``events.metadata``."""
        events = getattr(getattr(layer, "events", None), "metadata", None)
        if events is None:
            return
        if on:
            events.connect(self.refresh_tiling)
        else:
            events.disconnect(self.refresh_tiling)

    def refresh_tiling(self, event: Event | None = None) -> None:
        """Show the tiling recorded on the current slide layer (``metadata["tiling"]``).

        It may come from another widget (the Cohort widget tiles the slides it opens).
        """
        tiling = _layers.tiling_of(self.slide_layer) if self.slide_layer is not None else None
        if tiling is not None and _layers.slide_path_of(self.slide_layer) is not None:
            params = _layers.tiling_params_of(self.slide_layer)
            if params is not None and tiling is not self.tiling:
                self.fields.set_params(params)
        self.tiling = tiling
        self._show_counts(tiling)

    def _show_counts(self, tiling: Tiling | None) -> None:
        if tiling is None:
            self.counts.setText("Not tiled yet.")
            return
        rows, cols = tiling.grid_shape
        self.counts.setText(
            f"<b>{tiling.n_patches:,}</b> patches in <b>{tiling.n_regions:,}</b> regions "
            f"(grid {cols} x {rows} patches of {tiling.patch_size_level0:.4g} level-0 px)"
        )

    def _on_active_layer(self, event: Event | None = None) -> None:
        if self.slide_layer is not None and self.viewer.layers.selection.active is self.slide_layer:
            self.refresh_tiling()  # tiled elsewhere meanwhile (metadata set without an event)?

    def _on_slide_changed(self, layer: Layer | None) -> None:
        """Show the viewer's open slide (opened here, by the reader or by the Cohort widget)."""
        if layer is None:
            self._follow_metadata(self.slide_layer, False)
            self.slide_layer = None
            self.slide, self.tiling = None, None
            self.info.clear()
            self.counts.setText("Not tiled yet.")
            self._set_busy(self.job is not None and self.job.running)
        elif layer is not self.slide_layer:
            self.use_layer(layer)

    # -- mpp -----------------------------------------------------------------------------------
    def current_mpp(self) -> float | None:
        """The mpp in the field (``None`` when not given)."""
        value = float(self.mpp.value())
        return value if value > 0 else None

    def _update_mpp_state(self) -> None:
        missing = self.slide is not None and self.current_mpp() is None
        self.mpp_warning.setVisible(missing)
        self.mpp.setStyleSheet(WARNING_STYLE if missing else "")
        if self.slide is not None:
            mpp = self.current_mpp()
            self.info.show_slide(self.slide, mpp=(mpp, mpp) if mpp else None)

    def _apply_mpp(self) -> None:
        if self.slide_layer is None:
            return
        mpp = self.current_mpp()
        old = _layers.layer_mpp(self.slide_layer)
        new = (mpp, mpp) if mpp else self.slide.info.mpp
        if new != old:
            _layers.set_slide_mpp(self.viewer, self.slide_layer, new)
            self.viewer.reset_view()
        self._update_mpp_state()

    # -- tissue and tiling -------------------------------------------------------------------
    def _start(self, job: Any, kind: str, description: str, on_result: Any, *, show_progress: bool = True) -> None:
        self.job = start_job(
            job,
            kind=kind,
            description=description,
            on_result=on_result,
            on_finish=lambda status: self._set_busy(False),
            viewer=self.viewer,
            owner=self,
            progress_bar=self.progress if show_progress else None,
            show_progress=False,
        )
        if self.job is not None:
            self._set_busy(True)

    def detect_tissue(self) -> None:
        """Detect tissue in a worker; the result becomes the editable tissue Labels layer."""
        if self.slide is None:
            notify_error(SlideError("open a slide first"))
            return
        path, mpp, options = Path(self.slide.info.path), self.current_mpp(), self.tissue_box.options()
        self._start(lambda: tissue_job(path, mpp, options), "tissue", f"Tissue of {path.name}",
                    lambda mask: self._show_tissue(mask, default=options.is_default))

    def _show_tissue(self, mask: TissueMask, *, default: bool = False) -> None:
        if self.slide_layer is None:
            return
        layer = _layers.show_tissue_mask(self.viewer, self.slide_layer, mask, self.slide.info.dimensions)
        # a mask made another way than default detection is what embedding must use, painted or not
        layer.metadata["tissue_default"] = default
        self.viewer.layers.selection.active = self.slide_layer

    def tile(self) -> None:
        """Tile the slide in a worker with the tissue layer as painted (detecting it if absent)."""
        if self.slide is None:
            notify_error(SlideError("open a slide first"))
            return
        mpp = self.current_mpp()
        path = Path(self.slide.info.path)
        if mpp is None:
            self.mpp.setFocus()
            notify_error(SlideError(f"{path.name}: enter the slide's microns per pixel (mpp) before tiling"))
            return
        try:
            params = self.fields.params()
        except Exception as exc:
            notify_error(exc, context="Tiling parameters")
            return
        tissue = _layers.tissue_mask_of(self.viewer, self.slide_layer)
        options = self.tissue_box.options()
        self._start(lambda: tiling_job(path, mpp, params, tissue, options), "tiling", f"Tiling {path.name}",
                    self._show_tiling)

    def _show_tiling(self, prepared: TilingLayers) -> None:
        """Show a :class:`._layers.TilingLayers` made in the worker (adds or updates layers only)."""
        if self.slide_layer is None:
            return
        _layers.show_tiling_layers(self.viewer, self.slide_layer, prepared)  # emits events.metadata
        self.tiling = prepared.tiling
        self._show_counts(prepared.tiling)
        self.viewer.layers.selection.active = self.slide_layer

    def cancel(self) -> None:
        """Cancel the running tissue detection or tiling."""
        if self.job is not None:
            self.job.cancel()
