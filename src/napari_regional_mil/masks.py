"""Tissue mask files: a painted (or detected) mask saved, loaded and checked against a slide.

A mask file is an 8-bit greyscale PNG (or TIFF) covering the **whole slide** at low
resolution: non-zero = tissue. A mask saved by this package also carries the slide's
level-0 size and name in a PNG text chunk, so loading it for another slide is refused; a
mask painted elsewhere (no such chunk) is accepted when its aspect ratio matches the
slide's within 2 %.

>>> save_mask("slide.tissue.png", tissue, slide_dimensions=(2220, 2967), slide_name="slide")  # doctest: +SKIP
>>> tissue = load_mask("slide.tissue.png", slide_dimensions=(2220, 2967))                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path
from .errors import TilingError
from .tissue import TissueMask

__all__ = ["MASK_SUFFIXES", "TEXT_KEY", "load_mask", "save_mask"]

#: File suffixes a mask may have (saved as PNG; TIFF accepted when loading).
MASK_SUFFIXES = (".png", ".tif", ".tiff")
#: The PNG text chunk holding the slide the mask was made for.
TEXT_KEY = "napari-regional-mil.tissue-mask"


def save_mask(
    path: str | os.PathLike[str],
    mask: TissueMask | np.ndarray,
    *,
    slide_dimensions: tuple[int, int],
    slide_name: str | None = None,
) -> Path:
    """Write a tissue mask covering the whole slide as an 8-bit PNG (255 = tissue), atomically.

    Parameters
    ----------
    path
        The ``.png`` file.
    mask
        A :class:`~napari_regional_mil.tissue.TissueMask`, or a 2-D array (bool, or labels:
        > 0 is tissue, e.g. a painted napari Labels layer).
    slide_dimensions
        ``(width, height)`` of the slide's level 0 (recorded in the file).
    slide_name
        The slide's name (recorded).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    TilingError
        The mask is not a non-empty 2-D array.
    """
    path = Path(path)
    pixels = np.asarray(mask.mask if isinstance(mask, TissueMask) else mask)
    if pixels.ndim != 2 or pixels.size == 0:
        raise TilingError(f"{path}: a tissue mask must be a non-empty 2-D array, got shape {pixels.shape}")
    info = PngInfo()
    record = {"slide_dimensions": [int(v) for v in slide_dimensions], "slide_name": slide_name,
              "method": getattr(mask, "method", "user")}
    info.add_text(TEXT_KEY, json.dumps(record))
    image = Image.fromarray(np.where(pixels > 0, 255, 0).astype(np.uint8), mode="L")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info, optimize=True)
    return path


def load_mask(path: str | os.PathLike[str], *, slide_dimensions: tuple[int, int]) -> TissueMask:
    """Read a mask file for a slide of level-0 size ``slide_dimensions`` (``(width, height)``).

    Returns
    -------
    TissueMask
        The mask (method ``"user"``), placed over the whole slide.

    Raises
    ------
    TilingError
        Missing or unreadable file, not a 2-D image, empty (no tissue), or made for a
        slide of another size / aspect ratio; one line naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}) or {}
            pixels = np.asarray(image)
    except FileNotFoundError:
        raise TilingError(f"{path}: no such tissue mask file") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise TilingError(f"{path}: not a readable mask image ({' '.join(str(exc).split())})") from None
    if pixels.ndim == 3:  # an RGB(A) export of a painting: any non-black pixel is tissue
        pixels = pixels[..., :3].max(axis=-1)
    if pixels.ndim != 2 or pixels.size == 0:
        raise TilingError(f"{path}: a tissue mask must be a 2-D image, got shape {pixels.shape}")
    width, height = (int(v) for v in slide_dimensions)
    recorded = _recorded_dimensions(text.get(TEXT_KEY))
    if recorded is not None and recorded != (width, height):
        raise TilingError(
            f"{path}: the mask was made for a {recorded[0]} x {recorded[1]} px slide, "
            f"not this {width} x {height} px one"
        )
    rows, cols = pixels.shape
    if abs((cols / rows) / (width / height) - 1) > 0.02:
        raise TilingError(
            f"{path}: the mask ({cols} x {rows} px) does not have the slide's aspect ratio ({width} x {height} px); "
            "a mask must cover the whole slide"
        )
    mask = pixels > 0
    if not mask.any():
        raise TilingError(f"{path}: the mask marks no tissue")
    return TissueMask(np.ascontiguousarray(mask), (width / cols, height / rows), None, method="user")


def _recorded_dimensions(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        dims = json.loads(text).get("slide_dimensions")
        return (int(dims[0]), int(dims[1]))
    except (ValueError, TypeError, AttributeError, IndexError):
        return None
