"""The record a prediction of the first model produces (consumed by heatmaps, GUI, CLI)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.contributions import Contributions
from .evaluation import decide

__all__ = ["SlidePrediction"]


@dataclass(frozen=True, eq=False)
class SlidePrediction:
    """Output of the first model on every patch of one slide.

    Parameters
    ----------
    slide_name
        The slide's name.
    class_names
        Class names in the model's order.
    probabilities
        ``(C,)`` class probabilities (softmax).
    threshold
        Decision threshold on the probability of ``class_names[positive_class]`` (binary
        models); multi-class models decide by the largest probability.
    positive_class
        Index of the class the threshold applies to (binary models; default 1).
    patch_attention
        ``(N,)`` attention of every patch in the selected-patch path (sums to 1; uniform
        for the mean-pooling baseline), in the cache's patch order.
    region_attention
        ``(R,)`` attention of every region in the all-regions path (sums to 1), or
        ``None`` when the model has no regional path.
    region_index
        ``(N,)`` region of each patch, or ``None`` for bags without coordinates.
    class_evidence
        Optional ``(N, C)`` per-patch evidence for each class (attention times the
        classifier's logit contribution), or ``None``.
    contributions
        For a model with clinical variables: how much the slide and each variable move
        the probability of the explained class (see
        :mod:`~napari_regional_mil.model.contributions`), else ``None``.
    """

    slide_name: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    threshold: float
    patch_attention: np.ndarray
    region_attention: np.ndarray | None = None
    region_index: np.ndarray | None = None
    class_evidence: np.ndarray | None = None
    positive_class: int = 1
    contributions: Contributions | None = None

    def decide(self, threshold: float | None = None) -> str:
        """The predicted class name at ``threshold`` (default: the model's)."""
        t = self.threshold if threshold is None else float(threshold)
        return self.class_names[decide(self.probabilities, t, self.positive_class)]

    @property
    def predicted(self) -> str:
        """The predicted class name at the model's threshold."""
        return self.decide()
