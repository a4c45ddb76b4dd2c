"""Output folders of ``evaluate`` and ``crossval``: every file complete, or none changed.

:func:`staged_folder` lets a command write all its files into a hidden staging folder
beside the output folder, then moves them in: a new output folder appears with one
rename; into an existing one each file is replaced by one rename (``run.json`` last, so
its presence marks a complete run). An error or Ctrl-C before the moves leaves the
output folder exactly as it was.

:func:`write_report` writes what an :class:`~.report.EvaluationReport` holds: the
metrics (JSON), the predictions and calibration tables (CSV) and the plots (PNG + SVG).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..atomic import replace, write_text_atomic
from ..errors import RegionalMilError
from .metrics import finite_or_none
from .plots import PLOTS, save_figure
from .report import EvaluationReport

__all__ = [
    "check_output_folder",
    "csv_text",
    "predictions_rows",
    "save_report",
    "staged_folder",
    "write_json",
    "write_report",
]

#: Written last into an existing output folder (its presence marks a complete run).
LAST = "run.json"


def check_output_folder(out: str | os.PathLike[str], error: type[RegionalMilError]) -> Path:
    """Refuse, before any work, an output folder that cannot be made (missing parent, a file).

    Raises
    ------
    RegionalMilError
        Of type ``error``, naming the folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"{out}: exists and is not a folder; --out names a folder for the results")
    if not out.parent.is_dir():
        raise error(f"{out}: folder {out.parent} does not exist")
    if not os.access(out if out.exists() else out.parent, os.W_OK):
        raise error(f"{out}: not writable")
    return out


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder; when the block succeeds, move its files into ``out``."""
    out = Path(out)
    stage = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    stage.mkdir()
    try:
        yield stage
        if not out.exists():
            replace(stage, out)
            return
        names = sorted((p.name for p in stage.iterdir()), key=lambda n: (n == LAST, n))
        for name in names:
            replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Strict JSON (``null`` for undefined numbers, never NaN), written atomically."""
    text = json.dumps(finite_or_none(data), indent=1, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def csv_text(header: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of ``rows`` (dicts) with the columns ``header`` (floats with 6 decimals, NaN empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.get(column, "")) for column in header])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"  # NaN -> empty
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def predictions_rows(report: EvaluationReport, *, folds: Sequence[int] | None = None) -> tuple[list[str], list[dict]]:
    """Header and rows of the per-slide predictions: slide, patient, fold, label, predicted, correct, probabilities."""
    header = ["slide"]
    if report.patients is not None:
        header.append("patient")
    if folds is not None:
        header.append("fold")
    header += ["label", "predicted", "correct"] + [f"prob_{c}" for c in report.class_names]
    rows = []
    for i, slide in enumerate(report.slides):
        row: dict[str, Any] = {
            "slide": slide,
            "label": report.class_names[int(report.labels[i])],
            "predicted": report.class_names[int(report.predicted[i])],
            "correct": bool(report.predicted[i] == report.labels[i]),
        }
        if report.patients is not None:
            row["patient"] = report.patients[i]
        if folds is not None:
            row["fold"] = int(folds[i])
        row.update({f"prob_{c}": float(p) for c, p in zip(report.class_names, report.probabilities[i])})
        rows.append(row)
    return header, rows


def write_report(
    folder: str | os.PathLike[str],
    report: EvaluationReport,
    *,
    predictions_name: str = "predictions.csv",
    folds: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write a report's files into ``folder`` (a staging folder); return their paths.

    Files: ``metrics.json`` (with ``extra`` merged in), ``predictions_name``,
    ``calibration.csv``, ``patients.csv`` (patient-level predictions, when scored), and
    ``roc``, ``pr``, ``calibration``, ``confusion`` as ``.png`` and ``.svg``.
    """
    folder = Path(folder)
    written = [write_json(folder / "metrics.json", {**report.to_json(), **dict(extra or {})})]
    header, rows = predictions_rows(report, folds=folds)
    written.append(write_text_atomic(folder / predictions_name, csv_text(header, rows)))
    columns = ["class", "bin", "lower", "upper", "n", "mean_predicted", "observed_fraction"]
    written.append(write_text_atomic(folder / "calibration.csv", csv_text(columns, report.calibration)))
    if report.patient_level is not None:
        header, rows = predictions_rows(report.patient_level)
        header[0] = "patient"
        rows = [{**r, "patient": r["slide"]} for r in rows]
        written.append(write_text_atomic(folder / "patients.csv", csv_text(header, rows)))
    for stem, build in PLOTS.items():
        written += save_figure(build(report), folder / stem)
    return written


def save_report(
    out: str | os.PathLike[str], report: EvaluationReport, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write a report's files (see :func:`write_report`) into the folder ``out``: all or none."""
    out = Path(out)
    with staged_folder(out) as stage:
        write_report(stage, report, extra=extra)
    return out
