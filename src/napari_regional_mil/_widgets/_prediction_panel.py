"""The Predict widget's result box: class probabilities and the decision at a threshold."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QTableWidget, QTableWidgetItem

__all__ = ["PredictionPanel"]


class PredictionPanel(QGroupBox):
    """A table of class probabilities, a threshold spin box and the live decision.

    The threshold applies to the positive class of binary models (the method's expert
    threshold, [0277]-[0278]); multi-class models decide by the largest probability and
    the spin box is disabled.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__("Result", parent)
        self.prediction: Any = None
        form = QFormLayout(self)
        self.prob_table = QTableWidget(0, 2)
        self.prob_table.setHorizontalHeaderLabels(["class", "probability"])
        self.prob_table.verticalHeader().setVisible(False)
        self.prob_table.horizontalHeader().setStretchLastSection(True)
        form.addRow(self.prob_table)
        self.threshold = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01, decimals=2, value=0.5)
        self.threshold.setToolTip("Decision threshold on the positive class's probability (binary models)")
        form.addRow("Threshold", self.threshold)
        self.decision_label = QLabel("-")
        self.decision_label.setStyleSheet("font-weight: bold")
        form.addRow("Decision", self.decision_label)
        self.threshold.valueChanged.connect(lambda _: self.update_decision())

    def set_default_threshold(self, value: float) -> None:
        """Set the threshold (e.g. a newly loaded model's) and update the decision."""
        self.threshold.setValue(float(value))
        self.update_decision()

    def show_prediction(self, prediction: Any) -> None:
        """Show a :class:`~napari_regional_mil.training.prediction.SlidePrediction`."""
        self.prediction = prediction
        names = prediction.class_names
        self.prob_table.setRowCount(len(names))
        for row, (name, p) in enumerate(zip(names, prediction.probabilities)):
            self.prob_table.setItem(row, 0, QTableWidgetItem(str(name)))
            self.prob_table.setItem(row, 1, QTableWidgetItem(f"{float(p):.3f}"))
        header = self.prob_table.horizontalHeader().height()
        rows = sum(self.prob_table.rowHeight(r) for r in range(len(names)))
        self.prob_table.setFixedHeight(header + rows + 4)
        binary = len(names) == 2
        self.threshold.setEnabled(binary)
        if binary:
            self.threshold.blockSignals(True)
            self.threshold.setValue(float(prediction.threshold))
            self.threshold.blockSignals(False)
        self.update_decision()

    def update_decision(self) -> None:
        """Re-decide at the current threshold."""
        pred = self.prediction
        if pred is None:
            return
        decision = pred.decide(self.threshold.value())
        if len(pred.class_names) == 2:
            p = float(pred.probabilities[pred.positive_class])
            self.decision_label.setText(f"{decision} (p({pred.class_names[pred.positive_class]}) = {p:.3f})")
        else:
            self.decision_label.setText(f"{decision} (largest probability)")
