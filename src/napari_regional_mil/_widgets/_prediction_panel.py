"""The Predict widget's result box: class probabilities and the decision at the user's threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from napari_regional_mil.training.evaluation import decide

if TYPE_CHECKING:
    from qtpy.QtWidgets import QWidget

    from napari_regional_mil.training.prediction import SlidePrediction

__all__ = ["PredictionPanel"]


class PredictionPanel(QGroupBox):
    """A table of class probabilities, the threshold and the live decision.

    The threshold applies to the positive class of binary models (the method's expert
    threshold, [0277]-[0278]); multi-class models decide by the largest probability and
    the spin box is disabled. The threshold is the user's: the panel shows what it is
    given (:meth:`set_threshold`, the viewer's shared threshold) and reports the user's
    edits (``threshold_edited``); a prediction never changes it. Next to it, a note says
    whether it is the current model's stored threshold, and "Model's" goes back to that.

    Signals
    -------
    threshold_edited(float)
        The user changed the threshold (spin box or "Model's").
    """

    threshold_edited = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Result", parent)
        self.prediction: SlidePrediction | None = None
        self.value = 0.5  # the threshold decided with (exact; the spin box shows 4 decimals)
        self.model_threshold: float | None = None
        form = QFormLayout(self)
        self.prob_table = QTableWidget(0, 2)
        self.prob_table.setHorizontalHeaderLabels(["class", "probability"])
        self.prob_table.verticalHeader().setVisible(False)
        self.prob_table.horizontalHeader().setStretchLastSection(True)
        form.addRow(self.prob_table)
        self.threshold = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01, decimals=4, value=0.5)
        self.threshold.setToolTip(
            "Decision threshold on the positive class's probability (binary models). Yours: set from a "
            "model's stored threshold when the model is loaded, never changed by predicting."
        )
        self.model_button = QPushButton("Model's")
        self.model_button.setToolTip("Go back to the current model's stored threshold.")
        self.model_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.threshold, 1)
        row.addWidget(self.model_button)
        form.addRow("Threshold", row)
        self.threshold_note = QLabel("")
        self.threshold_note.setWordWrap(True)
        form.addRow(self.threshold_note)
        self.decision_label = QLabel("-")
        self.decision_label.setStyleSheet("font-weight: bold")
        form.addRow("Decision", self.decision_label)
        self.contributions = QTableWidget(0, 3)
        self.contributions.setHorizontalHeaderLabels(["source", "value", "change of p"])
        self.contributions.verticalHeader().setVisible(False)
        self.contributions.horizontalHeader().setStretchLastSection(True)
        self.contributions.setToolTip(
            "How much each source moves the probability: p minus p with that source at its reference "
            "(the slide: an average training slide; a clinical variable: its training mean or most "
            "frequent level). Positive: it pushes towards the class."
        )
        self.contributions_label = QLabel("Contributions")
        form.addRow(self.contributions_label)
        form.addRow(self.contributions)
        self._show_contributions(None)
        self.threshold.valueChanged.connect(self._edited)
        self.model_button.clicked.connect(self._use_model_threshold)

    # -- the threshold ------------------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Show ``value`` as the threshold (not an edit: ``threshold_edited`` is not emitted)."""
        self.value = float(value)
        self.threshold.blockSignals(True)
        self.threshold.setValue(self.value)
        self.threshold.blockSignals(False)
        self._update_note()
        self.update_decision()

    def set_model_threshold(self, value: float | None) -> None:
        """The current model's stored threshold (``None``: no binary model), for the note and "Model's"."""
        self.model_threshold = None if value is None else float(value)
        self._update_note()

    def _edited(self, value: float) -> None:
        self.value = float(value)
        self._update_note()
        self.update_decision()
        self.threshold_edited.emit(self.value)

    def _use_model_threshold(self) -> None:
        if self.model_threshold is not None:
            self.set_threshold(self.model_threshold)
            self.threshold_edited.emit(self.value)

    def _update_note(self) -> None:
        model = self.model_threshold
        if model is None:
            self.threshold_note.setText("")
            self.model_button.setEnabled(False)
        elif self.value == model:
            self.threshold_note.setText(f"<i>the model's stored threshold ({model:.4g})</i>")
            self.model_button.setEnabled(False)
        else:
            self.threshold_note.setText(f"<i>yours; the model's stored threshold is {model:.4g}</i>")
            self.model_button.setEnabled(True)

    # -- the prediction -----------------------------------------------------------------------
    def show_prediction(self, prediction: SlidePrediction) -> None:
        """Show a :class:`~napari_regional_mil.training.prediction.SlidePrediction` (the threshold stays)."""
        self.prediction = prediction
        names = prediction.class_names
        self.prob_table.setRowCount(len(names))
        for row, (name, p) in enumerate(zip(names, prediction.probabilities)):
            self.prob_table.setItem(row, 0, QTableWidgetItem(str(name)))
            self.prob_table.setItem(row, 1, QTableWidgetItem(f"{float(p):.3f}"))
        header = self.prob_table.horizontalHeader().height()
        rows = sum(self.prob_table.rowHeight(r) for r in range(len(names)))
        self.prob_table.setFixedHeight(header + rows + 4)
        self.threshold.setEnabled(len(names) == 2)
        self._show_contributions(prediction)
        self.update_decision()

    def _show_contributions(self, prediction: SlidePrediction) -> None:
        """The slide's and each clinical variable's contribution (models with clinical variables)."""
        contributions = getattr(prediction, "contributions", None)
        self.contributions.setVisible(contributions is not None)
        self.contributions_label.setVisible(contributions is not None)
        if contributions is None:
            self.contributions.setRowCount(0)
            return
        values = contributions.values
        rows = [("slide", "", contributions.slide)] + [
            (name, values.get(name, ""), delta) for name, delta in contributions.variables.items()
        ]
        self.contributions.setRowCount(len(rows))
        for row, (name, value, delta) in enumerate(rows):
            self.contributions.setItem(row, 0, QTableWidgetItem(name))
            self.contributions.setItem(row, 1, QTableWidgetItem(value or ""))
            self.contributions.setItem(row, 2, QTableWidgetItem("" if delta is None else f"{delta:+.3f}"))
        klass = prediction.class_names[contributions.class_index]
        self.contributions_label.setText(f"Contributions to p({klass}) = {contributions.probability:.3f}")
        header = self.contributions.horizontalHeader().height()
        height = sum(self.contributions.rowHeight(r) for r in range(len(rows)))
        self.contributions.setFixedHeight(header + height + 4)

    def update_decision(self) -> None:
        """Decide the shown prediction at the current threshold."""
        pred = self.prediction
        if pred is None:
            return
        decision = pred.class_names[decide(pred.probabilities, self.value, pred.positive_class)]
        if len(pred.class_names) == 2:
            p = float(pred.probabilities[pred.positive_class])
            self.decision_label.setText(f"{decision} (p({pred.class_names[pred.positive_class]}) = {p:.3f})")
        else:
            self.decision_label.setText(f"{decision} (largest probability)")
