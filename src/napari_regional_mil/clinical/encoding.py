"""Patient data in the classification ([0279]): how clinical variables are encoded.

A cohort table may carry, next to each slide, clinical variables of the patient (age,
sex, tumour grade, lab values, ...). The first model can take some of them as extra
inputs; the clinical-only baseline (:mod:`..model.clinical_baseline`) uses the same encoding.

Encoding (fitted on the **training** slides only, stored in the checkpoint):

numeric
    standardised with the training mean and standard deviation (``(x - mean) / scale``).
categorical
    one-hot over the levels seen in training plus an ``"unknown"`` level.
missing values
    an empty cell or one of :data:`MISSING_VALUES` (case-insensitive). With the
    ``"indicator"`` policy (the default) a numeric variable gets a 0/1 missing-indicator
    column (its value column is then 0, the training mean) and a categorical one takes
    its ``"unknown"`` level, so a missing value is always explicit, never a silent zero.
    With ``"refuse"`` every value is required, in training and at prediction.

A column is numeric when at least half of its non-missing training values are numbers
(then any other text in it is an error naming the row), otherwise categorical; write
``grade:categorical`` (or ``:numeric``) to choose. A category that training never saw is
refused at prediction (naming the row): the model has nothing learnt for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ClinicalError
from .spec import (
    KINDS,
    MISSING_POLICIES,
    UNKNOWN,
    ClinicalColumn,
    ClinicalRecord,
    ClinicalSpec,
    _kind,
    _lookup,
    _number,
    _policy,
    is_missing,
)

__all__ = ["ClinicalEncoding", "ClinicalVariable", "fit_clinical_encoding"]


@dataclass(frozen=True)
class ClinicalVariable:
    """One encoded clinical variable (fitted on the training slides).

    Parameters
    ----------
    name
        The column name.
    kind
        ``"numeric"`` or ``"categorical"``.
    mean, scale
        Numeric: the training mean and standard deviation (1 when constant).
    levels
        Categorical: the levels seen in training, sorted (the one-hot columns are these
        plus ``"unknown"``).
    reference
        Categorical: the most frequent training level (contributions compare with it).
    missing_indicator
        Whether a missing value is accepted (numeric: an indicator column; categorical:
        the ``"unknown"`` level). False: the value is required.
    n_missing
        How many training slides had no value.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    mean: float = 0.0
    scale: float = 1.0
    levels: tuple[str, ...] = ()
    reference: str = ""
    missing_indicator: bool = True
    n_missing: int = 0

    @property
    def width(self) -> int:
        """Number of encoded columns."""
        if self.kind == "numeric":
            return 1 + int(self.missing_indicator)
        return len(self.levels) + 1

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the encoded columns."""
        if self.kind == "numeric":
            return (self.name,) + ((f"{self.name}:missing",) if self.missing_indicator else ())
        return tuple(f"{self.name}={level}" for level in (*self.levels, UNKNOWN))

    @property
    def reference_text(self) -> str:
        """The reference value as text: the training mean, or the reference level."""
        return f"{self.mean:.4g}" if self.kind == "numeric" else self.reference

    def reference_vector(self) -> np.ndarray:
        """The encoding of the reference (training mean / most frequent level)."""
        out = np.zeros(self.width, dtype=np.float32)
        if self.kind == "categorical":
            out[self.levels.index(self.reference)] = 1.0
        return out

    def _level(self, text: str) -> str | None:
        """The training level matching ``text`` (exact, else case-insensitive), or None."""
        if text in self.levels:
            return text
        match = [level for level in self.levels if level.lower() == text.lower()]
        return match[0] if len(match) == 1 else None

    def encode(self, text: str | None, *, where: str) -> np.ndarray:
        """Encode one cell.

        Raises
        ------
        ClinicalError
            Naming ``where`` and the column: a missing value the model cannot take, text
            in a numeric column, a category training never saw.
        """
        out = np.zeros(self.width, dtype=np.float32)
        if is_missing(text):
            if not self.missing_indicator:
                raise ClinicalError(
                    f"{where}: column {self.name!r} has no value, and the model was trained without missing "
                    "values for it (no missing indicator); give a value"
                )
            out[-1] = 1.0
            return out
        assert text is not None
        if self.kind == "numeric":
            value = _number(text)
            if value is None:
                raise ClinicalError(
                    f"{where}: column {self.name!r}: {text.strip()!r} is not a number (the column is numeric)"
                )
            out[0] = (value - self.mean) / self.scale
            return out
        level = self._level(text.strip())
        if level is None:
            raise ClinicalError(
                f"{where}: column {self.name!r}: category {text.strip()!r} was never seen in training "
                f"(levels: {', '.join(self.levels)})"
            )
        out[self.levels.index(level)] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "missing_indicator": self.missing_indicator,
        }
        data["n_missing"] = self.n_missing
        if self.kind == "numeric":
            data.update(mean=self.mean, scale=self.scale)
        else:
            data.update(levels=list(self.levels), reference=self.reference)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClinicalVariable:
        """Inverse of :meth:`to_dict` (``ValueError`` on a malformed record)."""
        kind = str(data["kind"])
        if kind not in KINDS:
            raise ValueError(f"clinical variable {data.get('name')!r}: unknown kind {kind!r}")
        levels = tuple(str(v) for v in data.get("levels", ()))
        reference = str(data.get("reference", ""))
        if kind == "categorical" and reference not in levels:
            raise ValueError(
                f"clinical variable {data.get('name')!r}: reference {reference!r} is not a level"
            )
        return cls(
            name=str(data["name"]),
            kind=_kind(kind),
            mean=float(data.get("mean", 0.0)),
            scale=float(data.get("scale", 1.0)),
            levels=levels,
            reference=reference,
            missing_indicator=bool(data.get("missing_indicator", True)),
            n_missing=int(data.get("n_missing", 0)),
        )


@dataclass(frozen=True)
class ClinicalEncoding:
    """The fitted encoding of a model's clinical variables (stored in its checkpoint).

    Parameters
    ----------
    variables
        The variables, in input order.
    missing
        The missing-value policy it was fitted with.
    """

    variables: tuple[ClinicalVariable, ...]
    missing: Literal["indicator", "refuse"] = "indicator"

    @property
    def names(self) -> tuple[str, ...]:
        """The variables' names, in order."""
        return tuple(v.name for v in self.variables)

    @property
    def width(self) -> int:
        """Length of the encoded vector."""
        return sum(v.width for v in self.variables)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the encoded columns, in order."""
        return tuple(c for v in self.variables for c in v.columns)

    def slices(self) -> dict[str, slice]:
        """Where each variable lies in the encoded vector."""
        out, start = {}, 0
        for v in self.variables:
            out[v.name] = slice(start, start + v.width)
            start += v.width
        return out

    def variable(self, name: str) -> ClinicalVariable:
        """The variable called ``name`` (``KeyError`` if none)."""
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    def encode(self, record: ClinicalRecord) -> np.ndarray:
        """``(width,)`` float32 encoding of one slide's values.

        Raises
        ------
        ClinicalError
            A column the record lacks entirely, or a value the encoding cannot take
            (see :meth:`ClinicalVariable.encode`); the message names the row and column.
        """
        parts = []
        for v in self.variables:
            text = _lookup(record.values, v.name)
            if text is None:
                have = ", ".join(record.values) or "none"
                raise ClinicalError(
                    f"{record.source} header: no column {v.name!r} (the model needs it; columns: {have})"
                )
            parts.append(v.encode(text, where=record.where))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def texts(self, record: ClinicalRecord) -> dict[str, str]:
        """Variable name -> the record's text for it (``""`` when it has none)."""
        return {v.name: (_lookup(record.values, v.name) or "").strip() for v in self.variables}

    def encode_all(self, records: Sequence[ClinicalRecord]) -> np.ndarray:
        """``(n, width)`` float32 encodings (the first bad value raises)."""
        return (
            np.stack([self.encode(r) for r in records]) if records else np.zeros((0, self.width), np.float32)
        )

    def with_reference(self, encoded: np.ndarray, name: str) -> np.ndarray:
        """A copy of ``encoded`` with variable ``name`` set to its reference."""
        out = np.array(encoded, dtype=np.float32, copy=True)
        out[..., self.slices()[name]] = self.variable(name).reference_vector()
        return out

    def describe(self) -> list[str]:
        """One line per variable for people: kind, levels or mean, whether required."""
        lines = []
        for v in self.variables:
            if v.kind == "numeric":
                text = f"{v.name}: numeric (training mean {v.mean:.4g}, sd {v.scale:.4g})"
            else:
                text = f"{v.name}: categorical ({', '.join(v.levels)}; reference {v.reference})"
            text += "; may be missing" if v.missing_indicator else "; required"
            lines.append(text)
        return lines

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (round-trips through :meth:`from_dict`)."""
        return {"missing": self.missing, "variables": [v.to_dict() for v in self.variables]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClinicalEncoding:
        """Inverse of :meth:`to_dict` (``ValueError`` on a malformed record)."""
        missing = str(data.get("missing", "indicator"))
        if missing not in MISSING_POLICIES:
            raise ValueError(f"unknown missing-value policy {missing!r}")
        try:
            variables = tuple(ClinicalVariable.from_dict(v) for v in data["variables"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed clinical encoding ({exc})") from None
        return cls(variables, _policy(missing))


def _column_texts(records: Sequence[ClinicalRecord], column: ClinicalColumn) -> tuple[str, list[str]]:
    """The column's actual name in the records and each record's text (errors name the row)."""
    names: dict[str, str] = {}
    for record in records:
        for key in record.values:
            names.setdefault(key.lower(), key)
    actual = names.get(column.name.lower())
    if actual is None:
        have = ", ".join(dict.fromkeys(k for r in records for k in r.values)) or "none"
        raise ClinicalError(
            f"{records[0].source} header: no clinical column {column.name!r} (columns: {have})"
        )
    texts = []
    for record in records:
        if actual not in record.values:
            raise ClinicalError(f"{record.where}: no column {actual!r}")
        texts.append(record.values[actual])
    return actual, texts


def _fit_variable(
    name: str,
    texts: list[str],
    records: Sequence[ClinicalRecord],
    kind: str | None,
    missing: str,
    known: Sequence[str] = (),
) -> ClinicalVariable:
    present = [(t.strip(), r.where) for t, r in zip(texts, records) if not is_missing(t)]
    absent = [r.where for t, r in zip(texts, records) if is_missing(t)]
    if absent and missing == "refuse":
        raise ClinicalError(
            f"{absent[0]}: column {name!r} has no value (missing values are refused; "
            "train with missing indicators to allow them)"
        )
    if not present:
        raise ClinicalError(f"{records[0].source}: column {name!r} has no value in any training slide")
    numbers = [_number(t) for t, _ in present]
    if kind is None:
        kind = "numeric" if sum(n is not None for n in numbers) * 2 >= len(numbers) else "categorical"
    indicator = missing == "indicator"
    if kind == "numeric":
        for (text, where), value in zip(present, numbers):
            if value is None:
                raise ClinicalError(
                    f"{where}: column {name!r}: {text!r} is not a number (the column is numeric)"
                )
        values = np.array(numbers, dtype=np.float64)
        std = float(values.std())
        return ClinicalVariable(
            name,
            "numeric",
            mean=float(values.mean()),
            scale=std if std > 1e-12 else 1.0,
            missing_indicator=indicator,
            n_missing=len(absent),
        )
    counts = Counter(text for text, _ in present)
    # one spelling per level: case variants of a level are the same level
    canonical: dict[str, str] = {}
    for text, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        canonical.setdefault(text.lower(), text)
    merged = Counter(canonical[text.lower()] for text, _ in present)
    reference = min(merged, key=lambda level: (-merged[level], level))  # most frequent; ties: first
    for text in known:  # levels of the table that no training slide has
        canonical.setdefault(text.lower(), text)
    levels = tuple(sorted(set(canonical.values())))
    return ClinicalVariable(
        name,
        "categorical",
        levels=levels,
        reference=reference,
        missing_indicator=indicator,
        n_missing=len(absent),
    )


def fit_clinical_encoding(records: Sequence[ClinicalRecord], spec: ClinicalSpec) -> ClinicalEncoding:
    """Fit the encoding of ``spec``'s columns on the training slides' values.

    Parameters
    ----------
    records
        The training slides' values (statistics and levels come from these only).
    spec
        The columns and the missing-value policy.

    Raises
    ------
    ClinicalError
        Naming the column and the row: a column the table lacks, text in a numeric
        column, a missing value under the ``"refuse"`` policy, a column with no value.
    """
    if not records:
        raise ClinicalError("no training slides to fit the clinical encoding on")
    variables = []
    for column in spec.columns:
        name, texts = _column_texts(records, column)
        known = dict(spec.known_values).get(column.name, ())
        variables.append(_fit_variable(name, texts, records, column.kind, spec.missing, known))
    return ClinicalEncoding(tuple(variables), spec.missing)
