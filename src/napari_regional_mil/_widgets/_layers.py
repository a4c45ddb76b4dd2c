"""Slide layers in a napari viewer: the slide, its tissue mask, its grids, the PCA overlay.

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
from typing import Any

import numpy as np

from napari_regional_mil import geometry
from napari_regional_mil.tiling import Tiling, TilingParams

__all__ = [
    "SLIDE_PATH_KEY",
    "find_slide_layer",
    "slide_layers",
    "slide_path_of",
    "layer_mpp",
    "tiling_params_of",
    "add_slide_layer",
    "open_slide_of",
    "set_slide_mpp",
    "show_tissue_mask",
    "read_tissue_mask",
    "tissue_layer_of",
    "tissue_mask_of",
    "outline_segments",
    "show_grids",
    "show_grid_rgba",
]

SLIDE_PATH_KEY = "slide_path"
_PATCH_COLOUR = "#7fd6ff"
_REGION_COLOUR = "#ffd400"
_TISSUE_COLOUR = "#00d7ff"


# -- the slide layer ------------------------------------------------------------------------
def slide_path_of(layer: Any) -> Path | None:
    """The slide file behind a layer (from its metadata), or ``None``."""
    meta = getattr(layer, "metadata", None) or {}
    path = meta.get(SLIDE_PATH_KEY) or (meta.get("regional_mil") or {}).get(SLIDE_PATH_KEY)
    return Path(path) if path else None


def slide_layers(viewer: Any) -> list[Any]:
    """The viewer's slide layers, in order: Image layers whose metadata names a slide and
    that are not derived from one (overlays carry ``derived_from``)."""
    from napari.layers import Image

    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and slide_path_of(layer) and "derived_from" not in layer.metadata
    ]


def find_slide_layer(viewer: Any) -> Any | None:
    """The active layer when it is a slide layer, else the topmost slide layer, else ``None``."""
    active = viewer.layers.selection.active
    if active is not None and active in slide_layers(viewer):
        return active
    layers = slide_layers(viewer)
    return layers[-1] if layers else None


def layer_mpp(layer: Any) -> tuple[float, float] | None:
    """``(mpp_x, mpp_y)`` recorded on a slide layer, or ``None``."""
    mpp = (getattr(layer, "metadata", None) or {}).get("mpp")
    if mpp is None:
        return None
    if np.isscalar(mpp):
        return (float(mpp), float(mpp))
    return (float(mpp[0]), float(mpp[1]))


def tiling_params_of(layer: Any) -> TilingParams | None:
    """The tiling parameters recorded on a slide layer by the Slide widget, or ``None``."""
    raw = (getattr(layer, "metadata", None) or {}).get("tiling_params")
    if not raw:
        return None
    try:
        return TilingParams(**raw)
    except TypeError:
        return None


def _info_dict(info: Any) -> dict[str, Any]:
    to_dict = getattr(info, "to_dict", None)
    return to_dict() if callable(to_dict) else dict(getattr(info, "__dict__", {}))


def add_slide_layer(viewer: Any, slide: Any, *, mpp: tuple[float, float] | None = None) -> Any:
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
    from napari_regional_mil._reader import _keep_open, layer_data

    path = Path(slide.info.path)
    for layer in slide_layers(viewer):
        if slide_path_of(layer) == path:
            layer.metadata.update({"slide_info": _info_dict(slide.info)})
            set_slide_mpp(viewer, layer, mpp if mpp is not None else layer_mpp(layer) or slide.info.mpp)
            return layer
    _keep_open(slide)
    data, kwargs, _ = layer_data(slide)
    layer = viewer.add_image(data, **kwargs)
    if mpp is not None:
        set_slide_mpp(viewer, layer, mpp)
    return layer


def open_slide_of(layer: Any) -> Any:
    """The open :class:`~napari_regional_mil.slide.Slide` behind a slide layer (opened if needed)."""
    from napari_regional_mil._reader import _OPEN, _keep_open
    from napari_regional_mil.slide import open_slide

    path = slide_path_of(layer)
    slide = _OPEN.get(str(path))
    if slide is None or getattr(slide, "_closed", False):
        slide = open_slide(path)
        _keep_open(slide)
    return slide


def _by_name(viewer: Any, name: str) -> Any | None:
    return viewer.layers[name] if name in viewer.layers else None


def _derived_name(slide_layer: Any, what: str) -> str:
    return f"{what} ({slide_layer.name})"


def set_slide_mpp(viewer: Any, slide_layer: Any, mpp: tuple[float, float] | None) -> None:
    """Set a slide layer's mpp and rescale it and the layers derived from it.

    The tissue and grid layers keep their level-0 geometry in ``metadata['level0_step']``
    (level-0 pixels per layer pixel, ``(y, x)``) so they follow.
    """
    slide_layer.metadata["mpp"] = mpp
    sx, sy = mpp if mpp is not None else (1.0, 1.0)
    slide_layer.scale = (sy, sx)
    slide_layer.units = ("um", "um") if mpp is not None else ("pixel", "pixel")
    for layer in viewer.layers:
        meta = layer.metadata or {}
        if meta.get("derived_from") == slide_layer.name and "level0_step" in meta:
            _place(layer, meta["level0_step"], mpp, corner=meta.get("corner", False))


def _units(slide_layer: Any) -> tuple[str, str]:
    """napari ``units`` of the layers of a slide: microns when its mpp is known."""
    return ("um", "um") if layer_mpp(slide_layer) is not None else ("pixel", "pixel")


def _place(layer: Any, step: tuple[float, float], mpp: tuple[float, float] | None, *, corner: bool) -> None:
    """Scale/translate a layer whose pixel covers ``step`` ``(y, x)`` level-0 pixels.

    ``mpp`` is the slide's ``(mpp_x, mpp_y)`` (``None``: unknown, 1 unit per level-0 pixel).
    ``corner``: the layer's data are level-0 pixel-corner coordinates (grid outlines);
    otherwise it is an image placed by :func:`~napari_regional_mil.geometry.grid_layer_transform`.
    """
    sx, sy = mpp if mpp is not None else (1.0, 1.0)
    if corner:
        layer.scale = (step[0] * sy, step[1] * sx)
        layer.translate = (-0.5 * sy, -0.5 * sx)
    else:
        transform = geometry.grid_layer_transform((step[1], step[0]), (sx, sy))
        layer.scale = transform["scale"]
        layer.translate = transform["translate"]
    layer.units = ("um", "um") if mpp is not None else ("pixel", "pixel")  # as the slide layer


def _derived(viewer: Any, slide_layer: Any, what: str, step: tuple[float, float], corner: bool) -> dict:
    return {
        "derived_from": slide_layer.name,
        SLIDE_PATH_KEY: str(slide_path_of(slide_layer)),
        "level0_step": (float(step[0]), float(step[1])),
        "corner": corner,
        "what": what,
    }


# -- tissue -----------------------------------------------------------------------------------
def show_tissue_mask(viewer: Any, slide_layer: Any, tissue: Any, slide_dimensions: tuple[int, int]) -> Any:
    """Show a low-resolution tissue mask as an editable Labels layer aligned with the slide.

    Parameters
    ----------
    viewer, slide_layer
        The viewer and the slide layer the mask belongs to.
    tissue
        A :class:`~napari_regional_mil.tissue.TissueMask` (its ``mask`` covers level 0).
    slide_dimensions
        ``(width, height)`` of level 0; a mask pixel covers ``height/rows`` x
        ``width/cols`` level-0 pixels (per axis, so the layer's extent equals the slide's).

    Returns
    -------
    napari.layers.Labels
        The layer (label 1 = tissue); painting on it edits the mask tiling uses.
    """
    mask = np.asarray(tissue.mask, dtype=bool)
    width, height = slide_dimensions
    step = (height / mask.shape[0], width / mask.shape[1])
    name = _derived_name(slide_layer, "tissue")
    data = mask.astype(np.uint8)
    meta = _derived(viewer, slide_layer, "tissue", step, corner=False)
    meta["slide_dimensions"] = (int(width), int(height))
    layer = _by_name(viewer, name)
    if layer is None:
        from napari.utils.colormaps import DirectLabelColormap

        colours = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: _TISSUE_COLOUR})
        layer = viewer.add_labels(data, name=name, opacity=0.3, colormap=colours, metadata=meta, units=_units(slide_layer))
    else:
        layer.data = data
        layer.metadata.update(meta)
    _place(layer, step, layer_mpp(slide_layer), corner=False)
    layer.metadata["tissue_mask"] = tissue
    return layer


def read_tissue_mask(layer: Any) -> np.ndarray:
    """The (possibly user-painted) tissue mask of a tissue Labels layer: ``data > 0``."""
    return np.asarray(layer.data) > 0


def tissue_layer_of(viewer: Any, slide_layer: Any) -> Any | None:
    """The tissue Labels layer of a slide layer, or ``None``."""
    name = _derived_name(slide_layer, "tissue")
    layer = _by_name(viewer, name)
    from napari.layers import Labels

    return layer if isinstance(layer, Labels) else None


def tissue_mask_of(viewer: Any, slide_layer: Any, *, only_if_edited: bool = False) -> Any | None:
    """The slide's tissue mask as the user left it on its Labels layer, or ``None``.

    Parameters
    ----------
    viewer, slide_layer
        The viewer and the slide layer.
    only_if_edited
        Return ``None`` when the layer still holds the detected mask unchanged (so a
        job detects tissue itself and its cache key does not depend on the GUI).

    Returns
    -------
    napari_regional_mil.tissue.TissueMask or None
        The detected mask's geometry with the layer's (possibly painted) pixels.
    """
    from napari_regional_mil.tissue import TissueMask

    layer = tissue_layer_of(viewer, slide_layer)
    if layer is None:
        return None
    edited = read_tissue_mask(layer)
    template = layer.metadata.get("tissue_mask")
    if template is not None and template.mask.shape == edited.shape:
        if only_if_edited and np.array_equal(template.mask, edited):
            return None
        return template.with_mask(edited)
    width, height = layer.metadata.get("slide_dimensions", (edited.shape[1], edited.shape[0]))
    return TissueMask(edited, (width / edited.shape[1], height / edited.shape[0]), None, method="user")


# -- grids ------------------------------------------------------------------------------------
def _runs(edge: np.ndarray) -> list[tuple[int, int]]:
    """Start/stop index pairs of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], edge, [False]]).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return list(zip(change[0::2], change[1::2], strict=True))


