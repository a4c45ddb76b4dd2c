"""The encoder choice of the Embed widget: a built-in or published encoder, a TorchScript file, or timm.

A published encoder (UNI, Virchow2, ... under TRIDENT's names) needs its weights: a file the
user picked, or the "download from the Hugging Face hub" box (never implicit), with the
repository's licence and gating shown next to it (:class:`~._encoder_weights.WeightsSource`,
also used by the Predict widget's :class:`~._encoder_weights.ModelEncoderFields`).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._encoder_weights import (
    WEIGHTS_FILTER,
    ModelEncoderFields,
    WeightsSource,
)
from napari_regional_mil._widgets._fields import PathPicker, form
from napari_regional_mil._widgets._worker import notify_error
from napari_regional_mil.encoders.known import KNOWN_ENCODERS
from napari_regional_mil.encoders.names import DEFAULT_ENCODER, encoder_names
from napari_regional_mil.errors import EncoderError

__all__ = [
    "CONTEXT_SCALES",
    "KINDS",
    "ContextEncoderFields",
    "EncoderFields",
    "ModelEncoderFields",
    "WeightsSource",
]

#: The encoder kinds offered, in order.
KINDS = ("Built-in or published encoder", "TorchScript file", "timm model + weights")

#: Scales offered for context patches (multiples of the tiling's um/px).
CONTEXT_SCALES = (2.0, 4.0)

_TORCHSCRIPT_FILTER = "TorchScript (*.pt *.ts *.torchscript *.jit)"


class EncoderFields(QWidget):
    """Which frozen encoder (second model) embeds the patches.

    :meth:`choice` gives ``(encoder, options)`` for
    :func:`~napari_regional_mil.embedding.pipeline.embed_slide`'s ``encoder`` and
    ``encoder_options``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        self.kind.addItems(KINDS)
        self.kind.setToolTip("Where the encoder comes from.")

        # built-in, published (TRIDENT's names) and registered (e.g. pretrained) encoders
        self.name = QComboBox()
        self.name.addItems(encoder_names())
        for i in range(self.name.count()):
            known = KNOWN_ENCODERS.get(self.name.itemText(i))
            if known is not None:
                self.name.setItemData(i, known.title, Qt.ItemDataRole.ToolTipRole)
                if not known.loadable:  # listed, but its code is not on the registry
                    self.name.model().item(i).setEnabled(False)
        self.name.setCurrentText(DEFAULT_ENCODER)
        self.name.setToolTip(
            "builtin-he needs no download (colour, stain and texture statistics). Published pathology "
            "encoders (UNI, Virchow2, H-optimus, ... under TRIDENT's names) need their weights: a file, "
            "or the download."
        )
        self.source = WeightsSource()
        self.name_weights = self.source.weights  # the weights picker of a published encoder
        self.from_hub = self.source.from_hub
        registered = QWidget()
        f1 = form(registered)
        f1.setContentsMargins(0, 0, 0, 0)
        f1.addRow("Name", self.name)
        f1.addRow(self.source)
        self.name.currentTextChanged.connect(self.source.set_encoder)
        self.source.set_encoder(self.name.currentText())

        # TorchScript
        self.script = PathPicker(
            caption="TorchScript encoder",
            filter=f"{_TORCHSCRIPT_FILTER};;All files (*)",
            placeholder="file made by torch.jit.save",
        )
        self.script.setToolTip(
            "A TorchScript file runs the code it contains: choose only files you trust. "
            "Suffix .pt, .ts, .torchscript or .jit."
        )
        script_note = QLabel("<i>Runs the code in the file: only files you trust.</i>")
        self.script_size = QSpinBox()
        self.script_size.setRange(0, 4096)
        self.script_size.setSpecialValueText("from file / 224")
        self.script_size.setSuffix(" px")
        self.script_size.setToolTip("Input size the model expects (0: from the file, else 224 px).")
        self.script_mpp = QDoubleSpinBox()
        self.script_mpp.setDecimals(3)
        self.script_mpp.setRange(0.0, 50.0)
        self.script_mpp.setSpecialValueText("from file / 0.5")
        self.script_mpp.setSuffix(" µm/px")
        self.script_mpp.setToolTip("Resolution the model was trained at (0: from the file, else 0.5 µm/px).")
        script = QWidget()
        f2 = form(script)
        f2.setContentsMargins(0, 0, 0, 0)
        f2.addRow("File", self.script)
        f2.addRow(script_note)
        f2.addRow("Input size", self.script_size)
        f2.addRow("Model mpp", self.script_mpp)

        # timm
        self.timm_name = QLineEdit()
        self.timm_name.setPlaceholderText("e.g. vit_large_patch16_224")
        self.timm_name.setToolTip("A timm architecture name.")
        self.timm_weights = PathPicker(
            caption="Weights of the timm model", filter=WEIGHTS_FILTER, placeholder="local weights file"
        )
        timm = QWidget()
        f3 = form(timm)
        f3.setContentsMargins(0, 0, 0, 0)
        f3.addRow("Model", self.timm_name)
        f3.addRow("Weights", self.timm_weights)

        self.pages = QStackedWidget()
        for page in (registered, script, timm):
            self.pages.addWidget(page)
        self.kind.currentIndexChanged.connect(self._show_page)
        self._show_page(0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.kind)
        layout.addWidget(self.pages)

    def _show_page(self, index: int) -> None:
        """Show page ``index``; the stack takes the height of the shown page only."""
        self.pages.setCurrentIndex(index)
        for i in range(self.pages.count()):
            policy = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            self.pages.widget(i).setSizePolicy(QSizePolicy.Policy.Preferred, policy)
        self.pages.adjustSize()

    def choice(self) -> tuple[Any, dict[str, Any]]:
        """``(encoder, options)`` as chosen.

        Raises
        ------
        EncoderError
            When a required field is empty (a file, a weights file or the download, a model name).
        """
        index = self.kind.currentIndex()
        if index == 0:
            return self.name.currentText(), self.source.check()
        if index == 1:
            path = self.script.text()
            if not path:
                raise EncoderError("choose a TorchScript encoder file")
            options: dict[str, Any] = {}
            if self.script_size.value() > 0:
                options["input_size"] = int(self.script_size.value())
            if self.script_mpp.value() > 0:
                options["mpp"] = float(self.script_mpp.value())
            return path, options
        name = self.timm_name.text().strip()
        weights = self.timm_weights.text()
        if not name or not weights:
            raise EncoderError("a timm encoder needs a model name and a local weights file")
        return f"timm:{name}", {"weights": weights}

    def describe(self) -> str:
        """A short name of the choice for messages."""
        index = self.kind.currentIndex()
        if index == 0:
            return self.name.currentText()
        if index == 1:
            return self.script.path().name if self.script.path() else "TorchScript"
        return f"timm:{self.timm_name.text().strip()}"


