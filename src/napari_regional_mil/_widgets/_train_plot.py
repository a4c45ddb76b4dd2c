"""Live training curves in the Train widget: loss and AUC per epoch (matplotlib in Qt).

matplotlib's Qt canvas is made at the first draw (a training run's start), not when the
widget is built: importing matplotlib takes a few hundred ms, which the Train widget's
warm-up worker pays in its thread (:data:`MATPLOTLIB_MODULES`) while the user fills the form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

__all__ = ["MATPLOTLIB_MODULES", "PlotFigure", "TrainingPlot", "build_figure"]

#: What the canvas imports (the warm-up worker imports them first).
MATPLOTLIB_MODULES = ("matplotlib.backends.backend_qtagg", "matplotlib.backends.backend_agg", "matplotlib.figure",
                      "matplotlib.ticker")

_BG = "#262930"  # napari's dark panel colour
_FG = "#d6d6d6"
_COLOURS = {"train": "#4fa3ff", "val": "#ffb000"}
_KEY = "blue: training · orange: validation"

#: The plotted series: metric key, label, axis (0: loss, 1: AUC).
SERIES = (("train_loss", "train loss", 0), ("val_loss", "val loss", 0), ("train_auc", "train AUC", 1),
          ("val_auc", "val AUC", 1))

#: Smallest time between two redraws (ms): a fast job cannot keep the GUI thread drawing.
REDRAW_MS = 1000


@dataclass
class PlotFigure:
    """The training plot's matplotlib figure, its two axes and its four lines (no Qt)."""

    figure: Any
    loss_ax: Any
    auc_ax: Any
    lines: dict[str, Any]


def build_figure() -> PlotFigure:
    """Make the figure and draw it once with Agg (fonts loaded, text laid out): safe in a worker thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: startup (see MATPLOTLIB_MODULES)
    from matplotlib.figure import Figure  # lazy: startup (see MATPLOTLIB_MODULES)
    from matplotlib.ticker import MaxNLocator  # lazy: startup (see MATPLOTLIB_MODULES)

    lines: dict[str, Any] = {}
    figure = Figure(figsize=(3.6, 2.6), dpi=90, facecolor=_BG)
    loss_ax, auc_ax = figure.subplots(2, 1, sharex=True)
    figure.subplots_adjust(left=0.17, right=0.97, top=0.9, bottom=0.15, hspace=0.15)
    for ax, label in ((loss_ax, "loss"), (auc_ax, "AUC")):
        ax.set_facecolor(_BG)
        ax.tick_params(colors=_FG, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#5a5f6a")
        ax.set_ylabel(label, color=_FG, fontsize=8)
        ax.grid(True, color="#3a3f4a", linewidth=0.5)
        ax.yaxis.set_major_locator(MaxNLocator(3))  # few labels: text is most of a draw's cost
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    auc_ax.set_xlabel("epoch", color=_FG, fontsize=8)
    auc_ax.set_ylim(-0.02, 1.02)
    for key, label, axis in SERIES:
        ax = (loss_ax, auc_ax)[axis]
        (lines[key],) = ax.plot([], [], linewidth=1.4, label=label, color=_COLOURS[key.split("_")[0]])
    # no legend and no markers: they double the cost of a draw; the title names the colours
    loss_ax.set_title(_KEY, color=_FG, fontsize=7)
    FigureCanvasAgg(figure).draw()
    return PlotFigure(figure, loss_ax, auc_ax, lines)


class TrainingPlot(QWidget):
    """Two small axes: train/validation loss, and train/validation AUC, against the epoch.

    Feed it the ``metrics`` of the training job's per-epoch events with :meth:`add`. The
    lines are updated in place and redrawn at most every :data:`REDRAW_MS` ms (drawing a
    figure costs tens of ms of the GUI thread; epochs of small cohorts take less), without
    markers or legends (they double the cost of a draw). The matplotlib figure is made and
    drawn once by the Train widget's warm-up worker (:func:`build_figure`, no Qt), then
    shown by :meth:`set_figure`; without it, the first draw makes it.
    """

    SERIES = SERIES

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: dict[str, dict[float, float]] = {key: {} for key, _, _ in self.SERIES}
        self.lines: dict[str, Any] = {}
        self.figure: Any = None
        self.loss_ax: Any = None
        self.auc_ax: Any = None
        self.title = ""
        self.n_draws = 0
        self.canvas: Any = None  # matplotlib's FigureCanvasQTAgg around the figure
        self.setMinimumHeight(220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)

    def set_figure(self, figure: PlotFigure) -> None:
        """Show ``figure`` (from :func:`build_figure`, e.g. made by the warm-up worker) in a Qt canvas.

        Only the first figure is used; the canvas wraps it on the GUI thread (a few ms).
        """
        if self.canvas is not None:
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg  # lazy: startup (see MATPLOTLIB_MODULES)

        self.figure, self.loss_ax, self.auc_ax, self.lines = figure.figure, figure.loss_ax, figure.auc_ax, figure.lines
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.layout().addWidget(self.canvas)

    def clear(self, title: str = "") -> None:
        """Forget every point (a new run or a new fold)."""
        for values in self.data.values():
            values.clear()
        self.title = title
        self._redraw()

    def add(self, metrics: dict[str, Any]) -> None:
        """Add one epoch's metrics (``epoch`` plus any of the plotted keys; NaN is skipped)."""
        if "epoch" not in metrics:
            return
        epoch = float(metrics["epoch"])
        if "fold" in metrics and f"fold {int(metrics['fold'])}" != self.title:
            self.clear(f"fold {int(metrics['fold'])}")
        for key, _, _ in self.SERIES:
            value = metrics.get(key)
            if value is not None and not math.isnan(float(value)):
                self.data[key][epoch] = float(value)
        if not self._timer.isActive():
            self._timer.start()

    def series(self, key: str) -> list[tuple[float, float]]:
        """``(epoch, value)`` points of one series, by epoch (events may arrive out of order)."""
        return sorted(self.data[key].items())

    def flush(self) -> None:
        """Draw now what was added (e.g. at the end of a run)."""
        self._timer.stop()
        self._redraw()

    def _redraw(self) -> None:
        if self.canvas is None:  # no warm-up figure (yet): made here, on the GUI thread
            self.set_figure(build_figure())
        for key, line in self.lines.items():
            points = self.series(key)
            line.set_data([p[0] for p in points], [p[1] for p in points])
        self.loss_ax.relim()
        self.loss_ax.autoscale_view()
        epochs = [p[0] for key in self.data for p in self.series(key)]
        if epochs:
            self.auc_ax.set_xlim(0.5, max(epochs) + 0.5)
        self.loss_ax.set_title(f"{self.title} — {_KEY}" if self.title else _KEY, color=_FG, fontsize=7)
        self.n_draws += 1
        self.canvas.draw_idle()
