"""How much the slide and each clinical variable move a prediction.

For a model with clinical variables the logits are additive (see
:mod:`~.first_model`): ``logits = slide term + sum of clinical terms + bias``. A source's
**contribution** is the change in the explained class's probability when that source is
set to its reference, everything else kept:

- a clinical variable: its training mean (numeric) or most frequent training level
  (categorical), ``ClinicalVariable.reference_vector``;
- the slide: the mean of the slide term over the training slides
  (``FirstModel.slide_logit_reference``), i.e. "an average training slide".

``p - p(source at reference)``: positive when the source pushes towards the class. The
same change is also given in log-odds (``log(p / (1 - p))``); for two classes the
log-odds contributions are exact shares of the logit difference and add up to
``logit(p) - logit(p with every source at its reference)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..clinical import ClinicalEncoding

__all__ = ["Contributions", "explain_additive"]


@dataclass(frozen=True)
class Contributions:
    """The contributions of the slide and of each clinical variable to one class.

    Parameters
    ----------
    class_index
        The class explained (the positive class of a binary model, else the predicted one).
    probability
        Its probability.
    variables
        Clinical variable -> change in the class probability against its reference.
    slide
        The same for the slide (``None`` for the clinical-only baseline).
    variable_log_odds, slide_log_odds
        The same changes in log-odds.
    references
        Clinical variable -> its reference value as text (training mean / level).
    values
        Clinical variable -> the slide's value as given (``""``: missing), when known.
    """

    class_index: int
    probability: float
    variables: dict[str, float] = field(default_factory=dict)
    slide: float | None = None
    variable_log_odds: dict[str, float] = field(default_factory=dict)
    slide_log_odds: float | None = None
    references: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def as_row(self) -> dict[str, float]:
        """``contribution_slide`` and ``contribution_<variable>`` (probability changes)."""
        row = {} if self.slide is None else {"contribution_slide": self.slide}
        row.update({f"contribution_{name}": value for name, value in self.variables.items()})
        return row


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_odds(logits: np.ndarray, k: int) -> np.ndarray:
    """``log(p_k / (1 - p_k))`` from the logits, without rounding through p."""
    z = np.asarray(logits, dtype=np.float64)
    others = np.delete(z, k, axis=-1)
    peak = others.max(axis=-1)
    return z[..., k] - (peak + np.log(np.exp(others - peak[..., None]).sum(axis=-1)))


def explain_additive(
    *,
    encoding: ClinicalEncoding,
    encoded: np.ndarray,
    clinical_logits: Callable[[np.ndarray], np.ndarray],
    base_logits: np.ndarray,
    class_index: int,
    slide_logits: np.ndarray | None = None,
    slide_reference: np.ndarray | None = None,
) -> Contributions:
    """Contributions for a model whose logits are ``base + slide term + clinical_logits(x)``.

    Parameters
    ----------
    encoding
        The clinical encoding (references per variable).
    encoded
        ``(K,)`` the slide's encoded clinical values.
    clinical_logits
        ``(n, K) -> (n, C)``: the clinical term of the logits.
    base_logits
        ``(C,)`` the rest that does not change (the classifier's bias).
    class_index
        The class to explain.
    slide_logits, slide_reference
        ``(C,)`` the slide's term and its training mean (``None``: no slide, the
        clinical-only baseline).
    """
    encoded = np.asarray(encoded, dtype=np.float32)
    names = encoding.names
    variants = np.stack([encoded] + [encoding.with_reference(encoded, name) for name in names])
    clinical = np.asarray(clinical_logits(variants), dtype=np.float64)
    base = np.asarray(base_logits, dtype=np.float64)
    slide = np.zeros_like(base) if slide_logits is None else np.asarray(slide_logits, dtype=np.float64)
    logits = base + slide + clinical
    probs = _softmax(logits)[:, class_index]
    odds = _log_odds(logits, class_index)
    p = float(probs[0])
    out_p = {name: p - float(q) for name, q in zip(names, probs[1:])}
    out_lo = {name: float(odds[0] - o) for name, o in zip(names, odds[1:])}
    slide_p = slide_lo = None
    if slide_logits is not None and slide_reference is not None:
        reference = base + np.asarray(slide_reference, dtype=np.float64) + clinical[0]
        slide_p = p - float(_softmax(reference)[class_index])
        slide_lo = float(odds[0] - _log_odds(reference, class_index))
    references = {v.name: v.reference_text for v in encoding.variables}
    return Contributions(class_index, p, out_p, slide_p, out_lo, slide_lo, references)
