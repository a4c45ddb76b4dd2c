"""napari reader contribution: whole-slide images as lazy multiscale RGB layers.

The layer's ``scale`` is the slide's ``(mpp_y, mpp_x)`` so world coordinates are microns;
its ``metadata`` holds ``slide_path`` (str), ``mpp`` (``(mpp_x, mpp_y)`` or ``None``),
``slide_info`` (:meth:`SlideInfo.to_dict`) and ``warnings`` (list of str). A slide
without an mpp is shown at 1 px = 1 unit with a visible warning.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from napari_regional_mil.errors import SlideError

__all__ = ["napari_get_reader", "read_slide", "layer_data"]

# Slides behind open layers stay open here (their dask levels read through them).
_OPEN: OrderedDict[str, Any] = OrderedDict()
_MAX_OPEN = 32

LayerData = tuple[Any, dict[str, Any], str]


def _keep_open(slide: Any) -> None:
    key = str(slide.path)
    old = _OPEN.pop(key, None)
    if old is not None and old is not slide:
        old_pyramid = old._pyramid
        if old_pyramid is None:  # nothing displayed from it: safe to close
            old.close()
    _OPEN[key] = slide
    while len(_OPEN) > _MAX_OPEN:
        _OPEN.popitem(last=False)


def layer_data(slide: Any) -> LayerData:
    """The ``(data, kwargs, "image")`` layer tuple of an opened slide."""
    info = slide.info
    meta = {
        "slide_path": str(info.path),
        "mpp": info.mpp,
        "slide_info": info.to_dict(),
        "warnings": list(info.warnings),
    }
    kwargs: dict[str, Any] = {
        "multiscale": True,
        "rgb": True,
        "contrast_limits": (0, 255),
        "name": Path(info.path).stem,
        "metadata": meta,
    }
    if info.mpp is not None:
        kwargs["scale"] = (info.mpp[1], info.mpp[0])
        kwargs["units"] = ("um", "um")
    else:
        kwargs["scale"] = (1.0, 1.0)
    return (slide.display_pyramid(), kwargs, "image")


def _layer_of(slide: Any) -> LayerData:
    """Keep the slide open, warn (napari shows it) when it has no usable mpp, give its layer."""
    _keep_open(slide)
    for text in slide.info.warnings:
        if "mpp" in text:
            warnings.warn(f"{text}; it is shown at 1 px per unit until you set the mpp", stacklevel=3)
    return layer_data(slide)


def read_slide(path: str | Path, *, mpp: float | None = None) -> list[LayerData]:
    """Open one slide as napari layer data (raises :class:`SlideError` on bad input)."""
    from napari_regional_mil.slide import open_slide

    return [_layer_of(open_slide(path, mpp=mpp))]


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for slide files this plugin can open, else ``None``.

    Opening is cheap (headers and one small tile), so the check opens the slide; a file
    that cannot be opened gives ``None`` and napari tries its other readers.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        return None
    from napari_regional_mil.slide import open_slide

    opened = []
    for p in paths:
        try:
            opened.append(open_slide(p))
        except SlideError:
            for slide in opened:
                slide.close()
            return None

    def reader(_path: Any) -> list[LayerData]:
        return [_layer_of(slide) for slide in opened]

    return reader
