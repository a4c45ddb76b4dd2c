"""Clinical variables in the dock: which columns to train with, and a form to predict with.

:class:`ClinicalFields` (Train widget) lists the cohort table's other columns with
checkboxes; the checked ones become the ``clinical`` spec of training.
:class:`ClinicalForm` (Predict widget) is generated from a model's stored encoding
(``ModelConfig.clinical``): a text field per numeric variable, a list of the trained levels
per categorical one; it is filled from the open slide's row of the cohort table when the
Cohort widget has one. A variable the model cannot take missing is marked required, and
predicting with it empty is refused (one notification naming it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets._fields import form
from napari_regional_mil.clinical import (
    ClinicalEncoding,
    ClinicalRecord,
    ClinicalSpec,
    is_missing,
    parse_clinical_columns,
)
from napari_regional_mil.options import options_of
from napari_regional_mil.settings import ClinicalOptions

__all__ = ["ClinicalFields", "ClinicalForm"]

#: The missing-value option, from the one table of options (the CLI's ``--clinical-missing``).
MISSING_OPTION = next(o for o in options_of(ClinicalOptions) if o.name == "clinical_missing")

#: What an empty categorical choice says.
MISSING_TEXT = "(missing)"


class ClinicalFields(QGroupBox):
    """Which of the cohort table's other columns the model takes as clinical variables ([0279])."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Clinical variables", parent)
        self._checked: set[str] = set()
        self._filling = False
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.setToolTip(
            "The cohort table's other columns. Checked ones are fused with the slide's global embedding "
            "(numeric: standardised with the training slides' statistics; text: one-hot with an 'unknown' level)."
        )
        self.list.itemChanged.connect(self._item_changed)
        self.missing = QComboBox()
        self.missing.addItems(list(MISSING_OPTION.choices))
        self.missing.setCurrentText(str(MISSING_OPTION.default))
        self.missing.setToolTip(MISSING_OPTION.spec.help)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.list)
        rows = form()
        rows.setContentsMargins(0, 0, 0, 0)
        rows.addRow(MISSING_OPTION.label, self.missing)
        layout.addLayout(rows)
        layout.addWidget(self.summary)
        self.set_columns(())

    def set_columns(self, columns: Sequence[str], *, note: str = "") -> None:
        """List ``columns`` (the table's other columns); the user's checks are kept."""
        self._filling = True
        try:
            self.list.clear()
            for name in columns:
                item = QListWidgetItem(name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(
                    Qt.CheckState.Checked if name in self._checked else Qt.CheckState.Unchecked
                )
                self.list.addItem(item)
        finally:
            self._filling = False
        self.summary.setText(note or ("" if columns else "The cohort table has no other columns."))

    def _item_changed(self, item: QListWidgetItem) -> None:
        if self._filling:
            return
        if item.checkState() == Qt.CheckState.Checked:
            self._checked.add(item.text())
        else:
            self._checked.discard(item.text())

    def selected(self) -> tuple[str, ...]:
        """The checked columns, in table order."""
        items = (self.list.item(i) for i in range(self.list.count()))
        return tuple(item.text() for item in items if item.checkState() == Qt.CheckState.Checked)

    def set_selected(self, names: Sequence[str]) -> None:
        """Check exactly ``names`` (those listed)."""
        self._checked = set(names)
        self._filling = True
        try:
            for i in range(self.list.count()):
                item = self.list.item(i)
                item.setCheckState(
                    Qt.CheckState.Checked if item.text() in self._checked else Qt.CheckState.Unchecked
                )
        finally:
            self._filling = False

    def spec(self) -> ClinicalSpec | None:
        """The clinical spec of the checked columns (``None``: none checked)."""
        names = self.selected()
        if not names:
            return None
        return parse_clinical_columns(",".join(names), missing=self.missing.currentText())


class ClinicalForm(QGroupBox):
    """The clinical values of the open slide, for a model that takes them.

    Hidden while the current model takes none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Clinical values", parent)
        self.encoding: ClinicalEncoding | None = None
        self.fields: dict[str, QLineEdit | QComboBox] = {}
        self._layout = form(self)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.setVisible(False)

    def set_encoding(self, encoding: ClinicalEncoding | None) -> None:
        """Build the form for a model's stored encoding (``None``: no clinical variables)."""
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.fields = {}
        self.encoding = encoding
        self.setVisible(encoding is not None)
        if encoding is None:
            return
        for variable, text in zip(encoding.variables, encoding.describe()):
            field: QLineEdit | QComboBox
            if variable.kind == "numeric":
                field = QLineEdit()
                field.setPlaceholderText(
                    f"training mean {variable.mean:.4g}"
                    + ("; empty = missing" if variable.missing_indicator else "")
                )
            else:
                field = QComboBox()
                if variable.missing_indicator:
                    field.addItem(MISSING_TEXT)
                field.addItems(list(variable.levels))
                if not variable.missing_indicator:
                    field.setCurrentIndex(-1)
            field.setToolTip(text)
            label = variable.name if variable.missing_indicator else f"{variable.name} *"
            self._layout.addRow(label, field)
            self.fields[variable.name] = field
        required = [v.name for v in encoding.variables if not v.missing_indicator]
        self.note.setText(
            "* required: the model was trained without missing values for it."
            if required
            else "The model was trained with missing indicators: an empty value is allowed."
        )
        self._layout.addRow(self.note)

    def fill(self, values: Mapping[str, str]) -> None:
        """Fill the fields from a cohort row's other columns (matched without regard to case)."""
        lowered = {k.lower(): v for k, v in values.items()}
        for name, field in self.fields.items():
            text = lowered.get(name.lower())
            if text is None:
                continue
            if isinstance(field, QLineEdit):
                field.setText("" if is_missing(text) else text.strip())
                continue
            if is_missing(text):
                field.setCurrentIndex(field.findText(MISSING_TEXT))
                continue
            match = [i for i in range(field.count()) if field.itemText(i).lower() == text.strip().lower()]
            if match:
                field.setCurrentIndex(match[0])
            else:  # a level training never saw: show it, predicting will say so
                field.addItem(text.strip())
                field.setCurrentIndex(field.count() - 1)

    def values(self) -> dict[str, str]:
        """Variable name -> the text entered (``""``: missing)."""
        out = {}
        for name, field in self.fields.items():
            if isinstance(field, QLineEdit):
                out[name] = field.text().strip()
            else:
                text = field.currentText() if field.currentIndex() >= 0 else ""
                out[name] = "" if text == MISSING_TEXT else text
        return out

    def record(self, slide: str) -> ClinicalRecord | None:
        """The entered values of ``slide`` (``None`` when the model takes none).

        Raises
        ------
        ClinicalError
            A required value is empty, or a value the model cannot take (naming the field).
        """
        if self.encoding is None:
            return None
        record = ClinicalRecord(self.values(), f"Predict form, slide {slide!r}", "Predict form")
        self.encoding.encode(record)  # refuse now, before any work, naming the field
        return record


def columns_of(table: Any) -> tuple[str, ...]:
    """The other columns of a cohort table-like object (``columns`` attribute), else none."""
    return tuple(getattr(table, "columns", ()) or ())
