"""Evaluating the first model on whole bags (every patch, inference mode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..model.first_model import Bag, FirstModel

__all__ = ["predict_bags", "decide"]


def predict_bags(model: FirstModel, bags: Sequence[Bag]) -> np.ndarray:
    """``(n, C)`` class probabilities of every bag, using every patch (inference mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return np.stack([torch.softmax(model(bag).logits, -1).numpy() for bag in bags]).astype(np.float64)
    finally:
        model.train(was_training)


def decide(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Predicted classes: binary by ``threshold`` on class 1, otherwise the most probable."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(axis=1)
