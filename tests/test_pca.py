"""PCA of patch embeddings to RGB (core, numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.embedding.pca import patch_rgba_grid, pca_project, pca_rgb


def _clustered(seed: int = 0, n_per: int = 40, dim: int = 17) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(3, dim))
    labels = np.repeat(np.arange(3), n_per)
    feats = centres[labels] + rng.normal(0, 0.3, size=(labels.size, dim))
    return feats.astype(np.float32), labels


def test_pca_project_matches_covariance_eigenvectors():
    feats, _ = _clustered()
    scores = pca_project(feats, 3)
    x = feats.astype(np.float64) - feats.mean(0)
    evals, _evecs = np.linalg.eigh(np.cov(x.T))
    order = np.argsort(evals)[::-1][:3]
    # variance of each score equals the covariance eigenvalue, in decreasing order
    np.testing.assert_allclose(scores.var(0, ddof=1), evals[order], rtol=1e-6)
    # scores are uncorrelated
    corr = np.corrcoef(scores.T)
    np.testing.assert_allclose(corr - np.diag(np.diag(corr)), 0, atol=1e-6)


def test_pca_rgb_separates_clusters_and_is_deterministic():
    feats, labels = _clustered()
    rgb = pca_rgb(feats)
    assert rgb.shape == (feats.shape[0], 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    # three clusters span two components: red and green separate them, blue is noise
    means = np.stack([rgb[labels == c, :2].mean(0) for c in range(3)])
    spread = max(rgb[labels == c, :2].std(0).max() for c in range(3))
    gaps = [np.abs(means[a] - means[b]).max() for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 5 * spread
    # same input, same colours; invariant to a shift and a positive scale of the features
    np.testing.assert_array_equal(pca_rgb(feats), rgb)
    np.testing.assert_allclose(pca_rgb(feats * 2.5 + 3.0), rgb, atol=1e-4)
    # a row order change permutes the colours (nothing depends on the order)
    perm = np.random.default_rng(1).permutation(len(feats))
    np.testing.assert_allclose(pca_rgb(feats[perm]), rgb[perm], atol=1e-4)


@pytest.mark.parametrize("n", [0, 1])
def test_pca_rgb_degenerate_inputs_are_grey(n):
    rgb = pca_rgb(np.ones((n, 8), dtype=np.float32))
    assert rgb.shape == (n, 3)
    assert np.all(rgb == 0.5)


def test_pca_rgb_rank_one_data_uses_one_channel():
    t = np.linspace(-1, 1, 20)
    feats = np.outer(t, np.arange(1, 6))  # rank 1
    rgb = pca_rgb(feats, clip_percentile=0.0)
    assert np.all(np.diff(rgb[:, 0]) > 0)
    assert np.all(rgb[:, 1:] == 0.5)


def test_patch_rgba_grid_places_xy_and_background_transparent():
    grid_xy = np.array([[0, 0], [4, 1], [2, 2]])  # (x, y) on a non-square 3 x 5 grid
    rgb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    img = patch_rgba_grid(grid_xy, rgb, (3, 5))
    assert img.shape == (3, 5, 4) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (255, 0, 0, 255)
    assert tuple(img[1, 4]) == (0, 255, 0, 255)  # row y=1, column x=4
    assert tuple(img[2, 2]) == (0, 0, 255, 255)
    assert int(img[..., 3].astype(bool).sum()) == 3
    with pytest.raises(ValueError, match="outside"):
        patch_rgba_grid(np.array([[5, 0]]), rgb[:1], (3, 5))
