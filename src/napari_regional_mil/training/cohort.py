"""A cohort: the labels CSV ``slide,label[,patient][,split]``.

``slide`` is the slide's name (file stem) or path; ``label`` a class name; ``patient``
groups slides of one patient (splits never separate them; default: the slide itself);
``split`` is ``train``, ``val`` or ``test`` (optional, fixes a slide's role in
:func:`~.train.train_model`'s command-line use). Every problem raises a
:class:`~napari_regional_mil.errors.CohortError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CohortError
from ..slide.formats import SLIDE_SUFFIXES

__all__ = ["COLUMNS", "SPLITS", "CohortRow", "Cohort", "read_cohort", "slide_key"]

COLUMNS = ("slide", "label", "patient", "split")
SPLITS = ("train", "val", "test")


def slide_key(slide: str) -> str:
    """The slide's name as caches and predictions use it: the file stem of a path."""
    name = Path(slide.strip()).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    stem = Path(name).stem
    return stem if Path(name).suffix.lower() in _SLIDE_SUFFIXES else name


#: Slide suffixes (the one list) and the embedding files a cohort may name instead.
_SLIDE_SUFFIXES = frozenset(SLIDE_SUFFIXES) | {".h5", ".npz", ".zarr"}


@dataclass(frozen=True)
class CohortRow:
    """One slide of a cohort.

    Parameters
    ----------
    line
        Line number in the CSV (the header is line 1).
    slide
        The slide as written in the CSV (name or path).
    label
        Its class name.
    patient
        Its patient (the slide's name when the column is absent or empty).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``None``.
    """

    line: int
    slide: str
    label: str
    patient: str
    split: str | None = None

    @property
    def name(self) -> str:
        """The slide's name (file stem)."""
        return slide_key(self.slide)


@dataclass(frozen=True)
class Cohort:
    """A validated labels CSV.

    Parameters
    ----------
    path
        The CSV file.
    rows
        The slides, in file order.
    class_names
        Class names in the model's order (sorted, unless given explicitly).
    """

    path: Path
    rows: tuple[CohortRow, ...]
    class_names: tuple[str, ...]

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

    def where(self, row: CohortRow) -> str:
        """``"<file> line <n>"`` for messages."""
        return f"{self.path.name} line {row.line}"

    def subset(self, indices: Sequence[int]) -> Cohort:
        """The cohort restricted to ``indices`` (class names kept)."""
        return Cohort(self.path, tuple(self.rows[i] for i in indices), self.class_names)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CohortError(
            f"{path.name} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the CSV as UTF-8"
        ) from None


def read_cohort(
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    slide_exists: Callable[[CohortRow], bool] | None = None,
    unknown_slide_hint: str = "no embedding cache and no slide file found",
) -> Cohort:
    """Read and validate a labels CSV.

    Parameters
    ----------
    path
        The CSV file (UTF-8, header ``slide,label[,patient][,split]``).
    class_names
        The classes in the model's order; default: the labels present, sorted.
    slide_exists
        Called per row; ``False`` makes the row an unknown slide.
    unknown_slide_hint
        What the unknown-slide message says was looked for.

    Raises
    ------
    CohortError
        Naming the file and line: not UTF-8, unknown or missing column, missing or
        unknown label, duplicate slide, bad split, unknown slide, fewer than two classes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CohortError(f"{path}: cannot read the labels CSV ({exc.strerror or exc})") from None
    reader = csv.reader(io.StringIO(_decode(path, data), newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CohortError(f"{path.name}: empty file; expected a header 'slide,label[,patient][,split]'") from None
    except csv.Error as exc:
        raise CohortError(f"{path.name} line 1: {exc}") from None
    for col in header:
        if col not in COLUMNS:
            raise CohortError(f"{path.name} line 1: unknown column {col!r} (allowed: {', '.join(COLUMNS)})")
    for col in ("slide", "label"):
        if col not in header:
            raise CohortError(f"{path.name} line 1: no {col!r} column (header must be 'slide,label[,patient][,split]')")
    if len(set(header)) != len(header):
        raise CohortError(f"{path.name} line 1: a column appears twice")
    known = None if class_names is None else tuple(str(c) for c in class_names)
    rows: list[CohortRow] = []
    first_line: dict[str, int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                raise CohortError(f"{path.name} line {line}: {len(values)} fields for {len(header)} columns")
            record = dict(zip(header, (v.strip() for v in values)))
            slide, label = record.get("slide", ""), record.get("label", "")
            if not slide:
                raise CohortError(f"{path.name} line {line}: no slide")
            if not label:
                raise CohortError(f"{path.name} line {line}: slide {slide!r} has no label")
            if known is not None and label not in known:
                raise CohortError(f"{path.name} line {line}: unknown label {label!r} (classes: {', '.join(known)})")
            split = record.get("split") or None
            if split is not None and split.lower() not in SPLITS:
                raise CohortError(f"{path.name} line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
            row = CohortRow(line, slide, label, record.get("patient") or slide_key(slide), split and split.lower())
            if row.name in first_line:
                raise CohortError(
                    f"{path.name} line {line}: slide {row.name!r} is already listed on line {first_line[row.name]}"
                )
            first_line[row.name] = line
            if slide_exists is not None and not slide_exists(row):
                raise CohortError(f"{path.name} line {line}: unknown slide {slide!r} ({unknown_slide_hint})")
            rows.append(row)
    except csv.Error as exc:
        raise CohortError(f"{path.name} line {reader.line_num}: {exc}") from None
    if not rows:
        raise CohortError(f"{path.name}: no slides listed")
    present = sorted({r.label for r in rows})
    if len(present) < 2:
        raise CohortError(f"{path.name}: only one class ({present[0]!r}) present; training needs at least two")
    names = known if known is not None else tuple(present)
    return Cohort(path=path, rows=tuple(rows), class_names=names)
