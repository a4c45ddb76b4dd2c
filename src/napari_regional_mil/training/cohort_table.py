"""The editable cohort behind the Cohort dock widget (no Qt): slides, labels, splits, status.

A :class:`CohortTable` is a list of :class:`TableRow` (a slide, its label, patient and
split, whether it is embedded, its latest prediction) plus the class names the user
defined. It reads and writes the cohort CSV ``slide,label[,patient][,split]`` through
:func:`~napari_regional_mil.training.cohort.read_cohort` (so the GUI and the CLI accept
exactly the same files) and turns itself into a validated
:class:`~napari_regional_mil.training.cohort.Cohort` for training, with the same class
order as the CLI (sorted labels). Every problem raises a
:class:`~napari_regional_mil.errors.CohortError` naming the slide or the CSV line.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_text_atomic
from ..embedding.store import list_caches
from ..errors import CohortError
from ..slide import formats
from .cohort import SPLITS, Cohort, CohortRow, read_cohort, slide_key

__all__ = [
    "CHECKING", "EMBEDDED", "SLIDE_SUFFIXES", "CohortTable", "RowStatus", "TableRow", "check_status",
    "resolve_slide_file",
]

#: File suffixes the "add folder" action picks up (lower case): the one list, :mod:`..slide.formats`.
SLIDE_SUFFIXES = formats.SLIDE_SUFFIXES

#: Values of the ``embedded`` column: a complete cache, an interrupted one, several
#: complete caches with different encoders/tilings (ambiguous), none.
EMBEDDED = ("yes", "partial", "several", "no")
#: The ``embedded`` column of a row whose file and cache are still being looked for
#: (:func:`check_status`, in the background: a table of 1,000 slides lists at once).
CHECKING = "checking"


def resolve_slide_file(slide: str, base: Path | None) -> Path | None:
    """The slide file a CSV entry names: a path (absolute or relative to ``base``) or a name.

    A bare name (``synth_000``) is looked up as ``<base>/<name><suffix>`` for every
    :data:`SLIDE_SUFFIXES`. Returns ``None`` when no file is found.
    """
    candidates = [Path(slide).expanduser()]
    if base is not None and not candidates[0].is_absolute():
        candidates.append(base / slide)
        candidates += [base / f"{slide}{suffix}" for suffix in SLIDE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file() or formats.is_dicom_folder(candidate):
            return candidate.resolve()
    return None


@dataclass
class TableRow:
    """One slide of the table.

    Parameters
    ----------
    slide
        The slide as written in the CSV, or the file path when added from disk.
    label
        Its class name (``""``: not labelled yet).
    patient
        Its patient (``""``: the slide is its own patient).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``""`` (chosen by training).
    path
        The slide file, when known (to open or embed it).
    embedded
        One of :data:`EMBEDDED`.
    prediction
        The latest prediction shown for it (e.g. ``"inflamed (0.91)"``), or ``""``.
    extra
        The table's other columns for this slide (clinical variables, notes...), kept
        as read and written back on export.
    outcome
        ``"correct"`` or ``"incorrect"`` after an evaluation decided it, else ``""``.
    """

    slide: str
    label: str = ""
    patient: str = ""
    split: str = ""
    path: Path | None = None
    embedded: str = "no"
    prediction: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    outcome: str = ""
    resolved: bool = True

    @property
    def name(self) -> str:
        """The slide's name (file stem), as caches and predictions use it."""
        return slide_key(self.slide)


