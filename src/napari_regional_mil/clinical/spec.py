"""Clinical variables of the patient ([0279]): which columns, and the raw values of a slide.

A cohort table may carry, next to each slide, clinical variables of the patient (age,
sex, tumour grade, lab values, ...). This module holds what is chosen and read before
any fitting: the raw values of one slide (:class:`ClinicalRecord`), the columns chosen for
training and the missing-value policy (:class:`ClinicalSpec`, parsed from the CLI's
``--clinical`` by :func:`parse_clinical_columns`), and what counts as a missing value.
The fitted encoding is in :mod:`.encoding`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KINDS",
    "MISSING_POLICIES",
    "MISSING_VALUES",
    "UNKNOWN",
    "ClinicalColumn",
    "ClinicalRecord",
    "ClinicalSpec",
    "Kind",
    "Policy",
    "is_missing",
    "parse_clinical_columns",
]

KINDS = ("numeric", "categorical")
MISSING_POLICIES = ("indicator", "refuse")
#: Cell texts read as "no value" (compared lower-case, after stripping blanks).
MISSING_VALUES = frozenset({"", "na", "n/a", "nan", "null", "none", "missing", "unknown", "?", "-"})
#: The extra level of every categorical variable (missing values, with the "indicator" policy).
UNKNOWN = "unknown"


def is_missing(text: str | None) -> bool:
    """Whether a cell holds no value (empty, or one of :data:`MISSING_VALUES`)."""
    return text is None or text.strip().lower() in MISSING_VALUES


Kind = Literal["numeric", "categorical"]
Policy = Literal["indicator", "refuse"]


def _kind(text: str) -> Kind:
    """``text`` as a kind (``ValueError`` if it is none)."""
    if text == "numeric":
        return "numeric"
    if text == "categorical":
        return "categorical"
    raise ValueError(f"unknown kind {text!r} (choose numeric or categorical)")


def _policy(text: str) -> Policy:
    """``text`` as a missing-value policy (``ValueError`` if it is none)."""
    if text == "indicator":
        return "indicator"
    if text == "refuse":
        return "refuse"
    raise ValueError(f"unknown missing-value policy {text!r}; choose from {MISSING_POLICIES}")


def _lookup(values: Mapping[str, str], name: str) -> str | None:
    """``values[name]``, else the one key equal to ``name`` without regard to case, else None."""
    if name in values:
        return values[name]
    match = [k for k in values if k.lower() == name.lower()]
    return values[match[0]] if len(match) == 1 else None


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class ClinicalRecord:
    """One slide's raw clinical values and where they come from.

    Parameters
    ----------
    values
        Column name -> the cell's text as written.
    where
        Where the values were read, for messages (``"labels.csv line 7"``).
    source
        The table they come from, for messages about a whole column (``"labels.csv"``).
    """

    values: Mapping[str, str] = field(default_factory=dict)
    where: str = "clinical values"
    source: str = "clinical table"


@dataclass(frozen=True)
class ClinicalColumn:
    """A clinical column chosen for training, with its kind (``None``: inferred)."""

    name: str
    kind: Literal["numeric", "categorical"] | None = None


@dataclass(frozen=True)
class ClinicalSpec:
    """Which clinical columns to use, and what a missing value means.

    Parameters
    ----------
    columns
        The columns, in order.
    missing
        ``"indicator"``: missing values are allowed and encoded explicitly (missing
        indicator / ``"unknown"`` level); ``"refuse"``: every value is required.
    known_values
        Per column, every value the cohort table holds (set by :meth:`knowing`): the
        levels of a categorical variable are those seen in training plus these, so a
        validation or test slide (a cross-validation fold) may hold a level that no
        training slide of its fold has. Such a level carries no learnt weight. Only the
        levels come from here; statistics and reference levels come from training.
    """

    columns: tuple[ClinicalColumn, ...]
    missing: Literal["indicator", "refuse"] = "indicator"
    known_values: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("no clinical columns given")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"unknown missing-value policy {self.missing!r}; choose from {MISSING_POLICIES}")
        names = [c.name.lower() for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"a clinical column is named twice: {', '.join(c.name for c in self.columns)}")

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(c.name for c in self.columns)

    def knowing(self, records: Sequence[ClinicalRecord]) -> ClinicalSpec:
        """The same spec, also knowing every value ``records`` (the whole cohort) hold."""
        known = dict(self.known_values)
        for column in self.columns:
            seen = set(known.get(column.name, ()))
            for record in records:
                text = _lookup(record.values, column.name)
                if text is not None and not is_missing(text):
                    seen.add(text.strip())
            known[column.name] = tuple(sorted(seen))
        return ClinicalSpec(self.columns, self.missing, tuple(sorted(known.items())))


def parse_clinical_columns(text: str, *, missing: str = "indicator") -> ClinicalSpec:
    """Parse ``"age,sex,grade:categorical"`` (the CLI's ``--clinical``) into a :class:`ClinicalSpec`.

    Raises
    ------
    ValueError
        An empty name, an unknown kind, or a column named twice.
    """
    columns = []
    for item in text.split(","):
        name, _, kind = item.strip().partition(":")
        name, kind = name.strip(), kind.strip().lower()
        if not name:
            raise ValueError(f"empty clinical column name in {text!r}")
        if kind and kind not in KINDS:
            raise ValueError(f"column {name!r}: unknown kind {kind!r} (choose numeric or categorical)")
        columns.append(ClinicalColumn(name, _kind(kind) if kind else None))
    return ClinicalSpec(tuple(columns), _policy(missing))

