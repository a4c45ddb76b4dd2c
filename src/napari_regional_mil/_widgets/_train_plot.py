"""Live training curves in the Train widget: loss and AUC per epoch (matplotlib's Agg, drawn in a worker).

The figure is drawn by matplotlib's Agg renderer in a worker thread, and the GUI thread only
shows the finished image: a draw takes 30 to 60 ms (text layout most of it), which on the GUI
thread stalled the viewer once a second while a model trained. Importing matplotlib takes a
few hundred ms, which the Train widget's warm-up worker pays in its thread
(:data:`MATPLOTLIB_MODULES`) while the user fills the form; it also builds the figure
(:func:`build_figure`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtGui import QColor, QImage, QPainter, QPaintEvent, QResizeEvent
from qtpy.QtWidgets import QWidget

from napari_regional_mil._widgets._worker import start_job

__all__ = ["MATPLOTLIB_MODULES", "PlotFigure", "PlotState", "TrainingPlot", "build_figure", "render"]

#: What drawing the figure imports (the warm-up worker imports them first).
MATPLOTLIB_MODULES = ("matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.ticker")

_BG = "#262930"  # napari's dark panel colour
_FG = "#d6d6d6"
_COLOURS = {"train": "#4fa3ff", "val": "#ffb000"}
_KEY = "blue: training · orange: validation"
_DPI = 90

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
    figure = Figure(figsize=(3.6, 2.6), dpi=_DPI, facecolor=_BG)
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


@dataclass(frozen=True)
class PlotState:
    """What one drawing of the plot shows: the points of each series, the title, the size in pixels."""

    series: dict[str, list[tuple[float, float]]]
    title: str
    width: int
    height: int
    pixel_ratio: float = 1.0


def render(plot: PlotFigure, state: PlotState) -> np.ndarray:
    """Draw ``state`` on ``plot`` with Agg; the ``(height, width, 4)`` RGBA image (no Qt: safe in a worker).

    Only one thread may draw a given figure at a time (the caller holds its lock).
    """
    for key, line in plot.lines.items():
        points = state.series.get(key, [])
        line.set_data([p[0] for p in points], [p[1] for p in points])
    plot.loss_ax.relim()
    plot.loss_ax.autoscale_view()
    epochs = [p[0] for points in state.series.values() for p in points]
    if epochs:
        plot.auc_ax.set_xlim(0.5, max(epochs) + 0.5)
    plot.loss_ax.set_title(f"{state.title} — {_KEY}" if state.title else _KEY, color=_FG, fontsize=7)
    figure = plot.figure
    figure.set_dpi(_DPI * state.pixel_ratio)
    figure.set_size_inches(max(state.width, 1) / _DPI, max(state.height, 1) / _DPI)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba()).copy()


class TrainingPlot(QWidget):
    """Two small axes: train/validation loss, and train/validation AUC, against the epoch.

    Feed it the ``metrics`` of the training job's per-epoch events with :meth:`add`. The
    plot is drawn again at most every :data:`REDRAW_MS` ms, in a worker thread
    (:func:`render`, matplotlib's Agg), and the widget paints the finished image; while a
    drawing runs, the next one waits for it. Lines carry no markers and there is no legend
    (they double the cost of a draw). The matplotlib figure is made and drawn once by the
    Train widget's warm-up worker (:func:`build_figure`) and handed over by
    :meth:`set_figure`; without it, the first drawing makes it.
    """

    SERIES = SERIES

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: dict[str, dict[float, float]] = {key: {} for key, _, _ in self.SERIES}
        self.title = ""
        self.n_draws = 0  # images shown
        self.image: QImage | None = None  # the last drawing
        self._figure: PlotFigure | None = None
        self._figure_lock = threading.Lock()  # one thread draws the figure at a time
        self._drawing = False
        self._again = False  # something changed while a drawing ran
        self.setMinimumHeight(220)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)

    def set_figure(self, figure: PlotFigure) -> None:
        """Draw on ``figure`` (from :func:`build_figure`, e.g. made by the warm-up worker); only the first is used."""
        if self._figure is None:
            self._figure = figure

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
        """Draw what was added now, not at the next :data:`REDRAW_MS` (e.g. at the end of a run)."""
        self._timer.stop()
        self._redraw()

    @property
    def drawing(self) -> bool:
        """Whether a drawing is running or waiting to run."""
        return self._drawing or self._again or self._timer.isActive()

    def state(self) -> PlotState:
        """What the next drawing shows (the widget's size in device pixels)."""
        ratio = float(self.devicePixelRatioF())
        return PlotState({key: self.series(key) for key, _, _ in self.SERIES}, self.title,
                         max(self.width(), 100), max(self.height(), 100), ratio)

    def _redraw(self) -> None:
        if self._drawing:
            self._again = True
            return
        state = self.state()
        self._drawing = True
        handle = start_job(lambda: self._draw(state), kind=f"training-plot-{id(self)}", description="Training plot",
                           on_result=self._show, on_finish=self._drawn, owner=self, show_progress=False)
        if handle is None:  # not expected: this widget starts one drawing at a time
            self._drawing = False

    def _draw(self, state: PlotState) -> tuple[np.ndarray, float]:
        """The worker's part: the figure drawn with Agg."""
        with self._figure_lock:
            if self._figure is None:  # no warm-up figure (yet): made here
                self._figure = build_figure()
            return render(self._figure, state), state.pixel_ratio

    def _show(self, drawn: tuple[np.ndarray, float]) -> None:
        rgba, ratio = drawn
        height, width = rgba.shape[:2]
        image = QImage(rgba.data, width, height, 4 * width, QImage.Format.Format_RGBA8888).copy()
        image.setDevicePixelRatio(ratio)
        self.image = image
        self.n_draws += 1
        self.update()

    def _drawn(self, status: str) -> None:
        self._drawing = False
        if self._again:
            self._again = False
            self._redraw()

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Draw again at the new size (the last image is stretched meanwhile)."""
        super().resizeEvent(event)
        if self.image is not None and not self._timer.isActive():
            self._timer.start()

    def paintEvent(self, event: QPaintEvent) -> None:
        """Paint the last drawing, stretched to the widget."""
        painter = QPainter(self)
        try:
            if self.image is None:
                painter.fillRect(self.rect(), QColor(_BG))
            else:
                painter.drawImage(self.rect(), self.image)
        finally:
            painter.end()
