"""Where a published encoder's weights come from, in the widgets: a picked file or the hub (explicitly).

:class:`WeightsSource` (the Embed widget's published-encoder fields) shows the encoder's
repository, weights file, licence, gating and whether the file is in the hub cache;
:class:`ModelEncoderFields` (the Predict widget) asks for what a trained model's encoder
needs when a slide must be embedded for it, as :func:`~napari_regional_mil.encoders.encoder_for_stored`
requires.
"""

from __future__ import annotations

import html
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QLabel, QVBoxLayout, QWidget

from napari_regional_mil._widgets._fields import PathPicker
from napari_regional_mil.encoders.known import KNOWN_ENCODERS, canonical_name
from napari_regional_mil.encoders.policy import stored_encoder
from napari_regional_mil.errors import EncoderError

__all__ = ["WEIGHTS_FILTER", "ModelEncoderFields", "WeightsSource"]

#: File dialog filter of weights files.
WEIGHTS_FILTER = "Weights (*.safetensors *.bin *.pth *.pt *.ckpt);;All files (*)"


class WeightsSource(QWidget):
    """Where a published encoder's weights come from: a file the user picked, or the hub (explicitly).

    :meth:`set_encoder` shows the encoder's repository, weights file, licence, gating and
    whether the file is already in the hub cache; :meth:`options` gives ``{"weights":
    path}`` or ``{"from_hub": True}`` for :func:`~napari_regional_mil.encoders.load_encoder`.

    Signals
    -------
    changed()
        The file or the download choice changed.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name: str | None = None
        self.weights = PathPicker(
            caption="Weights of the encoder",
            filter=WEIGHTS_FILTER,
            placeholder="weights file you downloaded",
        )
        self.weights.setToolTip(
            "The published weights file (e.g. pytorch_model.bin); read as data, never unpickled."
        )
        self.from_hub = QCheckBox("Download from the Hugging Face hub")
        self.from_hub.setToolTip(
            "Fetch the weights from the hub (or reuse the copy in the hub cache) with your "
            "hub login or HF_TOKEN. Never done unless this box is ticked."
        )
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.note.setOpenExternalLinks(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        layout.addWidget(self.weights)
        layout.addWidget(self.from_hub)
        layout.addWidget(self.note)
        self.from_hub.toggled.connect(self._hub_toggled)
        self.weights.line.textChanged.connect(lambda _: self.changed.emit())

    def _hub_toggled(self, on: bool) -> None:
        self.weights.setEnabled(not on)
        self.changed.emit()

    def set_encoder(self, name: str | None) -> None:
        """Show what ``name`` (a known encoder, TRIDENT's name or an alias) needs; hide for others."""
        known = KNOWN_ENCODERS.get(canonical_name(name)) if name else None
        self.name = known.name if known else None
        self.setVisible(known is not None)
        if known is None:
            return
        if not known.loadable:
            self.weights.setEnabled(False)
            self.from_hub.setEnabled(False)
            self.from_hub.setChecked(False)
            self.note.setText(
                f"<b>{known.name}</b> {html.escape(known.needs)}: choose its TorchScript export "
                '("TorchScript file") instead.'
            )
            return
        from napari_regional_mil.encoders.hub import (
            cached_file,  # lazy: startup (huggingface_hub, for a published encoder)
        )

        self.from_hub.setEnabled(True)
        self.weights.setEnabled(not self.from_hub.isChecked())
        local = cached_file(known) is not None
        gated = (
            f' <b>Gated</b>: accept its terms on <a href="{known.hub_url}">{known.hub_repo}</a> while logged '
            "in, then log in here (<tt>hf auth login</tt>) or set HF_TOKEN."
            if known.gated
            else ""
        )
        self.note.setText(
            f"<b>{known.name}</b>: {html.escape(known.title)}; {known.embedding_dim}-d. Weights: "
            f'<tt>{known.weights_file}</tt> of <a href="{known.hub_url}">{known.hub_repo}</a>, licence '
            f"{html.escape(known.licence)}.{gated} In the hub cache: {'yes' if local else 'no'}."
        )

    def options(self) -> dict[str, Any]:
        """``{"from_hub": True}``, ``{"weights": path}`` or ``{}`` (nothing chosen)."""
        if self.name is None:
            return {}
        if self.from_hub.isChecked() and self.from_hub.isEnabled():
            return {"from_hub": True}
        return {"weights": self.weights.text()} if self.weights.text() else {}

    def check(self) -> dict[str, Any]:
        """:meth:`options`, or :class:`EncoderError` when a published encoder has neither."""
        options = self.options()
        if self.name is not None and not options:
            known = KNOWN_ENCODERS[self.name]
            if not known.loadable:
                raise EncoderError(
                    f"encoder {known.name} {known.needs}: choose its TorchScript export instead"
                )
            raise EncoderError(
                f"encoder {known.name}: choose its weights file ({known.weights_file} of "
                f'{known.hub_repo}) or tick "Download from the Hugging Face hub"'
            )
        return options


class ModelEncoderFields(QWidget):
    """What a trained model's encoder needs when the Predict widget must embed a slide for it.

    A model's stored encoder name never downloads or loads a file by itself
    (:func:`~napari_regional_mil.encoders.encoder_for_stored`): for a published encoder the
    user picks its weights or ticks the download (:class:`WeightsSource`), for an encoder
    file they pick the file; built-in encoders need nothing (the fields stay hidden).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = "self-contained"
        self.source = WeightsSource()
        self.file = PathPicker(
            caption="The model's encoder file",
            filter="Encoders (*.safetensors *.pt *.ts *.torchscript *.jit *.bin *.pth);;All files (*)",
            placeholder="encoder or weights file",
        )
        self.note = QLabel()
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        layout.addWidget(QLabel("<b>Model's encoder</b> (only used when the slide has no cache yet)"))
        layout.addWidget(self.source)
        layout.addWidget(self.file)
        layout.addWidget(self.note)
        self.set_record(None)

    def set_record(self, record: Any) -> None:
        """Show what the model's stored encoder record needs (nothing for built-in encoders)."""
        try:
            need = stored_encoder(record) if record else None
        except EncoderError:
            need = None
        self.kind = need.kind if need is not None else "self-contained"
        self.setVisible(self.kind not in ("self-contained", "registered"))
        self.source.setVisible(self.kind == "known")
        self.source.set_encoder(need.name if self.kind == "known" and need is not None else None)
        self.file.setVisible(self.kind in ("file", "timm", "hub", "unknown"))
        self.note.setVisible(self.kind in ("file", "timm", "hub", "unknown"))
        if need is not None and self.note.isVisibleTo(self):
            self.note.setText(need.needs("The model"))

    def options(self) -> dict[str, Any]:
        """``encoder_weights`` and ``from_hub`` for the Predict job (empty when nothing is needed)."""
        if self.kind == "known":
            chosen = self.source.options()
            if chosen.get("from_hub"):
                return {"from_hub": True}
            return {"encoder_weights": chosen["weights"]} if chosen.get("weights") else {}
        if self.kind in ("file", "timm", "hub", "unknown") and self.file.text():
            return {"encoder_weights": self.file.text()}
        return {}
