"""Where a slide's clinical values come from: its cohort row, or a clinical table at prediction.

Training, cross-validation and evaluation read the values from the cohort table's other
columns (:func:`clinical_record_of`, used by the loaders in :mod:`.datasets`). ``predict``
reads them from a table with a slide column and the model's variables
(:func:`read_clinical_table`: CSV, TSV or XLSX, as the cohort reader). Problems are one
:class:`~napari_regional_mil.errors.ClinicalError` line naming the table and the row (or
its header) and the column, raised before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..clinical import (
    ClinicalEncoding,
    ClinicalRecord,
    ClinicalSpec,
    fit_clinical_encoding,
)
from ..errors import ClinicalError, CohortError
from .cohort import DEFAULT_COLUMNS, Cohort, CohortRow, slide_key
from .tables import read_table

__all__ = [
    "check_clinical_values",
    "check_cohort_clinical",
    "clinical_record_of",
    "read_clinical_table",
    "records_for",
    "require_clinical",
]


def clinical_record_of(cohort: Cohort, row: CohortRow) -> ClinicalRecord:
    """The row's other columns as a slide's clinical values (naming the row in messages)."""
    return ClinicalRecord(dict(row.extra), cohort.where(row), cohort.path.name)


def read_clinical_table(
    path: str | os.PathLike[str], *, slide_column: str | None = None
) -> dict[str, ClinicalRecord]:
    """Read a clinical table: a slide column and the clinical variables' columns.

    Parameters
    ----------
    path
        CSV, TSV or XLSX with a header row.
    slide_column
        The column naming the slide (default: ``slide``, else ``slide_id``); values are
        slide names or paths (matched by file stem).

    Returns
    -------
    dict
        Slide name -> its values (every other column).

    Raises
    ------
    ClinicalError
        No slide column, a slide listed twice, an unreadable table (naming the line).
    """
    try:
        table = read_table(path)
    except CohortError as exc:
        raise ClinicalError(str(exc)) from None
    lowered = [h.lower() for h in table.header]
    names = (slide_column,) if slide_column else DEFAULT_COLUMNS["slide"]
    index = next((lowered.index(n.lower()) for n in names if n.lower() in lowered), None)
    if index is None:
        wanted = " or ".join(repr(n) for n in names)
        raise ClinicalError(
            f"{table.path.name} header: no slide column {wanted} "
            f"(columns: {', '.join(table.header) or 'none'})"
        )
    out: dict[str, ClinicalRecord] = {}
    first: dict[str, int] = {}
    for number, values in table.rows:
        slide = values[index].strip()
        if not slide:
            raise ClinicalError(f"{table.where(number)}: no slide")
        name = slide_key(slide)
        if name in first:
            raise ClinicalError(
                f"{table.where(number)}: slide {name!r} is already listed on {table.unit} {first[name]}"
            )
        first[name] = number
        extra = {h: v for j, (h, v) in enumerate(zip(table.header, values)) if j != index and h}
        out[name] = ClinicalRecord(extra, table.where(number), table.path.name)
    return out


def require_clinical(encoding: ClinicalEncoding | None, where: str, records: object) -> None:
    """Refuse a model with clinical variables used without any clinical values.

    Raises
    ------
    ClinicalError
        ``encoding`` is set and ``records`` is ``None`` (naming the model and variables).
    """
    if encoding is not None and records is None:
        raise ClinicalError(
            f"{where}: the model takes clinical variables ({', '.join(encoding.names)}); "
            "give their values (predict --clinical-table CSV)"
        )


def records_for(
    encoding: ClinicalEncoding, table: Mapping[str, ClinicalRecord], slides: Sequence[str], *, source: str
) -> dict[str, ClinicalRecord]:
    """Each slide's values from a clinical table, every one checked against the encoding.

    Raises
    ------
    ClinicalError
        A slide the table does not list, a column it lacks, a value the model cannot take
        (naming the row and the column).
    """
    out = {}
    for slide in slides:
        name = slide_key(slide)
        record = table.get(name)
        if record is None:
            raise ClinicalError(
                f"{source}: no row for slide {name!r} "
                f"(the model takes clinical variables {', '.join(encoding.names)})"
            )
        encoding.encode(record)
        out[name] = record
    return out


def check_cohort_clinical(cohort: Cohort, spec: ClinicalSpec) -> None:
    """:func:`check_clinical_values` on every row of a cohort table (before loading any embeddings)."""
    check_clinical_values([clinical_record_of(cohort, row) for row in cohort.rows], spec)


def check_clinical_values(records: Sequence[ClinicalRecord], spec: ClinicalSpec) -> None:
    """Check every slide's values before training starts (an error names the row and column).

    Fits the spec's encoding on all ``records`` (which also catches text in a numeric
    column, a column the table lacks, a missing value under ``"refuse"``) and encodes each
    one; the fitted encoding itself is not kept (training fits its own on its training
    slides).
    """
    encoding = fit_clinical_encoding(records, spec.knowing(records))
    encoding.encode_all(records)
