"""A cohort: the labels table ``slide,label[,patient][,split]`` plus any other columns.

The table is a CSV, TSV or XLSX file (see :mod:`.tables`). Its roles:

``slide``
    the slide's name (file stem) or path (default column ``slide``, else ``slide_id``);
``label``
    a class name (default column ``label``);
``patient``
    groups slides of one patient: splits never separate them, patient-level scores
    average them (default column ``patient``, else ``case_id``, else ``patient_id``;
    without one, each slide is its own patient);
``split``
    ``train``, ``val`` or ``test`` (optional; default column ``split``).

Other column names are chosen with :class:`CohortColumns` (the CLI's ``--slide-column``,
``--label-column``, ``--patient-column``); CLAM's ``case_id,slide_id,label`` is read as
is. Every other column (clinical variables, notes...) is kept as text: ``Cohort.columns``
lists them and :meth:`Cohort.column` gives one per slide. Every problem raises a
:class:`~napari_regional_mil.errors.CohortError` naming the file and line (or row).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CohortError
from ..slide.formats import SLIDE_SUFFIXES
from .tables import Table, read_table

__all__ = ["COLUMNS", "DEFAULT_COLUMNS", "SPLITS", "Cohort", "CohortColumns", "CohortRow", "read_cohort", "slide_key"]

#: The roles of a cohort's columns.
COLUMNS = ("slide", "label", "patient", "split")
SPLITS = ("train", "val", "test")


@functools.lru_cache(maxsize=1 << 16)  # called per row and per table redraw: a cohort of 1,000 slides
def slide_key(slide: str) -> str:
    """The slide's name as caches and predictions use it: the file stem of a path."""
    name = Path(slide.strip()).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    stem = Path(name).stem
    return stem if Path(name).suffix.lower() in _SLIDE_SUFFIXES else name


#: Slide suffixes (the one list) and the embedding and feature files a cohort may name instead.
_SLIDE_SUFFIXES = frozenset(SLIDE_SUFFIXES) | {".h5", ".npz", ".zarr", ".pt"}


#: Column names tried, in order, for each role a :class:`CohortColumns` leaves at ``None``.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "slide": ("slide", "slide_id"),
    "label": ("label",),
    "patient": ("patient", "case_id", "patient_id"),
    "split": ("split",),
}


@dataclass(frozen=True)
class CohortColumns:
    """Which columns of the table hold the slide, label, patient and split.

    ``None`` takes the default names (see the module docstring), matched without regard
    to case. A name given explicitly must exist (``split`` and ``patient`` too).
    """

    slide: str | None = None
    label: str | None = None
    patient: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class CohortRow:
    """One slide of a cohort.

    Parameters
    ----------
    line
        Line number in the CSV (the header is line 1), or row number in a spreadsheet.
    slide
        The slide as written in the table (name or path).
    label
        Its class name.
    patient
        Its patient (the slide's name when the column is absent or empty).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``None``.
    extra
        The row's other columns (name -> text as written; ``""`` for an empty cell).
    """

    line: int
    slide: str
    label: str
    patient: str
    split: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """The slide's name (file stem)."""
        return slide_key(self.slide)


@dataclass(frozen=True)
class Cohort:
    """A validated labels table.

    Parameters
    ----------
    path
        The table file.
    rows
        The slides, in file order.
    class_names
        Class names in the model's order (sorted, unless given explicitly).
    columns
        The table's other columns (not slide, label, patient or split), in file order.
    has_patients
        Whether the table has a patient column (patient-level scores need one).
    unit
        ``"line"`` (CSV/TSV) or ``"row"`` (spreadsheet), for messages.
    """

    path: Path
    rows: tuple[CohortRow, ...]
    class_names: tuple[str, ...]
    columns: tuple[str, ...] = ()
    has_patients: bool = False
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        """``(n,)`` int64 class index of every row."""
        index = {c: i for i, c in enumerate(self.class_names)}
        return np.array([index[r.label] for r in self.rows], dtype=np.int64)

    @property
    def patients(self) -> np.ndarray:
        """``(n,)`` patient of every row (object array)."""
        return np.array([r.patient for r in self.rows], dtype=object)

    def column(self, name: str) -> dict[str, str]:
        """One of the table's other columns: ``{slide name: text}`` in row order.

        Raises
        ------
        CohortError
            The table has no such column (the message lists those it has).
        """
        if name not in self.columns:
            match = [c for c in self.columns if c.lower() == name.lower()]
            if len(match) != 1:
                listed = ", ".join(self.columns) or "none"
                raise CohortError(f"{self.path.name}: no column {name!r} (other columns: {listed})")
            name = match[0]
        return {row.name: row.extra.get(name, "") for row in self.rows}

    def where(self, row: CohortRow) -> str:
        """``"<file> line <n>"`` (``row <n>`` for a spreadsheet) for messages."""
        return f"{self.path.name} {self.unit} {row.line}"

    def subset(self, indices: Sequence[int]) -> Cohort:
        """The cohort restricted to ``indices`` (class names and columns kept)."""
        return Cohort(
            self.path, tuple(self.rows[i] for i in indices), self.class_names, self.columns, self.has_patients,
            self.unit,
        )