class ContextEncoderFields(QWidget):
    """Several scales: further encoders that embed one larger patch centred on each region.

    Choose an encoder (as for the patches) and a scale (2 or 4 x the tiling's um/px), then
    Add; the list holds the context encoders run after the patch embedding
    (:func:`~napari_regional_mil.embedding.context.embed_contexts`, as
    ``embed --context-encoder``). :meth:`requests` gives ``(encoder, options, scale)`` each.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: dict[
            int, tuple[str, dict[str, Any], float]
        ] = {}  # by the item's key (Qt may copy Python data)
        self._next_key = 0
        self.encoder = EncoderFields()
        self.scale = QComboBox()
        for value in CONTEXT_SCALES:
            self.scale.addItem(f"{value:g} x the patch µm/px", value)
        self.scale.setToolTip(
            "The context patch has the patch's pixel size at this multiple of its µm/px "
            "(2 x: 4 times the area), centred on each region."
        )
        self.add_button = QPushButton("Add")
        self.add_button.setToolTip("Add this encoder at this scale to the context encoders.")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected context encoder.")
        self.add_button.clicked.connect(self._add_clicked)
        self.remove_button.clicked.connect(self.remove_selected)
        self.list = QListWidget()
        self.list.setMaximumHeight(70)
        self.list.setToolTip(
            "Context encoders run after the patch embedding; their embeddings are cached with "
            "the slide's and picked up by the Train widget."
        )
        self.empty = QLabel("<i>none: patches only</i>")
        row = QHBoxLayout()
        row.addWidget(QLabel("Scale"))
        row.addWidget(self.scale, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.encoder)
        layout.addLayout(row)
        layout.addWidget(self.list)
        layout.addWidget(self.empty)
        self._update()

    def _add_clicked(self) -> None:
        try:
            self.add_current()
        except EncoderError as exc:
            notify_error(exc, context="Context encoder")

    def add_current(self) -> None:
        """Add the encoder and scale shown to the list (an identical entry is not added twice).

        Raises
        ------
        EncoderError
            When a required field of the encoder is empty.
        """
        encoder, options = self.encoder.choice()
        self.add(encoder, float(self.scale.currentData()), options=options, label=self.encoder.describe())

    def add(
        self, encoder: str, scale: float, *, options: dict[str, Any] | None = None, label: str | None = None
    ) -> None:
        """Add a context encoder (a registered name or a file) at ``scale``."""
        entry = (encoder, dict(options or {}), float(scale))
        if entry in self.requests():
            return
        item = QListWidgetItem(f"{label or encoder} at {scale:g} x")
        item.setData(Qt.ItemDataRole.UserRole, self._next_key)
        self._entries[self._next_key] = entry
        self._next_key += 1
        item.setToolTip(str(encoder))
        self.list.addItem(item)
        self._update()

    def remove_selected(self) -> None:
        """Remove the selected entries (the last one when none is selected)."""
        rows = sorted({self.list.row(i) for i in self.list.selectedItems()})
        if not rows and self.list.count():
            rows = [self.list.count() - 1]
        for row in reversed(rows):
            item = self.list.takeItem(row)
            self._entries.pop(int(item.data(Qt.ItemDataRole.UserRole)), None)
        self._update()

    def clear(self) -> None:
        """No context encoder."""
        self.list.clear()
        self._entries.clear()
        self._update()

    def requests(self) -> list[tuple[str, dict[str, Any], float]]:
        """``(encoder, options, scale)`` of every context encoder, in order."""
        return [
            self._entries[int(self.list.item(i).data(Qt.ItemDataRole.UserRole))]
            for i in range(self.list.count())
        ]

    def _update(self) -> None:
        self.empty.setVisible(self.list.count() == 0)
        self.list.setVisible(self.list.count() > 0)
        self.remove_button.setEnabled(self.list.count() > 0)
