"""Plots of an :class:`~.report.EvaluationReport`: ROC, precision-recall, calibration, confusion.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no GUI
backend, safe in threads and on machines without a display); the CLI saves them as PNG
and SVG, the dock widgets show the PNG. SVGs carry no date, so the same report gives
the same file.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import atomic_path
from .report import CURVE_GRID, EvaluationReport

__all__ = [
    "PLOTS",
    "calibration_figure",
    "confusion_figure",
    "figure_bytes",
    "pr_figure",
    "report_images",
    "roc_figure",
    "save_figure",
]


def _figure(size: tuple[float, float] = (4.6, 4.2)) -> Figure:
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _ci(value: float, interval: tuple[float, float]) -> str:
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _title(report: EvaluationReport, what: str) -> str:
    return f"{what} ({report.level}s, n = {len(report.labels)})"


def roc_figure(report: EvaluationReport) -> Figure:
    """ROC curve(s) with AUROC and 95 % CI in the legend; a bootstrap band for binary models."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", linewidth=1)
    by_name = {c.name: c for c in report.per_class}
    for name, curve in report.curves.items():
        metric = by_name[name]
        (line,) = ax.plot(curve.fpr, curve.tpr, linewidth=1.8,
                          label=f"{name}: AUROC {_ci(metric.auroc, metric.auroc_ci)}")
        if curve.tpr_band is not None and np.isfinite(curve.tpr_band).all():
            ax.fill_between(CURVE_GRID, curve.tpr_band[0], curve.tpr_band[1], color=line.get_color(), alpha=0.2,
                            linewidth=0, label="95% bootstrap band")
    if report.binary and not (math.isnan(report.sensitivity) or math.isnan(report.specificity)):
        ax.plot([1 - report.specificity], [report.sensitivity], marker="o", color="black", markersize=5,
                linestyle="none", label=f"threshold {report.threshold:.3g}")
    if not report.binary:
        ax.plot([], [], " ", label=f"macro AUROC {_ci(report.auroc, report.auroc_ci)}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false-positive rate)",
           ylabel="sensitivity (true-positive rate)", title=_title(report, "ROC"))
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def pr_figure(report: EvaluationReport) -> Figure:
    """Precision-recall curve(s) with AUPRC and 95 % CI; the prevalence as the chance line."""
    fig = _figure()
    ax = fig.add_subplot()
    by_name = {c.name: c for c in report.per_class}
    for name, curve in report.curves.items():
        metric = by_name[name]
        (line,) = ax.plot(curve.recall, curve.precision, linewidth=1.8, drawstyle="steps-post",
                          label=f"{name}: AUPRC {_ci(metric.auprc, metric.auprc_ci)}")
        if curve.precision_band is not None and np.isfinite(curve.precision_band).all():
            ax.fill_between(CURVE_GRID, curve.precision_band[0], curve.precision_band[1], color=line.get_color(),
                            alpha=0.2, linewidth=0, label="95% bootstrap band")
        prevalence = metric.n / max(1, len(report.labels))
        ax.axhline(prevalence, linestyle=":", color=line.get_color(), linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (positive predictive value)",
           title=_title(report, "Precision-recall"))
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize=7)
    return fig


def calibration_figure(report: EvaluationReport) -> Figure:
    """Reliability diagram: observed fraction against mean predicted probability per bin."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", linewidth=1, label="perfectly calibrated")
    classes = list(dict.fromkeys(row["class"] for row in report.calibration))
    for name in classes:
        rows = [r for r in report.calibration if r["class"] == name and r["n"] > 0]
        x = [r["mean_predicted"] for r in rows]
        y = [r["observed_fraction"] for r in rows]
        label = f"{name}" + (f" (Brier {report.brier:.3f})" if report.binary and not math.isnan(report.brier) else "")
        ax.plot(x, y, marker="o", markersize=4, linewidth=1.5, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="mean predicted probability", ylabel="observed fraction",
           title=_title(report, "Calibration"))
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=7)
    return fig


def confusion_figure(report: EvaluationReport) -> Figure:
    """The confusion matrix (rows: true class) with counts, at the model's decision."""
    names = report.class_names
    size = max(3.2, 1.0 + 0.8 * len(names))
    fig = _figure((size + 0.8, size))
    ax = fig.add_subplot()
    cm = report.confusion
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())))
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            dark = cm[i, j] > 0.6 * max(1, cm.max())
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(names)), labels=names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    decision = f"threshold {report.threshold:.3g}" if report.binary else "largest probability"
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion ({decision})")
    return fig


#: The plots every evaluation writes: file stem -> figure builder.
PLOTS = {"roc": roc_figure, "pr": pr_figure, "calibration": calibration_figure, "confusion": confusion_figure}


def report_images(report: EvaluationReport, kinds: tuple[str, ...] = ("roc", "confusion"), *,
                  dpi: int = 90) -> dict[str, bytes]:
    """PNG bytes of some of :data:`PLOTS` (for the dock widgets: rendered in a worker, shown as images)."""
    out = {}
    for kind in kinds:
        buffer = io.BytesIO()
        PLOTS[kind](report).savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        out[kind] = buffer.getvalue()
    return out


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """The figure encoded as ``png`` or ``svg`` (SVG without a date: reproducible)."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buffer, format=fmt, metadata=metadata, dpi=150 if fmt == "png" else None)
    return buffer.getvalue()


def save_figure(fig: Figure, stem: str | os.PathLike[str], *, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` atomically; return the paths."""
    written = []
    for fmt in formats:
        path = Path(f"{os.fspath(stem)}.{fmt}")
        data = figure_bytes(fig, fmt)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        written.append(path)
    return written
