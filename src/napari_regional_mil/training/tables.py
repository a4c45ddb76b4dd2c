"""Reading tables people already have: CSV, TSV and Excel (XLSX) into a header and text rows.

The cohort reader (:mod:`.cohort`) works on what :func:`read_table` returns: the header
(column names as written) and the data rows as strings, each with the line (CSV/TSV) or
row (XLSX) number a message can name. Every problem raises a
:class:`~napari_regional_mil.errors.CohortError` naming the file (and sheet, row or line).

- CSV: UTF-8 (a byte-order mark is fine); the delimiter is a comma, or a semicolon or
  tab when the header has no comma (spreadsheets in many locales export ``;``).
- TSV (``.tsv``, ``.tab``, ``.txt``): tab-delimited UTF-8.
- XLSX (``.xlsx``, ``.xlsm``): the first worksheet; row 1 is the header. Whole numbers
  are written without ``.0``, dates as ISO dates. Merged cells in the header are refused
  (a merged header has no name per column).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CohortError

__all__ = ["EXCEL_SUFFIXES", "TABLE_SUFFIXES", "TSV_SUFFIXES", "Table", "read_table"]

TSV_SUFFIXES = (".tsv", ".tab", ".txt")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
#: Every table the cohort reader accepts (lower case).
TABLE_SUFFIXES = (".csv", *TSV_SUFFIXES, *EXCEL_SUFFIXES)


@dataclass(frozen=True)
class Table:
    """A table as text.

    Parameters
    ----------
    path
        The file.
    header
        Column names as written (stripped).
    rows
        ``(number, values)`` per non-empty data row: the line (CSV/TSV, header = line 1)
        or spreadsheet row number, and one string per column (missing cells are ``""``).
    unit
        ``"line"`` (CSV/TSV) or ``"row"`` (XLSX), for messages.
    """

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    unit: str = "line"

    def where(self, number: int) -> str:
        """``"<file> line <n>"`` (or ``row <n>``) for messages."""
        return f"{self.path.name} {self.unit} {number}"


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a CSV, TSV or XLSX table (see the module docstring).

    Raises
    ------
    CohortError
        Unreadable file, not UTF-8, malformed CSV, a row with more fields than the
        header, empty file, merged header cells.
    """
    path = Path(path)
    if path.suffix.lower() in EXCEL_SUFFIXES:
        return _read_excel(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CohortError(f"{path}: cannot read the table ({exc.strerror or exc})") from None
    text = _decode(path, data)
    if path.suffix.lower() in TSV_SUFFIXES:
        delimiter = "\t"
    else:
        first = text.split("\n", 1)[0]
        delimiter = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = tuple(h.strip() for h in next(reader))
    except StopIteration:
        raise CohortError(f"{path.name}: empty file; expected a header row") from None
    except csv.Error as exc:
        raise CohortError(f"{path.name} line 1: {exc}") from None
    rows: list[tuple[int, tuple[str, ...]]] = []
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            line = reader.line_num
            if len(values) > len(header) and any(v.strip() for v in values[len(header) :]):
                raise CohortError(f"{path.name} line {line}: {len(values)} fields for {len(header)} columns")
            values = [v.strip() for v in values[: len(header)]]
            rows.append((line, tuple(values + [""] * (len(header) - len(values)))))
    except csv.Error as exc:
        raise CohortError(f"{path.name} line {reader.line_num}: {exc}") from None
    return Table(path, header, tuple(rows), "line")


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CohortError(
            f"{path.name} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the table as UTF-8"
        ) from None


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value).strip()


def _read_excel(path: Path) -> Table:
    from openpyxl import load_workbook  # lazy: startup (openpyxl takes 0.1 s; only .xlsx tables need it)
    from openpyxl.utils.exceptions import InvalidFileException  # lazy: startup (as above)

    try:
        # not read_only: merged-cell ranges are only known in the full mode
        book = load_workbook(path, data_only=True)
    except FileNotFoundError:
        raise CohortError(f"{path}: cannot read the table (no such file)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, InvalidFileException) as exc:  # damaged or foreign
        raise CohortError(f"{path.name}: not a readable XLSX workbook ({type(exc).__name__}: {exc})") from None
    try:
        sheet = book.worksheets[0]
        where = f"{path.name} sheet {sheet.title!r}"
        for merged in sheet.merged_cells.ranges:
            if merged.min_row <= 1:
                raise CohortError(
                    f"{where} row 1: merged header cells {merged.coord}; unmerge them so each column has one name"
                )
        grid = [[_cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    if not grid or not any(grid[0]):
        raise CohortError(f"{where}: empty sheet; expected a header in row 1")
    header = list(grid[0])
    while header and not header[-1]:
        header.pop()
    rows: list[tuple[int, tuple[str, ...]]] = []
    for number, values in enumerate(grid[1:], start=2):
        if not any(values):
            continue
        if any(values[len(header) :]):
            raise CohortError(f"{where} row {number}: a value right of the last named column")
        values = values[: len(header)]
        rows.append((number, tuple(values + [""] * (len(header) - len(values)))))
    return Table(path, tuple(header), tuple(rows), "row")
