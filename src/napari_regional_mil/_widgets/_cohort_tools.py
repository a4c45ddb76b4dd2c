"""Parts of the Cohort widget: the class editor and the embedding box."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from napari_regional_mil._widgets import _layers
from napari_regional_mil._widgets._encoder_fields import EncoderFields
from napari_regional_mil._widgets._fields import PathPicker, TilingFields, form
from napari_regional_mil._widgets._progress_bar import JobProgressBar
from napari_regional_mil._widgets._selection import activate_soon
from napari_regional_mil._widgets._slide_jobs import open_job, tiling_job
from napari_regional_mil._widgets._worker import start_job
from napari_regional_mil.embedding.folders import default_cache_dir
from napari_regional_mil.training.cohort_table import CohortTable

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from qtpy.QtCore import QObject

    from napari_regional_mil._widgets._layers import TilingLayers
    from napari_regional_mil._widgets._worker import JobHandle
    from napari_regional_mil.tiling import TilingParams

__all__ = ["ClassEditor", "EmbedBox", "embed_missing_job", "open_with_grids"]


class ClassEditor(QGroupBox):
    """The class names offered as labels: add, rename (double-click), remove.

    Signals
    -------
    changed
        Emitted after a class was added, renamed or removed.
    """

    changed = Signal()

    def __init__(self, table: CohortTable, *, on_error: Any = None) -> None:
        super().__init__("Classes")
        self.table = table
        self._on_error = on_error
        self.list = QListWidget()
        self.list.setFlow(QListWidget.Flow.LeftToRight)
        self.list.setWrapping(True)
        self.list.setMaximumHeight(56)
        self.list.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.list.setToolTip("The classes a slide can be labelled with. Double-click a class to rename it.")
        self.name = QLineEdit()
        self.name.setPlaceholderText("new class name")
        self.add_button = QPushButton("Add class")
        self.remove_button = QPushButton("Remove class")
        self.remove_button.setToolTip("Remove the selected class; its slides become unlabelled.")
        row = QHBoxLayout()
        row.addWidget(self.name, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self.add_button.clicked.connect(lambda: self.add_class(self.name.text()))
        self.name.returnPressed.connect(lambda: self.add_class(self.name.text()))
        self.remove_button.clicked.connect(self._remove_current)
        self.list.itemChanged.connect(self._on_item_changed)
        self.refresh()

    def refresh(self) -> None:
        """Show the table's classes."""
        self.list.blockSignals(True)
        self.list.clear()
        for name in self.table.class_names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.list.addItem(item)
        self.list.blockSignals(False)

    def _fail(self, exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    def add_class(self, name: str) -> bool:
        """Add a class; ``False`` (and a notification) when refused."""
        try:
            self.table.add_class(name)
        except Exception as exc:
            self._fail(exc)
            return False
        self.name.clear()
        self.refresh()
        self.changed.emit()
        return True

    def rename_class(self, old: str, new: str) -> bool:
        """Rename a class everywhere; ``False`` (and a notification) when refused."""
        try:
            self.table.rename_class(old, new)
        except Exception as exc:
            self._fail(exc)
            self.refresh()
            return False
        self.refresh()
        self.changed.emit()
        return True

    def remove_class(self, name: str) -> None:
        """Remove a class (its slides become unlabelled)."""
        try:
            self.table.remove_class(name)
        except Exception as exc:
            self._fail(exc)
            return
        self.refresh()
        self.changed.emit()

    def _remove_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.remove_class(item.data(Qt.ItemDataRole.UserRole))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        old = item.data(Qt.ItemDataRole.UserRole)
        if old is not None and item.text() != old:
            self.rename_class(old, item.text())


class EmbedBox(QGroupBox):
    """Cache folder, encoder, tiling and the "Embed missing" / "Cancel" buttons."""

    def __init__(self) -> None:
        super().__init__("Embedding")
        self._cache_auto = True
        self.cache_dir = PathPicker(caption="Embedding cache folder", directory=True, placeholder="cache folder")
        self.cache_dir.line.setToolTip(
            "Where the slides' embeddings are cached (shared with the Embed, Train and Predict widgets). "
            "Default: a 'regional-mil-cache' folder next to the slides."
        )
        self.cache_dir.line.textEdited.connect(lambda *_: setattr(self, "_cache_auto", False))
        self.cache_dir.picked.connect(lambda *_: setattr(self, "_cache_auto", False))
        self.encoder = EncoderFields()
        self.tiling = TilingFields()
        self.tiling.setToolTip("The tiling the slides are embedded with (and their grids drawn with).")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(64)
        self.batch_size.setToolTip("Patches per encoder forward pass.")
        self.embed_button = QPushButton("Embed missing")
        self.embed_button.setToolTip(
            "Embed every slide without a complete cache, one after the other, in the background."
        )
        self.cancel_button = QPushButton("Cancel")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        fields = form()
        fields.addRow("Cache folder", self.cache_dir)
        fields.addRow("Encoder", self.encoder)
        fields.addRow(self.tiling)
        fields.addRow("Batch size", self.batch_size)
        buttons = QHBoxLayout()
        buttons.addWidget(self.embed_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(fields)
        layout.addLayout(buttons)
        self.progress = JobProgressBar()
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    def cache_path(self) -> Path | None:
        """The cache folder in the field, or ``None``."""
        return self.cache_dir.path()

    def set_cache_dir(self, path: str | Path) -> None:
        """Use ``path`` as the cache folder (no longer following the slides)."""
        self.cache_dir.set_text(str(path))
        self._cache_auto = False

    def suggest_cache_dir(self, slide_folder: Path) -> None:
        """Default the cache folder to the one next to the slides, unless the user chose one."""
        if self._cache_auto or not self.cache_dir.text():
            self.cache_dir.set_text(str(default_cache_dir(slide_folder / "slide.tif")))

    def embed_options(self) -> dict[str, Any]:
        """Keyword arguments for ``embed_slide`` (besides the slide and cache folder).

        Raises
        ------
        EncoderError
            An incomplete encoder choice.
        """
        encoder, options = self.encoder.choice()
        return {
            "encoder": encoder,
            "encoder_options": options or None,
            "tiling_params": self.tiling.params(),
            "batch_size": int(self.batch_size.value()),
        }


def embed_missing_job(rows: list[tuple[str, Path]], **kwargs: Any):
    """Job: embed each ``(name, path)`` in turn; one ``"embedded"`` event per finished slide."""
    from napari_regional_mil.embedding.workflow import embed_slides  # lazy: startup (zarr, when embedding)

    return embed_slides([path for _, path in rows], on_error="raise", **kwargs)


def open_with_grids(viewer: ViewerModel, path: Path, params: TilingParams, cache_dir: Path | None, *,
                    owner: QObject | None = None, progress_bar: JobProgressBar | None = None) -> JobHandle | None:
    """Open a slide in a worker and show it alone, then detect tissue and tile it in another worker.

    The slide is read by this plugin's reader; other slides and their layers are hidden; the
    tissue and the patch and region grids are shown when the second worker is done.

    Returns the opening job (``None`` when refused); a bad file gives one notification.
    """

    def show(layer_data: Any) -> None:
        layer = _layers.show_slide_layer(viewer, layer_data)
        for other in viewer.layers:
            meta = other.metadata or {}
            if other is not layer and (other in _layers.slide_layers(viewer) or "derived_from" in meta):
                other.visible = meta.get("derived_from") == layer.name
        layer.visible = True
        layer.metadata["tiling_params"] = asdict(params)
        if cache_dir is not None:
            layer.metadata["cache_dir"] = str(cache_dir)
        activate_soon(viewer, layer)  # its controls in the next event-loop pass
        viewer.reset_view()
        mpp = _layers.layer_mpp(layer)
        if mpp is None:
            notifications.show_warning(f"{path.name}: the slide has no mpp; set it in the Slide widget to tile it")
            return

        def show_grids(prepared: TilingLayers) -> None:  # made in the worker
            if layer not in viewer.layers:
                return
            _layers.show_tiling_layers(viewer, layer, prepared)
            viewer.layers.selection.active = layer

        start_job(lambda: tiling_job(path, mpp[0], params, None), kind="tiling",
                  description=f"Tissue and grids of {path.stem}", on_result=show_grids, viewer=viewer, owner=owner,
                  progress_bar=progress_bar)

    return start_job(lambda: open_job(path), kind="cohort-open", description=f"Opening {path.name}", on_result=show,
                     viewer=viewer, owner=owner, show_progress=False, on_busy="replace")
