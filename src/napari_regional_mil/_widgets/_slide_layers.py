"""The slide layer in a napari viewer and the placement of the layers derived from it.

Every layer lies in napari world coordinates ``(y, x)`` in microns: a layer's ``scale`` is
the level-0 ``(mpp_y, mpp_x)`` times its pixel step, and napari puts pixel *centres* on
integer multiples of it. A level-0 pixel-*corner* coordinate ``u`` therefore sits at world
``(u - 0.5) * mpp``. Grid outlines are drawn in level-0 pixel-corner coordinates with
``scale = mpp`` and ``translate = -mpp / 2``; a mask or grid image whose pixel covers
``d`` level-0 pixels has ``scale = d * mpp`` and ``translate = (d - 1) / 2 * mpp``.

The slide layer's ``metadata`` holds ``slide_path`` (str), ``mpp`` (``(mpp_x, mpp_y)`` or
``None``), ``slide_info`` (the :class:`~napari_regional_mil.slide.info.SlideInfo` as a
dict) and, once the Slide widget tiled it, ``tiling_params`` (a dict of
:class:`~napari_regional_mil.tiling.TilingParams`); the Embed widget reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image

from napari_regional_mil import _reader, geometry
from napari_regional_mil._widgets._selection import adding_quietly
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tiling import Tiling, TilingParams

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from napari.layers import Layer

    from napari_regional_mil.slide import Slide, SlideInfo

__all__ = [
    "SLIDE_PATH_KEY",
    "add_slide_layer",
    "find_slide_layer",
    "layer_mpp",
    "open_slide_of",
    "placement",
    "set_slide_mpp",
    "show_slide_layer",
    "slide_layers",
    "slide_path_of",
    "tiling_of",
    "tiling_params_of",
]

SLIDE_PATH_KEY = "slide_path"

# -- the slide layer ------------------------------------------------------------------------
def slide_path_of(layer: Layer) -> Path | None:
    """The slide file behind a layer (from its metadata), or ``None``."""
    meta = getattr(layer, "metadata", None) or {}
    path = meta.get(SLIDE_PATH_KEY) or (meta.get("regional_mil") or {}).get(SLIDE_PATH_KEY)
    return Path(path) if path else None


def slide_layers(viewer: ViewerModel) -> list[Image]:
    """The viewer's slide layers, in order.

    Image layers whose metadata names a slide and that are not derived from one (overlays
    carry ``derived_from``).
    """
    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and slide_path_of(layer) and "derived_from" not in layer.metadata
    ]


def find_slide_layer(viewer: ViewerModel) -> Image | None:
    """The active layer when it is a slide layer, else the topmost slide layer, else ``None``."""
    active = viewer.layers.selection.active
    if active is not None and active in slide_layers(viewer):
        return active
    layers = slide_layers(viewer)
    return layers[-1] if layers else None


def layer_mpp(layer: Layer) -> tuple[float, float] | None:
    """``(mpp_x, mpp_y)`` recorded on a slide layer, or ``None``."""
    mpp = (getattr(layer, "metadata", None) or {}).get("mpp")
    if mpp is None:
        return None
    if np.isscalar(mpp):
        return (float(mpp), float(mpp))
    return (float(mpp[0]), float(mpp[1]))


def tiling_params_of(layer: Layer) -> TilingParams | None:
    """The tiling parameters recorded on a slide layer by the Slide widget, or ``None``."""
    raw = (getattr(layer, "metadata", None) or {}).get("tiling_params")
    if not raw:
        return None
    try:
        return TilingParams(**raw)
    except TypeError:
        return None


def tiling_of(layer: Layer) -> Tiling | None:
    """The :class:`~napari_regional_mil.tiling.Tiling` recorded on a slide layer, or ``None``.

    The Slide or Cohort widget records it in ``metadata["tiling"]``.
    """
    tiling = (getattr(layer, "metadata", None) or {}).get("tiling")
    return tiling if isinstance(tiling, Tiling) else None


def _info_dict(info: SlideInfo) -> dict[str, Any]:
    to_dict = getattr(info, "to_dict", None)
    return to_dict() if callable(to_dict) else dict(getattr(info, "__dict__", {}))


def make_slide_layer(layer_data: _reader.LayerData) -> Image:
    """The napari Image layer of the reader's layer data, not yet in a viewer.

    Call it in a worker: making a layer model slices its data; only adding it is left to the GUI thread.
    """
    data, kwargs, _ = layer_data
    return Image(data, **kwargs)


def show_slide_layer(viewer: ViewerModel, layer: Image | _reader.LayerData) -> Image:
    """Add a slide layer, or return the layer already showing that slide.

    ``layer`` comes from :func:`make_slide_layer`, or is the reader's layer data. Adding it
    leaves the selection as it was: the caller makes it active (:func:`._selection.activate_soon`).
    """
    if isinstance(layer, tuple):
        layer = make_slide_layer(layer)
    path = slide_path_of(layer)
    for existing in slide_layers(viewer):
        if slide_path_of(existing) == path:
            return existing
    with adding_quietly(viewer):
        return viewer.add_layer(layer)


def add_slide_layer(viewer: ViewerModel, slide: Slide, *, mpp: tuple[float, float] | None = None) -> Image:
    """Add a slide as a lazy multiscale RGB layer, or update the layer already showing it.

    The layer is the reader's (:func:`napari_regional_mil._reader.layer_data`), so a slide
    opened from the widget and one dropped on the viewer are alike; the slide stays open
    while its layer may read from it.

    Parameters
    ----------
    viewer
        The napari viewer.
    slide
        An opened :class:`~napari_regional_mil.slide.Slide`.
    mpp
        ``(mpp_x, mpp_y)`` to use instead of the slide's (``None``: the slide's; a slide
        without any is shown at 1 um/px until the user gives one).

    Returns
    -------
    napari.layers.Image
        The slide layer.
    """
    path = Path(slide.info.path)
    for layer in slide_layers(viewer):
        if slide_path_of(layer) == path:
            layer.metadata.update({"slide_info": _info_dict(slide.info)})
            set_slide_mpp(viewer, layer, mpp if mpp is not None else layer_mpp(layer) or slide.info.mpp)
            return layer
    _reader._keep_open(slide)
    layer = show_slide_layer(viewer, _reader.layer_data(slide))
    viewer.layers.selection.active = layer
    if mpp is not None:
        set_slide_mpp(viewer, layer, mpp)
    return layer


def open_slide_of(layer: Layer) -> Slide:
    """The open :class:`~napari_regional_mil.slide.Slide` behind a slide layer (opened if needed)."""
    path = slide_path_of(layer)
    slide = _reader._OPEN.get(str(path))
    if slide is None or getattr(slide, "_closed", False):
        slide = open_slide(path)
        _reader._keep_open(slide)
    return slide


def _by_name(viewer: ViewerModel, name: str) -> Layer | None:
    return next((layer for layer in viewer.layers if layer.name == name), None)


def _derived_name(slide_layer: Layer, what: str) -> str:
    return f"{what} ({slide_layer.name})"


def set_slide_mpp(viewer: ViewerModel, slide_layer: Layer, mpp: tuple[float, float] | None) -> None:
    """Set a slide layer's mpp and rescale it and the layers derived from it.

    The tissue and grid layers keep their level-0 geometry in ``metadata['level0_step']``
    (level-0 pixels per layer pixel, ``(y, x)``) so they follow.
    """
    slide_layer.metadata["mpp"] = mpp
    sx, sy = mpp if mpp is not None else (1.0, 1.0)
    slide_layer.scale = (sy, sx)
    slide_layer.units = ("um", "um") if mpp is not None else ("pixel", "pixel")
    units = _units(slide_layer)
    for layer in viewer.layers:
        meta = layer.metadata or {}
        if meta.get("derived_from") == slide_layer.name and "level0_step" in meta:
            _place(layer, meta["level0_step"], mpp, corner=meta.get("corner", False), units=units)


def _units(slide_layer: Layer) -> tuple[Any, ...]:
    """The slide layer's own napari ``units`` (its last two axes).

    Every layer derived from it takes them, so napari never sees inconsistent units across layers.
    """
    units = getattr(slide_layer, "units", None)
    if units is not None and len(units) >= 2:
        return tuple(units[-2:])
    return ("um", "um") if layer_mpp(slide_layer) is not None else ("pixel", "pixel")


def placement(step: tuple[float, float], mpp: tuple[float, float] | None, *, corner: bool) -> dict[str, tuple]:
    """``scale`` and ``translate`` of a layer whose pixel covers ``step`` ``(y, x)`` level-0 pixels.

    ``mpp`` is the slide's ``(mpp_x, mpp_y)`` (``None``: unknown, 1 unit per level-0 pixel).
    ``corner``: the layer's data are level-0 pixel-corner coordinates (grid outlines);
    otherwise it is an image placed by :func:`~napari_regional_mil.geometry.grid_layer_transform`.
    """
    sx, sy = mpp if mpp is not None else (1.0, 1.0)
    if corner:
        return {"scale": (step[0] * sy, step[1] * sx), "translate": (-0.5 * sy, -0.5 * sx)}
    transform = geometry.grid_layer_transform((step[1], step[0]), (sx, sy))
    return {"scale": tuple(transform["scale"]), "translate": tuple(transform["translate"])}


def _place(layer: Layer, step: tuple[float, float], mpp: tuple[float, float] | None, *, corner: bool,
           units: Any = None) -> None:
    """Scale/translate (and give ``units``) to an existing layer, touching only what changed.

    Every change refreshes the layer.
    """
    where = placement(step, mpp, corner=corner)
    if units is None:
        units = ("um", "um") if mpp is not None else ("pixel", "pixel")
    if tuple(layer.units) != tuple(_as_units(units)):
        layer.units = units
    for attr in ("scale", "translate"):
        if not np.allclose(getattr(layer, attr), where[attr]):
            setattr(layer, attr, where[attr])


def _as_units(units: Any) -> tuple[Any, ...]:
    """``units`` as pint units (so they compare with a layer's).

    As given when napari's (private) converter is not there, so the layer's units are then always set.
    """
    try:
        from napari.utils.transforms._units import get_units_from_name  # lazy: startup (pint; private)
    except ImportError:
        return tuple(units)
    return tuple(get_units_from_name(u) if isinstance(u, str) else u for u in units)


def _derived(viewer: ViewerModel, slide_layer: Layer, what: str, step: tuple[float, float], corner: bool) -> dict:
    return {
        "derived_from": slide_layer.name,
        SLIDE_PATH_KEY: str(slide_path_of(slide_layer)),
        "level0_step": (float(step[0]), float(step[1])),
        "corner": corner,
        "what": what,
    }
