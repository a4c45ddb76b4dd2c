"""napari reader contribution: whole-slide images as lazy multiscale RGB layers.

Any backend (tiffslide, OpenSlide, wsidicom: see :mod:`napari_regional_mil.slide`); a
folder of DICOM files is one slide. Damaged display tiles become one napari warning per
slide and level (the core's :mod:`~napari_regional_mil.slide.damage` channel).

The layer's ``scale`` is the slide's ``(mpp_y, mpp_x)`` so world coordinates are microns;
its ``metadata`` holds ``slide_path`` (str), ``mpp`` (``(mpp_x, mpp_y)`` or ``None``),
``slide_info`` (:meth:`SlideInfo.to_dict`) and ``warnings`` (list of str). A slide
without an mpp is shown at 1 px = 1 unit with a visible warning.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_regional_mil.errors import SlideError

if TYPE_CHECKING:
    import dask.array as da

    from napari_regional_mil.slide import Slide
    from napari_regional_mil.slide.damage import DamageNotice

__all__ = ["layer_data", "napari_get_reader", "read_slide"]

# Slides behind open layers stay open here (their dask levels read through them).
_OPEN: OrderedDict[str, Slide] = OrderedDict()
_MAX_OPEN = 32

LayerData = tuple["list[da.Array]", dict[str, Any], str]


def _keep_open(slide: Slide) -> None:
    key = str(slide.path)
    old = _OPEN.pop(key, None)
    if old is not None and old is not slide:
        old_pyramid = old._pyramid
        if old_pyramid is None:  # nothing displayed from it: safe to close
            old.close()
    _OPEN[key] = slide
    while len(_OPEN) > _MAX_OPEN:
        _OPEN.popitem(last=False)


def layer_data(slide: Slide) -> LayerData:
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


def _show_damage(notice: DamageNotice) -> None:
    """Damaged tiles (any thread) -> one napari warning notification per slide and level."""
    import napari  # lazy: startup (napari, only when a damaged tile is shown: the reader imports little)
    from napari.utils.notifications import show_warning  # lazy: startup (see above)

    if napari.current_viewer() is not None:  # no viewer left (e.g. a CLI run later in this process): not ours
        show_warning(notice.message)


def _layer_of(slide: Slide) -> LayerData:
    """Keep the slide open, show its warnings (napari notifies them), give its layer."""
    from napari_regional_mil.slide import damage  # lazy: startup (the slide package: the reader stays cheap)

    damage.add_listener(_show_damage)
    _keep_open(slide)
    for text in slide.info.warnings:
        if "mpp" in text:
            warnings.warn(f"{text}; it is shown at 1 px per unit until you set the mpp", stacklevel=3)
        else:
            warnings.warn(text, stacklevel=3)
    return layer_data(slide)


def read_slide(path: str | Path, *, mpp: float | None = None) -> list[LayerData]:
    """Open one slide as napari layer data (raises :class:`SlideError` on bad input)."""
    from napari_regional_mil.slide import open_slide  # lazy: startup (the slide package, when a slide is read)

    return [_layer_of(open_slide(path, mpp=mpp))]


#: Suffixes of slide formats that are not TIFF-based (OpenSlide reads them).
_NON_TIFF_SUFFIXES = (".mrxs", ".vms", ".vmu", ".svslide")


def _looks_like_slide(path: Path) -> bool:
    """Cheap (no library import, a few bytes read): a slide suffix and matching content, or a DICOM folder."""
    from napari_regional_mil.slide import (  # lazy: startup (the slide package: napari_get_reader stays cheap)
        detect,
        formats,
    )

    if path.is_dir():
        return formats.is_dicom_folder(path)
    if not formats.is_slide_file(path) or not path.is_file():
        return False
    if path.suffix.lower() in _NON_TIFF_SUFFIXES:  # the reader says what is wrong, if anything
        return True
    try:
        kind = detect.sniff(path)
    except SlideError:
        return False
    return kind in ("tiff", "dicom") or path.suffix.lower() in _NON_TIFF_SUFFIXES


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader for slides this plugin opens, else ``None`` (cheap: nothing is opened).

    A path is accepted by its suffix (the one list in :mod:`napari_regional_mil.slide.formats`)
    and its first bytes (a TIFF or DICOM signature; MIRAX, VMS/VMU and SVSlide by suffix), or
    as a folder of DICOM files. The reader then opens the slides; one that cannot be opened
    raises a one-line :class:`SlideError`, which napari shows.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_looks_like_slide(Path(p)) for p in paths):
        return None

    def reader(_path: str | list[str]) -> list[LayerData]:
        from napari_regional_mil.slide import open_slide  # lazy: startup (the slide package, when read)

        # only the header: the first frame decodes the smallest level anyway, through the guarded
        # loader (an undecodable tile is flat grey with one notification naming the problem)
        return [_layer_of(open_slide(p, check_pixels=False)) for p in paths]

    return reader
