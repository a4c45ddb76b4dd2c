"""The Train widget's form: model hyper-parameters and optimisation settings.

The fields are generated from the one table of options, :mod:`napari_regional_mil.settings`
(the options marked ``gui=True``), with the same defaults, ranges and help texts as the
CLI's flags, so the GUI and ``napari-regional-mil train`` train the same model from the
same cohort. A new option in the settings appears here without a change to this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._fields import form
from napari_regional_mil.errors import TrainingError
from napari_regional_mil.options import Option, OptionValue, options_of
from napari_regional_mil.settings import ModelConfig, SelectionConfig, TrainConfig

if TYPE_CHECKING:
    from napari_regional_mil.training.workflow import ModelOptions

__all__ = ["VALIDATION_MODES", "ContextFields", "ModelFields", "OptimFields", "OptionForm", "option_widget"]

#: How slides are held out: a validation fraction (early stopping) or k-fold cross-validation.
VALIDATION_MODES = ("validation fraction", "k-fold cross-validation")

_INT_LIMIT = 2**31 - 1


def _tooltip(opt: Option) -> str:
    return opt.spec.help[:1].upper() + opt.spec.help[1:] + "."


def option_widget(opt: Option) -> QWidget:
    """The input widget of one option (spin box, combo box, check box or line), at its default."""
    spec = opt.spec
    widget: QWidget
    if opt.kind is bool:
        box = QCheckBox()
        box.setChecked(bool(opt.default))
        widget = box
    elif opt.choices:
        combo = QComboBox()
        combo.addItems(opt.choices)
        combo.setCurrentText(str(opt.default))
        widget = combo
    elif opt.kind is int:
        spin = QSpinBox()
        spin.setRange(
            int(spec.low if spec.low is not None else 0), int(spec.high if spec.high is not None else _INT_LIMIT)
        )
        spin.setSingleStep(int(spec.step or 1))
        spin.setValue(int(opt.default))
        widget = spin
    elif opt.kind is float:
        double = QDoubleSpinBox()
        double.setDecimals(spec.decimals if spec.decimals is not None else 3)
        double.setRange(
            float(spec.low if spec.low is not None else 0.0), float(spec.high if spec.high is not None else 1e9)
        )
        double.setSingleStep(float(spec.step or 0.1))
        double.setValue(float(opt.default))
        widget = double
    else:
        line = QLineEdit(str(opt.default))
        widget = line
    widget.setToolTip(_tooltip(opt))
    return widget


def option_value(opt: Option, widget: QWidget) -> OptionValue:
    """The value an :func:`option_widget` shows."""
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QSpinBox):
        return int(widget.value())
    if isinstance(widget, QDoubleSpinBox):
        return float(widget.value())
    assert isinstance(widget, QLineEdit)
    return opt.kind(widget.text()) if opt.kind in (int, float) else widget.text()


class OptionForm(QGroupBox):
    """A box with one row per option (``gui=True``) of some settings dataclasses.

    Each input widget is also an attribute named after its field (``form.hidden_dim``).

    Parameters
    ----------
    title
        The box's title.
    classes
        The settings dataclasses whose options are shown, in order.
    exclude
        Option names laid out by the caller instead (see :meth:`widget_for`).
    """

    def __init__(
        self, title: str, *classes: type, exclude: tuple[str, ...] = (), parent: QWidget | None = None
    ) -> None:
        super().__init__(title, parent)
        self.layout_form = form(self)
        self._fields: dict[str, tuple[Option, QWidget]] = {}
        for cls in classes:
            for opt in options_of(cls):
                if opt.spec.gui and opt.name not in exclude:
                    self.layout_form.addRow(opt.label, self.widget_for(opt))

    def widget_for(self, opt: Option) -> QWidget:
        """Make (once) the input widget of ``opt``, register it and set it as attribute ``opt.name``."""
        if opt.name not in self._fields:
            widget = option_widget(opt)
            self._fields[opt.name] = (opt, widget)
            setattr(self, opt.name, widget)
        return self._fields[opt.name][1]

    def values(self) -> dict[str, OptionValue]:
        """``{field: value}`` of every option shown."""
        return {name: option_value(opt, widget) for name, (opt, widget) in self._fields.items()}


class ModelFields(OptionForm):
    """Model type, widths, regional source and patch selection."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model (first model)", ModelConfig, SelectionConfig, parent=parent)
        self.model_type.currentTextChanged.connect(self._enable)
        self._enable()

    def _enable(self) -> None:
        self.regional_source.setEnabled(self.model_type.currentText() == "regional")

    def options(self) -> ModelOptions:
        """The :class:`ModelOptions` shown.

        Raises
        ------
        TrainingError
            An invalid combination (e.g. min patches > max patches).
        """
        from napari_regional_mil.training.workflow import (
            ModelOptions,  # lazy: startup (zarr, h5py; see TRAIN_JOB_MODULES)
        )

        try:
            return ModelOptions.from_values(self.values())
        except ValueError as exc:
            raise TrainingError(f"invalid option: {exc}") from None


