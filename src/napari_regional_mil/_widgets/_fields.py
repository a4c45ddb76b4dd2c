"""Small form pieces the dock widgets share: tiling parameters, path pickers, styling."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil.tiling import TilingParams

__all__ = ["WARNING_STYLE", "PathPicker", "TilingFields", "form", "scrollable_column"]

#: Style of a field that needs the user's attention (e.g. a slide without mpp).
WARNING_STYLE = "border: 2px solid #e0a800; border-radius: 3px;"


def form(parent: QWidget | None = None) -> QFormLayout:
    """A QFormLayout with the project's spacing (labels right-aligned, fields growing)."""
    layout = QFormLayout(parent)
    layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    layout.setContentsMargins(6, 6, 6, 6)
    layout.setHorizontalSpacing(10)
    layout.setVerticalSpacing(5)
    return layout


def scrollable_column(owner: QWidget, *items: object) -> QVBoxLayout:
    """Lay ``items`` (widgets or layouts) out top to bottom in a vertical scroll area filling ``owner``.

    Returns the inner column layout (a stretch is added after the items), so a dock widget
    stays usable when the dock is shorter than its content.
    """
    inner = QWidget()
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.setSpacing(6)
    for item in items:
        if isinstance(item, QWidget):
            layout.addWidget(item)
        else:
            layout.addLayout(item)
    layout.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return layout


class TilingFields(QWidget):
    """Patch size, target mpp, region size and tissue threshold (a :class:`TilingParams`).

    Signals
    -------
    changed
        Emitted when any field changes.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None, *, threshold: bool = True) -> None:
        super().__init__(parent)
        defaults = TilingParams()
        layout = form(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.patch_size = QSpinBox()
        self.patch_size.setRange(8, 4096)
        self.patch_size.setValue(defaults.patch_size)
        self.patch_size.setSuffix(" px")
        self.patch_size.setToolTip("Patch side in pixels at the target resolution (default 256 px).")
        self.target_mpp = QDoubleSpinBox()
        self.target_mpp.setDecimals(3)
        self.target_mpp.setRange(0.05, 50.0)
        self.target_mpp.setSingleStep(0.25)
        self.target_mpp.setValue(defaults.target_mpp)
        self.target_mpp.setSuffix(" µm/px")
        self.target_mpp.setToolTip("Resolution the patches are read at (default 0.5 µm/px, about 20x).")
        self.region_size = QSpinBox()
        self.region_size.setRange(1, 64)
        self.region_size.setValue(defaults.region_size)
        self.region_size.setPrefix("k = ")
        self.region_size.setToolTip(
            "A region is a k x k block of patches (default 8; the method asks k*k in 10..1000)."
        )
        self.threshold = QDoubleSpinBox()
        self.threshold.setDecimals(2)
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(defaults.tissue_threshold)
        self.threshold.setToolTip("A patch is kept when at least this fraction of it is tissue.")
        layout.addRow("Patch size", self.patch_size)
        layout.addRow("Target mpp", self.target_mpp)
        layout.addRow("Region size", self.region_size)
        if threshold:
            layout.addRow("Tissue threshold", self.threshold)
        else:
            self.threshold.hide()
        for box in (self.patch_size, self.region_size):
            box.valueChanged.connect(lambda *_: self.changed.emit())
        for box in (self.target_mpp, self.threshold):
            box.valueChanged.connect(lambda *_: self.changed.emit())

    def params(self) -> TilingParams:
        """The parameters shown."""
        return TilingParams(
            patch_size=int(self.patch_size.value()),
            target_mpp=float(self.target_mpp.value()),
            region_size=int(self.region_size.value()),
            tissue_threshold=float(self.threshold.value()),
        )

    def set_params(self, params: TilingParams) -> None:
        """Show ``params``."""
        self.patch_size.setValue(int(params.patch_size))
        self.target_mpp.setValue(float(params.target_mpp))
        self.region_size.setValue(int(params.region_size))
        self.threshold.setValue(float(params.tissue_threshold))


class PathPicker(QWidget):
    """A path line edit with a "Browse..." button (file or directory).

    Signals
    -------
    picked(str)
        Emitted when a path was chosen in the dialog or Return was pressed.
    """

    picked = Signal(str)

    def __init__(
        self,
        *,
        caption: str,
        filter: str = "",
        directory: bool = False,
        placeholder: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._caption, self._filter, self._directory = caption, filter, directory
        self.line = QLineEdit()
        self.line.setPlaceholderText(placeholder)
        self.line.setClearButtonEnabled(True)
        self.button = QPushButton("Browse...")
        self.button.setToolTip(caption)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.line, 1)
        layout.addWidget(self.button)
        self.button.clicked.connect(self._browse)
        self.line.returnPressed.connect(lambda: self.picked.emit(self.text()))

    def text(self) -> str:
        """The path typed or picked (stripped; may be empty)."""
        return self.line.text().strip()

    def path(self) -> Path | None:
        """The path as a :class:`Path`, or ``None`` when empty."""
        return Path(self.text()).expanduser() if self.text() else None

    def set_text(self, text: str) -> None:
        """Show ``text`` without emitting :attr:`picked`."""
        self.line.setText(text)

    def _browse(self) -> None:
        start = self.text() or str(Path.home())
        if self._directory:
            chosen = QFileDialog.getExistingDirectory(self, self._caption, start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self._caption, start, self._filter)
        if chosen:
            self.line.setText(chosen)
            self.picked.emit(chosen)
