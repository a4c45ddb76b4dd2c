"""The Train widget's form: model hyper-parameters and optimisation settings.

Defaults are the core's (:class:`~napari_regional_mil.training.workflow.ModelOptions`,
:class:`~napari_regional_mil.model.config.SelectionConfig`,
:class:`~napari_regional_mil.training.train.TrainConfig`), which are also the CLI's, so
the GUI and ``napari-regional-mil train`` train the same model from the same cohort.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
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
from napari_regional_mil.model.config import MODEL_TYPES, REGIONAL_SOURCES, SELECTION_STRATEGIES, SelectionConfig
from napari_regional_mil.training.train import TrainConfig
from napari_regional_mil.training.workflow import ModelOptions

__all__ = ["ModelFields", "ContextFields", "OptimFields", "VALIDATION_MODES"]

#: The CLI's default of ``--threads`` (``TrainConfig.threads`` defaults to None: torch's own setting).
CLI_THREADS = 1

#: How slides are held out: a validation fraction (early stopping) or k-fold cross-validation.
VALIDATION_MODES = ("validation fraction", "k-fold cross-validation")


def _spin(low: int, high: int, value: int, tip: str, *, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def _combo(items: tuple[str, ...], current: str, tip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(items)
    box.setCurrentText(current)
    box.setToolTip(tip)
    return box


class ModelFields(QGroupBox):
    """Model type, widths, regional source and patch selection."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model (first model)", parent)
        d, sel = ModelOptions(), SelectionConfig()
        self.model_type = _combo(MODEL_TYPES, d.model_type, (
            "regional: patches fused with their region's embedding plus the all-regions path (the method); "
            "abmil: gated-attention MIL over patches; mean: mean pooling."))
        self.hidden_dim = _spin(4, 2048, d.hidden_dim, "Width of the patch unit and of the projected vectors.", step=16)
        self.attention_dim = _spin(2, 1024, d.attention_dim, "Width of the gated attention's hidden layer.", step=8)
        self.regional_source = _combo(REGIONAL_SOURCES, d.regional_source, (
            "Where regional embeddings come from: cached mean or max pooling of the region's patches, "
            "or trainable attention inside the model."))
        self.strategy = _combo(SELECTION_STRATEGIES, sel.strategy, (
            "Patch selection per training step: random; max_coverage (one patch from as many regions as "
            "possible); equal_per_region (n patches from each of several regions, the preferred embodiment)."))
        self.min_patches = _spin(1, 100000, sel.min_patches, "Fewest patches selected per training step.")
        self.max_patches = _spin(1, 100000, sel.max_patches, "Most patches selected per training step.")
        self.patches_per_region = _spin(1, 1024, sel.patches_per_region, "n for equal_per_region.")
        layout = form(self)
        layout.addRow("Model type", self.model_type)
        layout.addRow("Hidden dim", self.hidden_dim)
        layout.addRow("Attention dim", self.attention_dim)
        layout.addRow("Regional source", self.regional_source)
        layout.addRow("Selection", self.strategy)
        layout.addRow("Min patches", self.min_patches)
        layout.addRow("Max patches", self.max_patches)
        layout.addRow("Patches / region", self.patches_per_region)
        self.model_type.currentTextChanged.connect(self._enable)
        self._enable()

    def _enable(self) -> None:
        regional = self.model_type.currentText() == "regional"
        self.regional_source.setEnabled(regional)

    def options(self) -> ModelOptions:
        """The :class:`ModelOptions` shown.

        Raises
        ------
        TrainingError
            An invalid combination (e.g. min patches > max patches).
        """
        try:
            selection = SelectionConfig(
                strategy=self.strategy.currentText(),  # type: ignore[arg-type]
                min_patches=int(self.min_patches.value()),
                max_patches=int(self.max_patches.value()),
                patches_per_region=int(self.patches_per_region.value()),
            )
        except ValueError as exc:
            raise TrainingError(f"invalid option: {exc}") from None
        return ModelOptions(
            model_type=self.model_type.currentText(),
            hidden_dim=int(self.hidden_dim.value()),
            attention_dim=int(self.attention_dim.value()),
            regional_source=self.regional_source.currentText(),
            selection=selection,
        )


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


class OptimFields(QGroupBox):
    """Epochs, learning rate, seed, patience and the validation scheme."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        d = TrainConfig()
        self.epochs = _spin(1, 10000, d.epochs, "Maximum number of passes over the training slides.")
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(1e-5, 1.0)
        self.learning_rate.setSingleStep(5e-4)
        self.learning_rate.setValue(d.learning_rate)
        self.learning_rate.setToolTip("AdamW learning rate (cosine schedule with warm-up).")
        self.patience = _spin(1, 10000, d.patience, "Stop when the validation AUC has not improved for this many epochs.")
        self.seed = _spin(0, 2**31 - 1, d.seed, "Seeds the weights, the patch selection, the split and the slide order.")
        self.threads = _spin(1, 256, CLI_THREADS, (
            "torch CPU threads for training (as the CLI's --threads, default 1: the model's operations are small, "
            "and one thread leaves the other cores to the viewer)."))
        self.validation = _combo(VALIDATION_MODES, VALIDATION_MODES[0], (
            "validation fraction: hold out patients for early stopping (rows with split=val are used instead "
            "when present); k-fold: cross-validate first (AUC per fold), then train the final model."))
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.9)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(d.val_fraction)
        self.val_fraction.setToolTip("Fraction of patients held out per class (0: no early stopping).")
        self.folds = _spin(2, 20, 5, "Number of folds (stratified, patient-grouped).")
        self.scheme = QStackedWidget()
        self.scheme.addWidget(self.val_fraction)
        self.scheme.addWidget(self.folds)
        self.validation.currentIndexChanged.connect(self.scheme.setCurrentIndex)
        layout = form(self)
        layout.addRow("Epochs", self.epochs)
        layout.addRow("Learning rate", self.learning_rate)
        layout.addRow("Patience", self.patience)
        layout.addRow("Seed", self.seed)
        layout.addRow("CPU threads", self.threads)
        layout.addRow("Validation", self.validation)
        layout.addRow("", self.scheme)

    @property
    def n_folds(self) -> int:
        """Folds of cross-validation, or 0 in validation-fraction mode."""
        return int(self.folds.value()) if self.validation.currentIndex() == 1 else 0

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` shown (other settings at their defaults, as in the CLI)."""
        try:
            return TrainConfig(
                epochs=int(self.epochs.value()),
                learning_rate=float(self.learning_rate.value()),
                patience=int(self.patience.value()),
                val_fraction=float(self.val_fraction.value()),
                seed=int(self.seed.value()),
                threads=int(self.threads.value()),
            )
        except ValueError as exc:
            raise TrainingError(f"invalid option: {exc}") from None


def stack(*boxes: QWidget) -> QWidget:
    """The boxes one above the other in a plain widget."""
    widget = QWidget()
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    for box in boxes:
        layout.addWidget(box)
    return widget
