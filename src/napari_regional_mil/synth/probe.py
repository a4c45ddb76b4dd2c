"""A colour-controlled texture probe: whether an encoder tells tissue types apart by texture alone.

:func:`colour_matched_patches` cuts patches of the six synthetic tissue types
(:data:`~napari_regional_mil.synth.textures.TISSUE_TYPES`) from texture banks of several
seeds and gives every patch exactly the same per-channel colour distribution: each
channel's pixel values are replaced, rank for rank, by one shared H&E distribution (the
pooled pixels of all types). Every patch then has the same mean, standard deviation and
histogram of R, G and B, so any encoder that sees per-channel colour only (a mean/std-RGB
baseline, colour histograms) is at chance; what is left to tell the types apart is
texture (structure, scale, orientation, nuclear density) and how the channels vary
together.

:func:`linear_probe` scores embeddings with a linear classifier trained on some texture
seeds and tested on another (leave one seed out), so it measures what generalises to new
tissue, not memorised patches.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..synth.textures import TISSUE_TYPES, texture_bank

__all__ = ["colour_baseline", "colour_matched_patches", "linear_probe"]


def colour_matched_patches(
    *,
    n_per_type: int = 12,
    size: int = 224,
    seeds: tuple[int, ...] = (0, 1, 2),
    mpp: float = 0.5,
    rng_seed: int = 0,
) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]:
    """Patches of every tissue type, all with one per-channel colour distribution.

    Parameters
    ----------
    n_per_type
        Patches per tissue type and texture seed.
    size
        Patch side in px.
    seeds
        Texture seeds (different tissue instances); the probe leaves one out at a time.
    mpp
        Microns per pixel of the textures.
    rng_seed
        Seed of the patch positions and of the rank ties.

    Returns
    -------
    patches, labels, groups
        ``(N, size, size, 3)`` uint8 RGB; the tissue type of each patch; its texture seed.
    """
    rng = np.random.default_rng(rng_seed)
    patches, labels, groups = [], [], []
    for group, seed in enumerate(seeds):
        bank = texture_bank(int(seed), float(mpp), pad=size)
        for t in range(len(TISSUE_TYPES)):
            for _ in range(n_per_type):
                x0, y0 = (int(v) for v in rng.integers(0, bank.period, 2))
                patches.append(bank.window(t, x0, y0, size, size))
                labels.append(t)
                groups.append(group)
    raw = np.stack(patches)
    n, npx = len(raw), size * size
    flat = raw.reshape(n, npx, 3)
    # the shared distribution: npx pixels drawn from all patches, sorted per channel
    pick = rng.choice(n * npx, npx, replace=False)
    reference = np.sort(flat.reshape(-1, 3)[pick], axis=0)  # (npx, 3)
    out = np.zeros_like(flat)
    # ties are broken by a fixed random order of the pixel positions (a stable radix sort of the
    # uint8 values, visited in that order), the same in every patch
    perm = rng.permutation(npx)
    for c in range(3):
        order = perm[np.argsort(flat[:, perm, c], axis=1, kind="stable")]  # pixel positions, darkest first
        np.put_along_axis(out[:, :, c], order, np.broadcast_to(reference[:, c], (n, npx)), axis=1)
    return out.reshape(raw.shape), np.asarray(labels, np.int64), np.asarray(groups, np.int64)


def colour_baseline(patches: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Mean and standard deviation of R, G, B per patch ``(N, 6)``, computed exactly (integer sums)."""
    flat = patches.reshape(len(patches), -1, 3).astype(np.int64)
    n = flat.shape[1]
    s1, s2 = flat.sum(1), (flat * flat).sum(1)
    mean = s1 / n
    var = (s2 * n - s1 * s1) / (n * n)
    return np.concatenate([mean, np.sqrt(np.maximum(var, 0))], axis=1) / 255.0


def linear_probe(features: NDArray, labels: NDArray[np.int64], groups: NDArray[np.int64]) -> float:
    """Accuracy of a linear classifier, trained on all seeds but one and tested on it (mean over seeds).

    Features are standardised on the training seeds (a constant feature stays 0);
    multinomial logistic regression, L2 penalty ``C=1``.
    """
    x = np.asarray(features, np.float64)
    scores = []
    for g in np.unique(groups):
        train, test = groups != g, groups == g
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(x[train], labels[train])
        scores.append(float((model.predict(x[test]) == labels[test]).mean()))
    return float(np.mean(scores))