class CohortTable:
    """An editable cohort: rows plus the class names offered for labels.

    Parameters
    ----------
    class_names
        The classes offered initially.
    """

    #: Columns the GUI shows, in order.
    COLUMNS = ("slide", "label", "split", "embedded", "prediction")

    def __init__(self, class_names: Iterable[str] = ()) -> None:
        self.rows: list[TableRow] = []
        self.class_names: list[str] = []
        self.csv_path: Path | None = None
        #: The imported table's other columns (kept and exported after the cohort's own).
        self.extra_columns: list[str] = []
        for name in class_names:
            self.add_class(name)

    def __len__(self) -> int:
        return len(self.rows)

    # -- slides ---------------------------------------------------------------------------
    def index_of(self, name: str) -> int | None:
        """Row index of the slide called ``name`` (file stem), or ``None``."""
        key = slide_key(name)
        for i, row in enumerate(self.rows):
            if row.name == key:
                return i
        return None

    def add_slides(self, paths: Iterable[str | os.PathLike]) -> list[int]:
        """Add slide files (already listed names are skipped); return the new row indices."""
        added = []
        listed = {row.name for row in self.rows}
        for path in paths:
            path = Path(path).expanduser()
            if slide_key(path.name) in listed:
                continue
            resolved = path.resolve() if path.exists() else None
            self.rows.append(TableRow(slide=str(resolved or path), path=resolved))
            listed.add(self.rows[-1].name)
            added.append(len(self.rows) - 1)
        return added

    def add_folder(self, folder: str | os.PathLike, *, recursive: bool = False) -> list[int]:
        """Add every slide file of ``folder`` (by suffix, sorted by name); return the new indices.

        Raises
        ------
        CohortError
            The folder does not exist.
        """
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise CohortError(f"{folder}: no such folder")
        slides = sorted(formats.find_slides(folder, recursive=recursive), key=lambda p: p.name)
        return self.add_slides(slides)

    def remove(self, indices: Iterable[int]) -> None:
        """Remove rows by index."""
        drop = set(indices)
        self.rows = [row for i, row in enumerate(self.rows) if i not in drop]

    # -- labels and classes ---------------------------------------------------------------
    def _check_class_name(self, name: str) -> str:
        name = str(name).strip()
        if not name:
            raise CohortError("a class name cannot be empty")
        if name in self.class_names:
            raise CohortError(f"class {name!r} already exists")
        return name

    def add_class(self, name: str) -> str:
        """Offer a new class name; return it (stripped).

        Raises
        ------
        CohortError
            Empty or already present.
        """
        name = self._check_class_name(name)
        self.class_names.append(name)
        return name

    def rename_class(self, old: str, new: str) -> str:
        """Rename a class everywhere (the class list and every row labelled with it)."""
        if old not in self.class_names:
            raise CohortError(f"no class {old!r}")
        new = str(new).strip()
        if new == old:
            return new
        new = self._check_class_name(new)
        self.class_names[self.class_names.index(old)] = new
        for row in self.rows:
            if row.label == old:
                row.label = new
        return new

    def remove_class(self, name: str) -> int:
        """Remove a class; its slides become unlabelled. Returns how many were."""
        if name not in self.class_names:
            raise CohortError(f"no class {name!r}")
        self.class_names.remove(name)
        count = 0
        for row in self.rows:
            if row.label == name:
                row.label, count = "", count + 1
        return count

    def set_label(self, index: int, label: str) -> None:
        """Label a row with one of :attr:`class_names` (``""`` clears it)."""
        label = str(label).strip()
        if label and label not in self.class_names:
            raise CohortError(f"unknown class {label!r} (classes: {', '.join(self.class_names) or 'none yet'})")
        self.rows[index].label = label

    def set_split(self, index: int, split: str) -> None:
        """Fix a row's role: ``"train"``, ``"val"``, ``"test"`` or ``""`` (automatic)."""
        split = str(split).strip().lower()
        if split and split not in SPLITS:
            raise CohortError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.rows[index].split = split

    def class_counts(self) -> dict[str, int]:
        """Slides per class (every class offered, unlabelled ones under ``""``)."""
        counts = dict.fromkeys(self.class_names, 0)
        for row in self.rows:
            counts[row.label] = counts.get(row.label, 0) + 1
        return counts

    # -- CSV ------------------------------------------------------------------------------
    def load_csv(self, path: str | os.PathLike, *, resolve: bool = True) -> None:
        """Replace the table by a cohort table (CSV, TSV or XLSX), validated by :func:`read_cohort`.

        Slide entries are resolved to files next to the CSV when possible (a bare name
        ``x`` matches ``x.tif``, ``x.svs``, ...). The classes offered are the CSV's labels
        plus the classes already offered. With ``resolve=False`` nothing is looked up on
        disk: rows are ``resolved=False`` and ``embedded`` is :data:`CHECKING` until
        :func:`check_status` (run in the background) is applied with :meth:`apply_status`.

        Raises
        ------
        CohortError
            Naming the file and line (see :func:`read_cohort`); the table is unchanged.
        """
        path = Path(path)
        cohort = read_cohort(path)
        base = path.parent
        self.rows = [
            TableRow(
                slide=row.slide,
                label=row.label,
                patient="" if row.patient == row.name else row.patient,
                split=row.split or "",
                path=resolve_slide_file(row.slide, base) if resolve else None,
                extra=dict(row.extra),
                embedded="no" if resolve else CHECKING,
                resolved=resolve,
            )
            for row in cohort.rows
        ]
        self.extra_columns = list(cohort.columns)
        self.class_names = list(dict.fromkeys([*cohort.class_names, *self.class_names]))
        self.csv_path = path

    def csv_text(self, *, relative_to: Path | None = None) -> str:
        """The table as CSV text.

        The columns are ``slide,label[,patient][,split]`` (optional columns only when used),
        then the imported table's other columns.

        Raises
        ------
        CohortError
            A slide has no label (naming it).
        """
        for row in self.rows:
            if not row.label:
                raise CohortError(f"slide {row.name!r} has no label; label every slide before exporting")
        header = ["slide", "label"]
        if any(row.patient for row in self.rows):
            header.append("patient")
        if any(row.split for row in self.rows):
            header.append("split")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header + self.extra_columns)
        for row in self.rows:
            record = {"slide": _relative(row, relative_to), "label": row.label, "patient": row.patient,
                      "split": row.split}
            writer.writerow([record[col] for col in header] + [row.extra.get(c, "") for c in self.extra_columns])
        return buffer.getvalue()

    def save_csv(self, path: str | os.PathLike) -> Path:
        """Write the cohort CSV atomically (slide files inside its folder are written relative).

        Raises
        ------
        CohortError
            A slide without a label, a name that is not ``.csv`` (an imported XLSX is never
            overwritten with CSV text), or the file cannot be written.
        """
        path = Path(path)
        if path.suffix.lower() != ".csv":
            raise CohortError(f"{path.name}: the cohort is exported as CSV; choose a name ending in .csv")
        text = self.csv_text(relative_to=path.parent.resolve() if path.parent.exists() else None)
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise CohortError(f"{path}: cannot write the cohort CSV ({exc.strerror or exc})") from None
        self.csv_path = path
        return path

    def to_cohort(self) -> Cohort:
        """The validated cohort for training, exactly as :func:`read_cohort` would read the CSV.

        Class names are the labels present, sorted (the CLI's default order).

        Raises
        ------
        CohortError
            No slide, a slide without a label, or fewer than two classes present.
        """
        where = self.csv_path.name if self.csv_path is not None else "cohort"
        if not self.rows:
            raise CohortError(f"{where}: no slides; add slides or import a cohort CSV")
        rows = []
        for i, row in enumerate(self.rows):
            if not row.label:
                raise CohortError(f"{where}: slide {row.name!r} has no label; label every slide before training")
            rows.append(
                CohortRow(i + 2, row.slide, row.label, row.patient or row.name, row.split or None, dict(row.extra))
            )
        present = sorted({row.label for row in rows})
        if len(present) < 2:
            raise CohortError(f"{where}: only one class ({present[0]!r}) present; training needs at least two")
        return Cohort(
            path=self.csv_path or Path("cohort.csv"),
            rows=tuple(rows),
            class_names=tuple(present),
            columns=tuple(self.extra_columns),
            has_patients=any(row.patient for row in self.rows),
        )

    # -- status ---------------------------------------------------------------------------
    def refresh_embedded(self, cache_dir: str | os.PathLike | None) -> list[int]:
        """Update the ``embedded`` column from ``cache_dir`` (one listing); return changed rows."""
        states = embedded_states(cache_dir)
        changed = []
        for i, row in enumerate(self.rows):
            state = states.get(row.name, "no")
            if state != row.embedded:
                row.embedded = state
                changed.append(i)
        return changed

    @property
    def base(self) -> Path | None:
        """The folder slide entries are relative to (the imported CSV's)."""
        return None if self.csv_path is None else self.csv_path.resolve().parent

    def resolve(self, index: int) -> Path | None:
        """The slide file of row ``index``, looked for now when it was not yet."""
        row = self.rows[index]
        if not row.resolved:
            row.path, row.resolved = resolve_slide_file(row.slide, self.base), True
        return row.path

    def unresolved(self) -> list[str]:
        """The slide entries whose file was not looked for yet (for :func:`check_status`)."""
        return [row.slide for row in self.rows if not row.resolved]

    def apply_status(self, status: RowStatus) -> list[int]:
        """Take the files and cache states :func:`check_status` found; return the rows that changed.

        Rows added, removed or edited since the check started are matched by slide entry
        and name; a row the check did not cover keeps what it had.
        """
        changed = []
        for i, row in enumerate(self.rows):
            before = (row.path, row.embedded, row.resolved)
            if not row.resolved and row.slide in status.paths:
                row.path, row.resolved = status.paths[row.slide], True
            if status.cache_checked:
                row.embedded = status.states.get(row.name, "no")
            if (row.path, row.embedded, row.resolved) != before:
                changed.append(i)
        return changed

    def missing(self) -> list[int]:
        """Rows without a complete cache (``embedded`` is not ``"yes"``)."""
        return [i for i, row in enumerate(self.rows) if row.embedded != "yes"]

    def set_outcome(self, name: str, correct: bool | None) -> int | None:
        """Mark slide ``name``'s decision correct, incorrect or (``None``) unknown; return its row."""
        index = self.index_of(name)
        if index is not None:
            self.rows[index].outcome = "" if correct is None else "correct" if correct else "incorrect"
        return index

    def set_prediction(self, name: str, text: str) -> int | None:
        """Show ``text`` as the prediction of slide ``name``; return its row (``None``: not listed)."""
        index = self.index_of(name)
        if index is not None:
            self.rows[index].prediction = text
        return index