def outline_segments(occupied: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Line segments outlining every occupied cell of a grid, merged into straight runs.

    Parameters
    ----------
    occupied
        ``(rows, cols)`` boolean: which cells to outline.
    ys, xs
        ``rows + 1`` and ``cols + 1`` coordinates of the cell boundaries.

    Returns
    -------
    numpy.ndarray
        ``(M, 2, 2)`` float64 segments ``[[y0, x0], [y1, x1]]``; a boundary shared by two
        cells is drawn once, collinear neighbouring edges are merged into one segment.
    """
    occ = np.asarray(occupied, dtype=bool)
    rows, cols = occ.shape
    pad = np.zeros((rows + 2, cols + 2), dtype=bool)
    pad[1:-1, 1:-1] = occ
    segs: list[tuple[float, float, float, float]] = []
    for r in range(rows + 1):  # horizontal boundary above row r
        edge = pad[r, 1:-1] | pad[r + 1, 1:-1]
        segs += [(ys[r], xs[a], ys[r], xs[b]) for a, b in _runs(edge)]
    for c in range(cols + 1):  # vertical boundary left of column c
        edge = pad[1:-1, c] | pad[1:-1, c + 1]
        segs += [(ys[a], xs[c], ys[b], xs[c]) for a, b in _runs(edge)]
    return np.asarray(segs, dtype=np.float64).reshape(-1, 2, 2)


def _grid_layer(viewer: Any, slide_layer: Any, what: str, segs: np.ndarray, colour: str, width: float) -> Any:
    """Add/update a Vectors layer of outline segments in level-0 pixel-corner coordinates."""
    vectors = np.stack([segs[:, 0], segs[:, 1] - segs[:, 0]], axis=1)
    name = _derived_name(slide_layer, what)
    meta = _derived(viewer, slide_layer, what, (1.0, 1.0), corner=True)
    layer = _by_name(viewer, name)
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_vectors(
        vectors,
        name=name,
        edge_color=colour,
        edge_width=width,
        vector_style="line",
        opacity=0.9,
        metadata=meta,
        units=_units(slide_layer),
    )
    _place(layer, (1.0, 1.0), layer_mpp(slide_layer), corner=True)
    return layer


def _boundaries(n: int, step: float, *, k: int = 1, clip: int | None = None) -> np.ndarray:
    """Level-0 coordinates ``round(g * step)`` of ``n`` grid lines ``g = 0, k, 2k, ...``."""
    cells = np.arange(n) * k
    if clip is not None:
        cells = np.minimum(cells, clip)
    xy = np.stack([cells, np.zeros_like(cells)], axis=1)
    return geometry.grid_to_level0(xy, step)[:, 0].astype(np.float64)


def show_grids(viewer: Any, slide_layer: Any, tiling: Tiling) -> tuple[Any, Any]:
    """Show the kept patches' grid and their regions' grid as outline layers.

    Outlines are a Vectors layer each (one mesh, fast with many thousands of patches,
    exact: the segments lie on the level-0 grid boundaries ``round(g * s)``). The region
    grid is drawn thicker and in another colour; partial regions at the slide's edge are
    clipped to the patch grid.

    Returns
    -------
    tuple
        ``(patch_grid_layer, region_grid_layer)``.
    """
    n_rows, n_cols = tiling.grid_shape
    s = float(tiling.patch_size_level0)
    k = int(tiling.params.region_size)
    occ = np.zeros((n_rows, n_cols), dtype=bool)
    if tiling.n_patches:
        occ[tiling.grid_xy[:, 1], tiling.grid_xy[:, 0]] = True
    ys, xs = _boundaries(n_rows + 1, s), _boundaries(n_cols + 1, s)
    patch_segs = outline_segments(occ, ys, xs)
    r_rows, r_cols = tiling.region_grid_shape
    rocc = np.zeros((r_rows, r_cols), dtype=bool)
    if tiling.n_regions:
        rocc[tiling.region_xy[:, 1], tiling.region_xy[:, 0]] = True
    rys = _boundaries(r_rows + 1, s, k=k, clip=n_rows)
    rxs = _boundaries(r_cols + 1, s, k=k, clip=n_cols)
    region_segs = outline_segments(rocc, rys, rxs)
    patches = _grid_layer(viewer, slide_layer, "patch grid", patch_segs, _PATCH_COLOUR, max(1.0, 0.03 * s))
    regions = _grid_layer(viewer, slide_layer, "region grid", region_segs, _REGION_COLOUR, max(2.0, 0.1 * s))
    return patches, regions


def show_grid_rgba(viewer: Any, slide_layer: Any, rgba: np.ndarray, step_level0: float, what: str) -> Any:
    """Show an ``(rows, cols, 4)`` RGBA image on a grid of ``step_level0``-px cells.

    Pixel ``(gy, gx)`` is centred on the centre of grid cell ``(gx, gy)``; transparent
    pixels (alpha 0) show the slide through.
    """
    name = _derived_name(slide_layer, what)
    meta = _derived(viewer, slide_layer, what, (step_level0, step_level0), corner=False)
    layer = _by_name(viewer, name)
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_image(
        rgba, rgb=True, name=name, opacity=0.6, metadata=meta, interpolation2d="nearest", units=_units(slide_layer)
    )
    _place(layer, (step_level0, step_level0), layer_mpp(slide_layer), corner=False)
    return layer
