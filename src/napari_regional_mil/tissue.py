"""Tissue detection on a low-resolution level of a slide (core, no Qt).

Otsu's threshold on the saturation (or the optical density) of a ~1-2k px overview,
clamped to a sane range so that a slide that is nearly all tissue or nearly all glass
is not split in the wrong place, then a small morphological clean-up (closing,
opening), hole filling and removal of objects below a minimum area.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["TissueMask", "detect_tissue", "otsu_threshold", "METHODS"]

Method = Literal["otsu-saturation", "otsu-od"]
#: Available methods and the range the Otsu threshold is clamped to.
METHODS: dict[str, tuple[float, float]] = {"otsu-saturation": (0.04, 0.10), "otsu-od": (0.065, 0.09)}


@dataclass(frozen=True, eq=False)
class TissueMask:
    """A boolean tissue mask over the whole slide at low resolution.

    Parameters
    ----------
    mask
        ``(h, w)`` bool, True on tissue. It covers all of level 0.
    downsample
        ``(downsample_x, downsample_y)``: level-0 pixels per mask pixel along x and y
        (``width / w``, ``height / h``; the two may differ slightly).
    mpp
        ``(mpp_x, mpp_y)`` microns per mask pixel, ``None`` when the slide's mpp is unknown.
    threshold
        The threshold applied (after clamping), in the method's units.
    method
        The method used (``"user"`` for a mask made from a user-edited array).
    """

    mask: np.ndarray
    downsample: tuple[float, float]
    mpp: tuple[float, float] | None = None
    threshold: float = float("nan")
    method: str = "otsu-saturation"

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the mask."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def with_mask(self, edited: np.ndarray) -> TissueMask:
        """The same geometry with a user-edited mask (bool, or labels: > 0 is tissue).

        Raises
        ------
        ValueError
            When ``edited`` does not have this mask's shape.
        """
        arr = np.asarray(edited)
        if arr.shape != self.mask.shape:
            raise ValueError(f"edited mask has shape {arr.shape}, expected {self.mask.shape}")
        return TissueMask(arr > 0, self.downsample, self.mpp, self.threshold, "user")


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximised)."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau across a gap:
    return float(edges[(int(best[0]) + int(best[-1])) // 2 + 1])  # take its middle


def _feature(rgb: np.ndarray, method: str) -> np.ndarray:
    from .slide.damage import GREY

    img = rgb.astype(np.float32)
    damaged = (rgb == GREY).all(axis=-1)  # the flat grey of tiles that could not be decoded
    if method == "otsu-saturation":
        mx, mn = img.max(axis=-1), img.min(axis=-1)
        sat = (mx - mn) / np.maximum(mx, 1.0)
        sat[(mx < 25) | damaged] = 0.0  # black borders / pen are not tissue
        return sat
    od = -np.log((img + 1.0) / 256.0).mean(axis=-1)
    od[(img.max(axis=-1) < 25) | damaged] = 0.0
    return od


def _disk(radius: int) -> np.ndarray:
    r = max(0, int(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r + r


def _overview(slide, target_size: int) -> np.ndarray:
    """The coarsest display level whose longer side is >= target_size (else level 0)."""
    pyramid = slide.display_pyramid()
    chosen = pyramid[0]
    for level in pyramid:
        if max(level.shape[:2]) >= target_size:
            chosen = level
    try:
        return np.asarray(chosen.compute() if hasattr(chosen, "compute") else chosen)
    except Exception as exc:  # a corrupt tile: codecs raise their own types
        from .errors import SlideError
        from .slide._checks import one_line

        raise SlideError(f"{getattr(slide, 'path', 'slide')}: cannot read the overview for tissue detection "
                         f"({one_line(exc)})") from exc


def detect_tissue(
    slide,
    *,
    target_size: int = 1024,
    method: Method = "otsu-saturation",
    min_area_um2: float = 2_500.0,
    min_area_fraction: float = 5e-4,
    fill_holes: bool = True,
    smooth_px: float = 1.0,
    closing_um: float = 8.0,
    mpp: float | None = None,
) -> TissueMask:
    """Find tissue on a low-resolution overview of ``slide``.

    Parameters
    ----------
    slide
        An opened :class:`~napari_regional_mil.slide.Slide`.
    target_size
        The overview is the coarsest display level whose longer side is at least this
        many px (level 0 for smaller slides).
    method
        ``"otsu-saturation"`` (H&E, IHC) or ``"otsu-od"`` (optical density).
    min_area_um2
        Remove tissue objects smaller than this (um^2); used when the mpp is known.
    min_area_fraction
        Without an mpp: remove objects smaller than this fraction of the slide area.
    fill_holes
        Fill holes enclosed by tissue.
    smooth_px
        Gaussian smoothing (overview px) of the feature before thresholding.
    closing_um
        Radius of the morphological closing (um; 2 overview px without an mpp).
    mpp
        Level-0 microns per pixel to use instead of the slide's (optional).

    Returns
    -------
    TissueMask
        Empty (all False) when there is no tissue.
    """
    from scipy import ndimage

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    rgb = _overview(slide, int(target_size))
    h, w = rgb.shape[:2]
    width, height = slide.info.dimensions
    ds = (width / w, height / h)
    level0_mpp = (float(mpp), float(mpp)) if mpp is not None else slide.info.mpp
    mask_mpp = (level0_mpp[0] * ds[0], level0_mpp[1] * ds[1]) if level0_mpp else None

    feature = _feature(rgb, method)
    if smooth_px > 0:
        feature = ndimage.gaussian_filter(feature, smooth_px, mode="nearest")
    lo, hi = METHODS[method]
    threshold = float(np.clip(otsu_threshold(feature), lo, hi))
    mask = feature > threshold

    radius = round(closing_um / float(np.mean(mask_mpp))) if mask_mpp else 2
    radius = int(np.clip(radius, 1, 8))
    if mask.any():
        padded = np.pad(mask, radius + 1)
        padded = ndimage.binary_closing(padded, _disk(radius))
        padded = ndimage.binary_opening(padded, _disk(1))
        mask = padded[radius + 1 : -radius - 1, radius + 1 : -radius - 1]
        if fill_holes:
            mask = ndimage.binary_fill_holes(mask)
        min_px = (min_area_um2 / (mask_mpp[0] * mask_mpp[1])) if mask_mpp else min_area_fraction * h * w
        labels, n = ndimage.label(mask)
        if n:
            areas = np.bincount(labels.ravel())
            keep = areas >= min_px
            keep[0] = False
            mask = keep[labels]
    return TissueMask(np.ascontiguousarray(mask, dtype=bool), ds, mask_mpp, threshold, method)
