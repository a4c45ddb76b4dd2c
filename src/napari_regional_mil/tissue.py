"""Tissue detection on a low-resolution level of a slide (core, no Qt), with scikit-image.

A feature of a ~1-2k px overview (the saturation, or the optical density), thresholded
either by Otsu's method (clamped to a sane range so that a slide that is nearly all
tissue or nearly all glass is not split in the wrong place) or at a fixed value; then a
morphological closing of a chosen size, a small opening, hole filling and removal of
objects below a minimum area. The options are a :class:`TissueOptions` (the CLI's
``--tissue-*`` flags and the Slide widget's tissue box).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from .errors import SlideError
from .slide import Slide
from .slide._checks import one_line
from .slide.damage import GREY

__all__ = ["METHODS", "TissueMask", "TissueOptions", "detect_tissue"]

Method = Literal["otsu-saturation", "otsu-od", "threshold-saturation", "threshold-od"]
#: The methods: ``(feature, range the Otsu threshold is clamped to or None for a fixed threshold)``.
METHODS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "otsu-saturation": ("saturation", (0.04, 0.10)),
    "otsu-od": ("od", (0.065, 0.09)),
    "threshold-saturation": ("saturation", None),
    "threshold-od": ("od", None),
}
#: The closing's radius is at most this many overview pixels (a larger one joins tissue across the slide).
MAX_CLOSING_PX = 64
#: The fixed threshold used by the ``threshold-*`` methods when none is given.
DEFAULT_THRESHOLDS: dict[str, float] = {"saturation": 0.07, "od": 0.08}


@dataclass(frozen=True)
class TissueOptions:
    """How tissue is found.

    Parameters
    ----------
    method
        ``"otsu-saturation"`` (H&E, IHC), ``"otsu-od"`` (optical density), or
        ``"threshold-saturation"`` / ``"threshold-od"`` (a fixed ``threshold``).
    threshold
        The fixed threshold of the ``threshold-*`` methods (saturation 0..1, or optical
        density); ``None``: 0.07 (saturation), 0.08 (optical density).
    min_area_um2
        Remove tissue objects smaller than this (um^2); a fraction of the slide area
        (``min_area_fraction``) without an mpp.
    closing_um
        Radius of the morphological closing that joins nearby tissue (um; 2 overview px
        without an mpp). 0 turns it off.
    fill_holes
        Fill holes enclosed by tissue.
    """

    method: Method = "otsu-saturation"
    threshold: float | None = None
    min_area_um2: float = 2_500.0
    closing_um: float = 8.0
    fill_holes: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"tissue method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.threshold is not None and not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"tissue threshold must be a number >= 0, got {self.threshold!r}")
        if not (np.isfinite(self.min_area_um2) and self.min_area_um2 >= 0):
            raise ValueError(f"minimum tissue area must be >= 0 um^2, got {self.min_area_um2!r}")
        if not (np.isfinite(self.closing_um) and self.closing_um >= 0):
            raise ValueError(f"closing size must be >= 0 um, got {self.closing_um!r}")

    @property
    def is_default(self) -> bool:
        """Whether these are the default options (the cache key then stays as it always was)."""
        return self == TissueOptions()

    def to_dict(self) -> dict[str, object]:
        """A JSON-able description (for cache keys and store attributes)."""
        return asdict(self)


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


def _feature(rgb: np.ndarray, feature: str) -> np.ndarray:
    """Saturation (HSV, via scikit-image) or mean optical density of an RGB overview."""
    from skimage.color import rgb2hsv  # lazy: startup (scikit-image when tissue is detected; tiling imports this)

    img = rgb.astype(np.float32)
    dark = img.max(axis=-1) < 25  # black borders / pen are not tissue
    damaged = (rgb == GREY).all(axis=-1)  # the flat grey of tiles that could not be decoded
    if feature == "saturation":
        values = rgb2hsv(rgb)[..., 1].astype(np.float32)
    else:
        values = -np.log((img + 1.0) / 256.0).mean(axis=-1)
    values[dark | damaged] = 0.0
    return values


def _overview(slide: Slide, target_size: int) -> np.ndarray:
    """The coarsest display level whose longer side is >= target_size (else level 0)."""
    pyramid = slide.display_pyramid()
    chosen = pyramid[0]
    for level in pyramid:
        if max(level.shape[:2]) >= target_size:
            chosen = level
    try:
        return np.asarray(chosen.compute() if hasattr(chosen, "compute") else chosen)
    except Exception as exc:  # a corrupt tile: codecs raise their own types
        raise SlideError(f"{getattr(slide, 'path', 'slide')}: cannot read the overview for tissue detection "
                         f"({one_line(exc)})") from exc


def detect_tissue(
    slide: Slide,
    options: TissueOptions | None = None,
    *,
    target_size: int = 1024,
    method: Method | None = None,
    threshold: float | None = None,
    min_area_um2: float | None = None,
    min_area_fraction: float = 5e-4,
    fill_holes: bool | None = None,
    smooth_px: float = 1.0,
    closing_um: float | None = None,
    mpp: float | None = None,
) -> TissueMask:
    """Find tissue on a low-resolution overview of ``slide``.

    Parameters
    ----------
    slide
        An opened :class:`~napari_regional_mil.slide.Slide`.
    options
        Method, threshold, minimum area, closing size, hole filling (default:
        :class:`TissueOptions`); the keywords below override single fields.
    target_size
        The overview is the coarsest display level whose longer side is at least this
        many px (level 0 for smaller slides).
    method, threshold, min_area_um2, fill_holes, closing_um
        Override the fields of ``options`` of the same names.
    min_area_fraction
        Without an mpp: remove objects smaller than this fraction of the slide area.
    smooth_px
        Gaussian smoothing (overview px) of the feature before thresholding.
    mpp
        Level-0 microns per pixel to use instead of the slide's (optional).

    Returns
    -------
    TissueMask
        Empty (all False) when there is no tissue.

    Raises
    ------
    ValueError
        An unknown method or a bad option.
    """
    from scipy import ndimage  # lazy: startup (scipy and scikit-image when tissue is detected)
    from skimage.filters import gaussian, threshold_otsu  # lazy: startup (scikit-image)
    from skimage.morphology import closing, disk, opening, remove_small_objects  # lazy: startup (scikit-image)

    base = options or TissueOptions()
    opts = replace(
        base,
        method=method if method is not None else base.method,
        threshold=threshold if threshold is not None else base.threshold,
        min_area_um2=min_area_um2 if min_area_um2 is not None else base.min_area_um2,
        fill_holes=fill_holes if fill_holes is not None else base.fill_holes,
        closing_um=closing_um if closing_um is not None else base.closing_um,
    )
    feature_name, clamp = METHODS[opts.method]
    rgb = _overview(slide, int(target_size))
    h, w = rgb.shape[:2]
    width, height = slide.info.dimensions
    ds = (width / w, height / h)
    level0_mpp = (float(mpp), float(mpp)) if mpp is not None else slide.info.mpp
    mask_mpp = (level0_mpp[0] * ds[0], level0_mpp[1] * ds[1]) if level0_mpp else None

    feature = _feature(rgb, feature_name)
    if smooth_px > 0:
        feature = gaussian(feature, sigma=smooth_px, mode="nearest", preserve_range=True)
    if clamp is None:
        cut = opts.threshold if opts.threshold is not None else DEFAULT_THRESHOLDS[feature_name]
    else:
        cut = float(np.clip(threshold_otsu(feature) if np.ptp(feature) > 0 else feature.flat[0], *clamp))
    mask = feature > cut

    if opts.closing_um > 0:
        radius = round(opts.closing_um / float(np.mean(mask_mpp))) if mask_mpp else 2
        radius = int(np.clip(radius, 1, MAX_CLOSING_PX))
    else:
        radius = 0
    if mask.any():
        pad = radius + 1
        padded = np.pad(mask, pad)  # the closing must not join tissue to the slide's border
        if radius:
            padded = closing(padded, disk(radius))
        padded = opening(padded, disk(1))
        mask = padded[pad:-pad, pad:-pad]
        if opts.fill_holes:
            mask = ndimage.binary_fill_holes(mask)
        min_px = (opts.min_area_um2 / (mask_mpp[0] * mask_mpp[1])) if mask_mpp else min_area_fraction * h * w
        if min_px >= 1:  # objects of fewer than min_px pixels go
            mask = remove_small_objects(mask, max_size=int(np.ceil(min_px)) - 1)
    return TissueMask(np.ascontiguousarray(mask, dtype=bool), ds, mask_mpp, float(cut), opts.method)