class ContextFields(QGroupBox):
    """Several scales: which cached context embeddings join the global embedding.

    The list shows the context embeddings found in the cohort's caches (see
    :func:`~napari_regional_mil.training.workflow.available_contexts`). Those every slide
    has are checked by default, as the CLI's ``train`` uses them all; one that only some
    slides have is listed unchecked with its count. What the user checked or unchecked
    stays so when the list is refreshed.

    Signals
    -------
    refresh_requested
        The Refresh button was clicked.
    """

    refresh_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Several scales (context embeddings)", parent)
        self._unchecked: set[str] = set()  # the user's choices, kept across refreshes
        self._checked: set[str] = set()
        self._filling = False
        self.list = QListWidget()
        self.list.setMaximumHeight(90)
        self.list.setToolTip(
            "Context embeddings cached by the Embed widget (or `embed --context-encoder`): each is attention-pooled "
            "over the regions and concatenated to the global embedding of the regional model.")
        self.list.itemChanged.connect(self._item_changed)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Look for context embeddings in the cohort's caches again.")
        self.refresh_button.clicked.connect(self.refresh_requested)
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        row.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self.set_available({}, 0)

    def set_available(self, counts: dict[str, int], n_slides: int, *, note: str = "") -> None:
        """Show the context embeddings found: ``counts[name]`` of ``n_slides`` cached slides have it."""
        self._filling = True
        try:
            self.list.clear()
            for key, count in sorted(counts.items()):
                everywhere = count >= n_slides > 0
                item = QListWidgetItem(key if everywhere else f"{key} ({count} of {n_slides} slides)")
                item.setData(Qt.ItemDataRole.UserRole, key)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                checked = key in self._checked or (everywhere and key not in self._unchecked)
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
                if not everywhere:
                    item.setToolTip("Not every slide has it: embed the others with the same context encoder and scale.")
                self.list.addItem(item)
        finally:
            self._filling = False
        if note:
            self.summary.setText(note)
        elif not counts:
            self.summary.setText("None in the caches (add a context encoder in the Embed widget).")
        else:
            self.summary.setText(f"{len(counts)} found in the caches of {n_slides} slides.")

    def available(self) -> list[str]:
        """Every listed name."""
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def selected(self) -> tuple[str, ...]:
        """The checked names (for :attr:`ModelOptions.contexts`)."""
        return tuple(
            self.list.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.list.count())
            if self.list.item(i).checkState() == Qt.CheckState.Checked
        )

    def set_checked(self, key: str, checked: bool) -> None:
        """Check or uncheck the listed name ``key``."""
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == key:
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def _item_changed(self, item: QListWidgetItem) -> None:
        if self._filling:
            return
        key = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            self._unchecked.discard(key)
            self._checked.add(key)
        else:
            self._checked.discard(key)
            self._unchecked.add(key)


class OptimFields(OptionForm):
    """Epochs, learning rate, seed, patience and the validation scheme."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Training", TrainConfig, exclude=("val_fraction",), parent=parent)
        val_fraction = next(o for o in options_of(TrainConfig) if o.name == "val_fraction")
        self.validation = QComboBox()
        self.validation.addItems(VALIDATION_MODES)
        self.validation.setToolTip(
            "validation fraction: hold out patients for early stopping (rows with split=val are used instead "
            "when present); k-fold: cross-validate first (AUC per fold), then train the final model.")
        self.folds = QSpinBox()
        self.folds.setRange(2, 20)
        self.folds.setValue(5)
        self.folds.setToolTip("Number of folds (stratified, patient-grouped).")
        self.scheme = QStackedWidget()
        self.scheme.addWidget(self.widget_for(val_fraction))
        self.scheme.addWidget(self.folds)
        self.validation.currentIndexChanged.connect(self.scheme.setCurrentIndex)
        self.layout_form.addRow("Validation", self.validation)
        self.layout_form.addRow("", self.scheme)

    @property
    def n_folds(self) -> int:
        """Folds of cross-validation, or 0 in validation-fraction mode."""
        return int(self.folds.value()) if self.validation.currentIndex() == 1 else 0

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` shown (other settings at their defaults, as in the CLI)."""
        from napari_regional_mil.training.workflow import train_config_from  # lazy: startup (see options)

        return train_config_from(self.values())


def stack(*boxes: QWidget) -> QWidget:
    """The boxes one above the other in a plain widget."""
    widget = QWidget()
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    for box in boxes:
        layout.addWidget(box)
    return widget
