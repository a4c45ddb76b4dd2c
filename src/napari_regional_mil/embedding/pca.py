"""PCA of patch embeddings to RGB: a tissue map of what the frozen encoder sees.

The first three principal components of a slide's patch embeddings are mapped to red,
green and blue; patches the encoder finds alike get alike colours, so pathologists read
the overlay like a tissue map. Everything here is numpy; no Qt, no napari.
"""

from __future__ import annotations

import numpy as np

__all__ = ["patch_rgba_grid", "pca_project", "pca_rgb"]


def pca_project(features: np.ndarray, n_components: int = 3) -> np.ndarray:
    """Project features on their first principal components.

    Parameters
    ----------
    features
        ``(N, D)`` patch embeddings.
    n_components
        Number of components kept.

    Returns
    -------
    numpy.ndarray
        ``(N, n_components)`` float64 scores, ordered by decreasing variance. Components
        beyond the rank of the data are zero. The sign of each component is fixed (its
        largest-magnitude loading is positive) so the colours are deterministic.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    n, d = x.shape
    out = np.zeros((n, n_components), dtype=np.float64)
    if n < 2 or d == 0:
        return out
    x = x - x.mean(axis=0, keepdims=True)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_components, vt.shape[0])
    rank = int(np.sum(sv > sv[0] * 1e-9)) if sv.size and sv[0] > 0 else 0
    k = min(k, rank)
    if k == 0:
        return out
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    out[:, :k] = x @ comps.T
    return out


def pca_rgb(features: np.ndarray, *, clip_percentile: float = 1.0) -> np.ndarray:
    """Colours of patches from the first three principal components of their embeddings.

    Parameters
    ----------
    features
        ``(N, D)`` patch embeddings.
    clip_percentile
        Each component is stretched from its ``clip_percentile`` to its
        ``100 - clip_percentile`` percentile onto [0, 1] (robust to outliers).

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float32 RGB in [0, 1]; a component without variance is 0.5.
    """
    scores = pca_project(features, 3)
    rgb = np.full(scores.shape, 0.5, dtype=np.float32)
    if scores.shape[0] == 0:
        return rgb
    for c in range(3):
        lo, hi = np.percentile(scores[:, c], [clip_percentile, 100.0 - clip_percentile])
        if hi - lo > 1e-12:
            rgb[:, c] = np.clip((scores[:, c] - lo) / (hi - lo), 0.0, 1.0)
    return rgb


def patch_rgba_grid(grid_xy: np.ndarray, rgb: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Lay per-patch colours out on the patch grid; cells without a patch are transparent.

    Parameters
    ----------
    grid_xy
        ``(N, 2)`` ``(x, y)`` patch-grid cells.
    rgb
        ``(N, 3)`` colours in [0, 1].
    grid_shape
        ``(n_rows, n_cols)`` of the patch grid.

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_cols, 4)`` uint8 RGBA; alpha 255 on patches, 0 elsewhere.
    """
    xy = np.asarray(grid_xy, dtype=np.int64).reshape(-1, 2)
    colours = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    if xy.shape[0] != colours.shape[0]:
        raise ValueError(f"{xy.shape[0]} grid cells but {colours.shape[0]} colours")
    rows, cols = int(grid_shape[0]), int(grid_shape[1])
    if xy.size and (xy.min() < 0 or xy[:, 0].max() >= cols or xy[:, 1].max() >= rows):
        raise ValueError(f"grid cells fall outside the {rows} x {cols} grid")
    img = np.zeros((rows, cols, 4), dtype=np.uint8)
    img[xy[:, 1], xy[:, 0], :3] = np.round(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)
    img[xy[:, 1], xy[:, 0], 3] = 255
    return img
