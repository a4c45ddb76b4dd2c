"""Live training curves in the Train widget: loss and AUC per epoch (matplotlib in Qt)."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

__all__ = ["TrainingPlot"]

_BG = "#262930"  # napari's dark panel colour
_FG = "#d6d6d6"


class TrainingPlot(FigureCanvasQTAgg):
    """Two small axes: train/validation loss, and train/validation AUC, against the epoch.

    Feed it the ``metrics`` of the training job's per-epoch events with :meth:`add`; it
    redraws lazily (``draw_idle``), so a fast job cannot flood the event loop.
    """

    SERIES = (("train_loss", "train loss", 0), ("val_loss", "val loss", 0), ("train_auc", "train AUC", 1),
              ("val_auc", "val AUC", 1))

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.6, 2.6), dpi=90, facecolor=_BG, layout="constrained")
        super().__init__(self.figure)
        self.loss_ax, self.auc_ax = self.figure.subplots(2, 1, sharex=True)
        self.data: dict[str, dict[float, float]] = {key: {} for key, _, _ in self.SERIES}
        self.title = ""
        self.setMinimumHeight(220)
        self._style()

    def _style(self) -> None:
        for ax, label in ((self.loss_ax, "loss"), (self.auc_ax, "AUC")):
            ax.set_facecolor(_BG)
            ax.tick_params(colors=_FG, labelsize=7)
            for spine in ax.spines.values():
                spine.set_color("#5a5f6a")
            ax.set_ylabel(label, color=_FG, fontsize=8)
            ax.grid(True, color="#3a3f4a", linewidth=0.5)
        self.auc_ax.set_xlabel("epoch", color=_FG, fontsize=8)
        self.auc_ax.set_ylim(-0.02, 1.02)

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
        if "fold" in metrics and f"fold {int(metrics['fold'])}" not in self.title:
            self.clear(f"fold {int(metrics['fold'])}")
        for key, _, _ in self.SERIES:
            value = metrics.get(key)
            if value is not None and not math.isnan(float(value)):
                self.data[key][epoch] = float(value)
        self._redraw()

    def series(self, key: str) -> list[tuple[float, float]]:
        """``(epoch, value)`` points of one series, by epoch (events may arrive out of order)."""
        return sorted(self.data[key].items())

    def _redraw(self) -> None:
        for ax in (self.loss_ax, self.auc_ax):
            ax.clear()
        self._style()
        colours = {"train": "#4fa3ff", "val": "#ffb000"}
        for key, label, axis in self.SERIES:
            points = self.series(key)
            if points:
                ax = (self.loss_ax, self.auc_ax)[axis]
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.2, label=label,
                        color=colours[key.split("_")[0]], linestyle="-" if axis == 0 else "--")
        for ax in (self.loss_ax, self.auc_ax):
            if ax.lines:
                ax.legend(fontsize=6, facecolor=_BG, labelcolor=_FG, edgecolor="#5a5f6a", loc="best")
        if self.title:
            self.loss_ax.set_title(self.title, color=_FG, fontsize=8)
        self.draw_idle()
