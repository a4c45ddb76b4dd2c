"""The Qt model and delegates of the Cohort widget's table (a view of a core ``CohortTable``).

:class:`CohortTableModel` shows a :class:`~napari_regional_mil.training.cohort_table.CohortTable`
in a ``QTableView``: columns slide, label, split, embedded, prediction. Label and split are
edited in place through :class:`ChoiceDelegate` (a ``QComboBox`` of the class names / the
splits); every edit goes through the core table, so its checks apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QComboBox, QStyledItemDelegate, QWidget

from napari_regional_mil.training.cohort import SPLITS
from napari_regional_mil.training.cohort_table import CohortTable

if TYPE_CHECKING:
    from qtpy.QtCore import QAbstractItemModel, QObject
    from qtpy.QtWidgets import QStyleOptionViewItem

__all__ = ["EMBEDDED", "LABEL", "OUTCOME_COLOUR", "PREDICTION", "SLIDE", "SPLIT", "ChoiceDelegate", "CohortTableModel"]

SLIDE, LABEL, SPLIT, EMBEDDED, PREDICTION = range(5)
_HEADERS = ("Slide", "Label", "Split", "Embedded", "Prediction")
_TIPS = (
    "The slide (double-click to open it with its tissue and grids).",
    "Its class: double-click to choose one of the classes.",
    "train / val / test fixes the slide's role; empty: training chooses (validation fraction).",
    "Whether the cache folder holds its embeddings (yes, partial, several, no; checking: being looked up).",
    "The latest prediction of the Predict widget for this slide.",
)
_EMBEDDED_COLOUR = {"yes": "#3fb950", "partial": "#e0a800", "several": "#e0a800", "no": "#f85149"}
#: Row backgrounds after an evaluation: the decision was correct / incorrect.
OUTCOME_COLOUR = {"correct": QColor(63, 185, 80, 60), "incorrect": QColor(248, 81, 73, 70)}
_AUTO = "(auto)"


class CohortTableModel(QAbstractTableModel):
    """A table model over a core :class:`CohortTable` (which it edits in place).

    Parameters
    ----------
    table
        The cohort state.
    on_error
        Called with an exception when an edit is refused (e.g. a notification).
    """

    def __init__(self, table: CohortTable, on_error: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.table = table
        self._on_error = on_error

    # -- read --------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.table.rows)

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(_HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return _HEADERS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return _TIPS[section]
        elif role == Qt.ItemDataRole.DisplayRole:
            return str(section + 1)
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.table.rows[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return (row.name, row.label, row.split, row.embedded, row.prediction)[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == SLIDE:
                where = str(row.path) if row.path is not None else f"{row.slide} (no file found)"
                return f"{where}\npatient: {row.patient or row.name}"
            return _TIPS[col]
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == EMBEDDED:
                return QBrush(QColor(_EMBEDDED_COLOUR.get(row.embedded, "#888888")))
            if col == SLIDE and row.path is None:
                return QBrush(QColor("#e0a800"))
        if role == Qt.ItemDataRole.BackgroundRole and col == LABEL and not row.label:
            return QBrush(QColor(224, 168, 0, 40))
        if role == Qt.ItemDataRole.BackgroundRole and row.outcome in OUTCOME_COLOUR:
            return QBrush(OUTCOME_COLOUR[row.outcome])
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() in (LABEL, SPLIT):
            return base | Qt.ItemFlag.ItemIsEditable
        return base

    # -- write -------------------------------------------------------------------------------
    def setData(self, index: QModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        value = "" if value in (None, _AUTO) else str(value)
        try:
            if index.column() == LABEL:
                self.table.set_label(index.row(), value)
            elif index.column() == SPLIT:
                self.table.set_split(index.row(), value)
            else:
                return False
        except Exception as exc:
            if self._on_error is not None:
                self._on_error(exc)
            return False
        self.dataChanged.emit(index, index)
        return True

    # -- bulk changes ------------------------------------------------------------------------
    def reset(self) -> None:
        """The table changed as a whole (import, add, remove)."""
        self.beginResetModel()
        self.endResetModel()

    def rows_changed(self, rows: list[int], column: int | None = None) -> None:
        """Rows whose cells changed (``column``: only that column).

        One ``dataChanged`` per run of consecutive rows (not one per row: a table of
        1,000 slides relabelled or re-checked at once repaints and re-counts once).
        """
        first_col = 0 if column is None else column
        last_col = len(_HEADERS) - 1 if column is None else column
        ordered = sorted(set(rows))
        start = 0
        for i in range(1, len(ordered) + 1):
            if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
                self.dataChanged.emit(self.index(ordered[start], first_col), self.index(ordered[i - 1], last_col))
                start = i


class ChoiceDelegate(QStyledItemDelegate):
    """A ``QComboBox`` editor offering the class names (label column) or the splits (split column)."""

    def __init__(self, table: CohortTable, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.table = table

    def choices(self, column: int) -> list[str]:
        """What the editor offers for ``column``."""
        if column == LABEL:
            return ["", *self.table.class_names]
        return [_AUTO, *SPLITS]

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem, index: QModelIndex) -> QWidget:
        editor = QComboBox(parent)
        editor.addItems(self.choices(index.column()))
        editor.setToolTip(_TIPS[index.column()])
        editor.activated.connect(lambda *_: self.commitData.emit(editor))
        return editor

    def setEditorData(self, editor: QWidget, index: QModelIndex) -> None:
        value = index.data(Qt.ItemDataRole.EditRole) or ""
        if index.column() == SPLIT and not value:
            value = _AUTO
        editor.setCurrentText(value)

    def setModelData(self, editor: QWidget, model: QAbstractItemModel, index: QModelIndex) -> None:
        model.setData(index, editor.currentText(), Qt.ItemDataRole.EditRole)
