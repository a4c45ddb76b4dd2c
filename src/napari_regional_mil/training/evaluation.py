"""Deciding a class from class probabilities (numpy only).

:func:`decide` is the one rule every front end uses (training's validation metrics,
prediction, the Predict widget's panel, the Cohort table): a binary model predicts its
positive class when that class's probability reaches the threshold, otherwise the other
class; a model with more classes predicts the most probable one (the threshold is unused).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = ["decide"]


@overload
def decide(probabilities: Sequence[float], threshold: float, positive_class: int = 1) -> int: ...


@overload
def decide(probabilities: npt.ArrayLike, threshold: float, positive_class: int = 1) -> int | np.ndarray: ...


def decide(probabilities: npt.ArrayLike, threshold: float, positive_class: int = 1) -> int | np.ndarray:
    """The predicted class index of one slide or of many.

    Parameters
    ----------
    probabilities
        ``(C,)`` class probabilities of one slide, or ``(N, C)`` of ``N`` slides.
    threshold
        Decision threshold on the probability of ``positive_class`` (binary models).
        A slide whose probability equals the threshold is positive.
    positive_class
        The class the threshold applies to (``0`` or ``1``; binary models only).

    Returns
    -------
    int or numpy.ndarray
        The class index (an ``int`` for ``(C,)`` input, an ``(N,)`` int64 array for
        ``(N, C)``). With more than two classes: the most probable class (ties: the first).

    Raises
    ------
    ValueError
        ``probabilities`` is not 1-D or 2-D with at least two classes, or
        ``positive_class`` is not 0 or 1 for a binary model.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim not in (1, 2) or p.shape[-1] < 2:
        raise ValueError(f"probabilities must have shape (C,) or (N, C) with C >= 2, got {p.shape}")
    if p.shape[-1] == 2:
        if positive_class not in (0, 1):
            raise ValueError(f"positive_class must be 0 or 1 for a binary model, got {positive_class}")
        positive = p[..., positive_class] >= float(threshold)
        out = np.where(positive, positive_class, 1 - positive_class).astype(np.int64)
    else:
        out = np.argmax(p, axis=-1).astype(np.int64)
    return int(out) if p.ndim == 1 else out