@dataclass(frozen=True)
class RowStatus:
    """What :func:`check_status` found.

    Parameters
    ----------
    paths
        The file of each slide entry looked for (``None``: none found).
    states
        The cache state of each slide with a store (see :data:`EMBEDDED`; absent: ``"no"``).
    cache_checked
        Whether the cache folder was read (False: states unknown, keep the rows' states).
    """

    paths: dict[str, Path | None]
    states: dict[str, str]
    cache_checked: bool = True


def check_status(
    entries: Iterable[str], *, base: Path | None, cache_dir: str | os.PathLike | None, cache: bool = True
) -> RowStatus:
    """Find the slide files of ``entries`` and every slide's cache state (file system only; run it in a worker).

    Parameters
    ----------
    entries
        Slide entries to resolve (:meth:`CohortTable.unresolved`).
    base
        The folder they are relative to.
    cache_dir
        The cache folder (one listing of its stores' attributes).
    cache
        Whether to read the cache folder at all.
    """
    paths = {entry: resolve_slide_file(entry, base) for entry in entries}
    return RowStatus(paths, embedded_states(cache_dir) if cache else {}, cache)


def embedded_states(cache_dir: str | os.PathLike | None) -> dict[str, str]:
    """``{slide name: state}`` for every slide with a store in ``cache_dir`` (see :data:`EMBEDDED`)."""
    if cache_dir is None or not Path(cache_dir).is_dir():
        return {}
    kinds: dict[str, set] = {}
    partial: set[str] = set()
    for info in list_caches(cache_dir):
        if info.complete:
            kinds.setdefault(info.slide_name, set()).add(
                (info.encoder, info.encoder_hash, info.patch_size, info.target_mpp, info.region_size)
            )
        else:
            partial.add(info.slide_name)
    states = dict.fromkeys(partial, "partial")
    states.update({name: ("yes" if len(k) == 1 else "several") for name, k in kinds.items()})
    return states


def _relative(row: TableRow, base: Path | None) -> str:
    if row.path is None or base is None or str(row.slide) != str(row.path):
        return row.slide
    try:
        return str(row.path.relative_to(base))
    except ValueError:
        return row.slide