def _role_columns(table: Table, columns: CohortColumns) -> dict[str, int | None]:
    """Column index of every role (``None``: absent optional role)."""
    where = table.where(1)
    lowered = [h.lower() for h in table.header]
    found: dict[str, int | None] = {}
    for role in COLUMNS:
        chosen = getattr(columns, role)
        names = (chosen,) if chosen is not None else DEFAULT_COLUMNS[role]
        index = next((lowered.index(n.strip().lower()) for n in names if n.strip().lower() in lowered), None)
        if index is None and (chosen is not None or role in ("slide", "label")):
            listed = ", ".join(h for h in table.header if h) or "none"
            option = f"; choose one with --{role}-column" if chosen is None else ""
            wanted = repr(chosen) if chosen is not None else " or ".join(repr(n) for n in names)
            raise CohortError(f"{where}: no {role} column {wanted} (columns: {listed}){option}")
        found[role] = index
    used = [i for i in found.values() if i is not None]
    if len(set(used)) != len(used):
        raise CohortError(f"{where}: one column is used for two roles ({', '.join(table.header[i] for i in used)})")
    return found


def read_cohort(
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    columns: CohortColumns = CohortColumns(),
    slide_exists: Callable[[CohortRow], bool] | None = None,
    unknown_slide_hint: str = "no embedding cache and no slide file found",
    min_classes: int = 2,
) -> Cohort:
    """Read and validate a labels table (CSV, TSV or XLSX).

    Parameters
    ----------
    path
        The table (header row first; see the module docstring for the columns).
    class_names
        The classes in the model's order; default: the labels present, sorted.
    columns
        Which columns hold the slide, label, patient and split.
    slide_exists
        Called per row; ``False`` makes the row an unknown slide.
    unknown_slide_hint
        What the unknown-slide message says was looked for.
    min_classes
        Fewest classes that must be present (2 for training; 1 to score a cohort of one
        class with metrics that allow it).

    Raises
    ------
    CohortError
        Naming the file and line: unreadable table (see :func:`~.tables.read_table`),
        missing role column, a column name used twice, missing or unknown label,
        duplicate slide, bad split, unknown slide, too few classes.
    """
    table = read_table(path)
    path = table.path
    role = _role_columns(table, columns)
    lowered = [h.lower() for h in table.header if h]
    if len(set(lowered)) != len(lowered):
        twice = next(h for h in table.header if h and lowered.count(h.lower()) > 1)
        raise CohortError(f"{table.where(1)}: column {twice!r} appears twice")
    roles = {i for i in role.values() if i is not None}
    extra_index = [i for i in range(len(table.header)) if i not in roles]
    for i in extra_index:
        if not table.header[i] and any(values[i] for _, values in table.rows):
            raise CohortError(f"{table.where(1)}: column {i + 1} has values but no name")
    extra_index = [i for i in extra_index if table.header[i]]
    known = None if class_names is None else tuple(str(c) for c in class_names)
    rows: list[CohortRow] = []
    first_line: dict[str, int] = {}

    def cell(values: tuple[str, ...], key: str) -> str:
        index = role[key]
        return values[index] if index is not None else ""

    for line, values in table.rows:
        where = table.where(line)
        slide, label = cell(values, "slide"), cell(values, "label")
        if not slide:
            raise CohortError(f"{where}: no slide")
        if not label:
            raise CohortError(f"{where}: slide {slide!r} has no label")
        if known is not None and label not in known:
            raise CohortError(f"{where}: unknown label {label!r} (classes: {', '.join(known)})")
        split = cell(values, "split") or None
        if split is not None and split.lower() not in SPLITS:
            raise CohortError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        extra = {table.header[i]: values[i] for i in extra_index}
        row = CohortRow(line, slide, label, cell(values, "patient") or slide_key(slide), split and split.lower(), extra)
        if row.name in first_line:
            raise CohortError(f"{where}: slide {row.name!r} is already listed on {table.unit} {first_line[row.name]}")
        first_line[row.name] = line
        if slide_exists is not None and not slide_exists(row):
            raise CohortError(f"{where}: unknown slide {slide!r} ({unknown_slide_hint})")
        rows.append(row)
    if not rows:
        raise CohortError(f"{path.name}: no slides listed")
    present = sorted({r.label for r in rows})
    if len(present) < min_classes:
        raise CohortError(f"{path.name}: only one class ({present[0]!r}) present; training needs at least two")
    names = known if known is not None else tuple(present)
    return Cohort(
        path=path,
        rows=tuple(rows),
        class_names=names,
        columns=tuple(table.header[i] for i in extra_index),
        has_patients=role["patient"] is not None,
        unit=table.unit,
    )
