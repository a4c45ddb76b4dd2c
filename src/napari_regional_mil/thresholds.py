"""Decision-threshold rules of a binary model (pure Python: the settings table imports it at start-up).

A rule is a fixed value (``0.5``) or how to choose the threshold on validation or
out-of-fold predictions: ``youden`` (Youden's J), ``sensitivity=0.95`` or
``specificity=0.95``; :func:`~napari_regional_mil.training.evaluation.tune_threshold`
applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["THRESHOLD_FORMS", "ThresholdRule", "parse_threshold"]

#: The accepted forms, for messages and help texts.
THRESHOLD_FORMS = "youden, sensitivity=S, specificity=S (S in [0, 1]) or a number in [0, 1]"


@dataclass(frozen=True)
class ThresholdRule:
    """How the decision threshold of a binary model is chosen.

    Parameters
    ----------
    kind
        ``"value"`` (a fixed threshold), ``"youden"`` (maximises sensitivity +
        specificity - 1), ``"sensitivity"`` (the highest threshold that reaches
        ``target`` sensitivity: the most specific one) or ``"specificity"`` (the lowest
        threshold that reaches ``target`` specificity: the most sensitive one).
    target
        The fixed threshold (``"value"``) or the sensitivity / specificity to reach.
    """

    kind: Literal["value", "youden", "sensitivity", "specificity"]
    target: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("value", "youden", "sensitivity", "specificity"):
            raise ValueError(f"unknown threshold rule {self.kind!r}")
        if not 0.0 <= self.target <= 1.0:
            raise ValueError(f"threshold {self.text} must lie in [0, 1]")

    @property
    def tuned(self) -> bool:
        """Whether the threshold is chosen from data (not a fixed value)."""
        return self.kind != "value"

    @property
    def text(self) -> str:
        """The rule as written on the command line (``youden``, ``sensitivity=0.95``, ``0.5``)."""
        if self.kind == "value":
            return f"{self.target:g}"
        return "youden" if self.kind == "youden" else f"{self.kind}={self.target:g}"


def parse_threshold(value: float | str | ThresholdRule) -> ThresholdRule:
    """``0.5``, ``"0.5"``, ``"youden"``, ``"sensitivity=0.95"`` or ``"specificity=0.9"`` as a rule.

    Raises
    ------
    ValueError
        Anything else (the message lists the accepted forms).
    """
    if isinstance(value, ThresholdRule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ThresholdRule("value", float(value))
    text = str(value).strip().lower()
    if text == "youden":
        return ThresholdRule("youden")
    kind, sep, number = (part.strip() for part in text.partition("="))
    try:
        if sep and kind == "sensitivity":
            return ThresholdRule("sensitivity", float(number))
        if sep and kind == "specificity":
            return ThresholdRule("specificity", float(number))
        if not sep:
            return ThresholdRule("value", float(text))
    except ValueError as exc:
        if "must lie" in str(exc):
            raise
    raise ValueError(f"threshold {value!r} is not one of: {THRESHOLD_FORMS}")
