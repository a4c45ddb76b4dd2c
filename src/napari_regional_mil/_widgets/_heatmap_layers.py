"""napari side of the heatmaps: attention Image layers, thumbnails, camera jumps.

The maths (grids, normalisation, placement) is in :mod:`napari_regional_mil.heatmap`;
this module only turns an :class:`~napari_regional_mil.heatmap.AttentionMaps` into napari
layers aligned with the slide layer and keeps them up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QIcon, QImage, QPixmap

from napari_regional_mil._widgets._selection import adding_quietly
from napari_regional_mil.heatmap import AttentionMaps, GridPlacement, contrast_limits

if TYPE_CHECKING:
    from napari.components import Camera, ViewerModel
    from napari.layers import Image, Vectors

__all__ = [
    "HeatmapSpec",
    "camera_of",
    "heatmap_specs",
    "jump_to",
    "read_thumbnail",
    "remove_unwanted",
    "rgb_icon",
    "show_heatmap_layer",
    "show_selection",
    "sync_heatmap_layers",
]

#: Default colormaps: attention (hot = high), class evidence (diverging).
ATTENTION_COLORMAP = "inferno"
REGION_COLORMAP = "viridis"
EVIDENCE_COLORMAP = "PiYG"


@dataclass(frozen=True)
class HeatmapSpec:
    """One heatmap layer to show: its key, name, data, placement and colormap.

    ``step_level0`` is the level-0 pixels one data pixel covers (for re-placing the layer
    when the slide's mpp changes, see :func:`._layers.set_slide_mpp`).
    """

    key: str
    name: str
    data: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    colormap: str
    contrast_limits: tuple[float, float]
    step_level0: float


def _placed(placement: GridPlacement, offset: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    ty, tx = placement.translate
    return placement.scale, (ty + offset[0], tx + offset[1])


def heatmap_specs(
    maps: AttentionMaps,
    *,
    normalisation: str,
    evidence: bool = False,
    offset: tuple[float, float] = (0.0, 0.0),
    region_on_tissue: bool = False,
) -> list[HeatmapSpec]:
    """The heatmap layers of ``maps`` (region attention first, then patch attention, evidence).

    Plain numpy: call it in a worker. Every layer lies on the patch grid, so the overlays end
    where the slide ends (a region cut by the slide's edge is cut there too).
    ``offset`` is the slide layer's ``translate`` (world microns), added to every layer's;
    ``region_on_tissue`` draws region attention on the tissue patches only.
    """
    name = maps.embeddings.slide_name
    specs = []
    scale, translate = _placed(maps.patch, offset)
    if maps.has_region_attention:
        data = maps.region_image_on_patch_grid(normalisation, tissue_only=region_on_tissue)
        specs.append(HeatmapSpec("region", f"{name} region attention", data, scale, translate,
                                 REGION_COLORMAP, contrast_limits(data, normalisation), maps.patch.step_level0))
    data = maps.patch_image(normalisation)
    specs.append(HeatmapSpec("patch", f"{name} patch attention", data, scale, translate,
                             ATTENTION_COLORMAP, contrast_limits(data, normalisation), maps.patch.step_level0))
    if evidence:
        for cls in maps.evidence_classes:
            data = maps.evidence_image(cls, normalisation)
            specs.append(HeatmapSpec(f"evidence:{cls}", f"{name} evidence {cls}", data, scale, translate,
                                     EVIDENCE_COLORMAP, contrast_limits(data, normalisation),
                                     maps.patch.step_level0))
    return specs


def sync_heatmap_layers(viewer: ViewerModel, layers: dict[str, Image], specs: list[HeatmapSpec], *,
                        opacity: float, units: Any = None, derived_from: str | None = None) -> dict[str, Image]:
    """Add or update (in place) one Image layer per spec; remove the ones no longer wanted.

    Parameters
    ----------
    viewer
        The napari viewer.
    layers
        The layers from the previous call, by spec key (layers the user deleted are
        re-added).
    specs
        What to show.
    opacity
        Opacity of newly added layers.
    units
        The slide layer's ``units`` (so napari sees consistent units), or ``None``.
    derived_from
        The slide layer's name: recorded as :mod:`._layers` does, so changing the slide's
        mpp re-places the heatmaps too.

    Returns
    -------
    dict
        The layers now shown, by spec key.
    """
    remove_unwanted(viewer, layers, {spec.key for spec in specs})
    return {spec.key: show_heatmap_layer(viewer, layers.get(spec.key), spec, opacity=opacity, units=units,
                                         derived_from=derived_from) for spec in specs}


def remove_unwanted(viewer: ViewerModel, layers: dict[str, Image], keys: set[str]) -> None:
    """Remove the heatmap layers whose key is not in ``keys`` (e.g. evidence switched off)."""
    for key, layer in list(layers.items()):
        if key not in keys and layer in viewer.layers:
            viewer.layers.remove(layer)


def show_heatmap_layer(viewer: ViewerModel, layer: Image | None, spec: HeatmapSpec, *, opacity: float,
                       units: Any = None, derived_from: str | None = None) -> Image:
    """Update ``layer`` in place to ``spec``, or add a new Image layer when there is none of that shape.

    Only what changed is set (each change redraws). Returns the layer; the active layer stays active.
    """
    meta: dict[str, Any] = {"napari_regional_mil": {"heatmap": spec.key}}
    if derived_from is not None:
        meta.update(derived_from=derived_from, level0_step=(spec.step_level0,) * 2, corner=False, what=spec.key)
    if layer is not None and layer in viewer.layers and layer.data.shape == spec.data.shape:
        layer.data = spec.data
        if tuple(layer.contrast_limits) != tuple(spec.contrast_limits):
            layer.contrast_limits = spec.contrast_limits
        if not np.allclose(layer.scale[-2:], spec.scale):
            layer.scale = spec.scale
        if not np.allclose(layer.translate[-2:], spec.translate):
            layer.translate = spec.translate
        if layer.name != spec.name:
            layer.name = spec.name
        layer.metadata.update(meta)
        return layer
    if layer is not None and layer in viewer.layers:
        viewer.layers.remove(layer)
    with adding_quietly(viewer):  # the user's layer stays selected
        return viewer.add_image(
            spec.data,
            name=spec.name,
            scale=spec.scale,
            translate=spec.translate,
            colormap=spec.colormap,
            contrast_limits=spec.contrast_limits,
            opacity=opacity,
            blending="translucent",
            interpolation2d="nearest",
            metadata=meta,
            **({} if units is None else {"units": units}),
        )


def read_thumbnail(level_arrays: list[Any], box: tuple[int, int, int], *, size: int = 96) -> np.ndarray:
    """Read a patch from a slide layer's pyramid at the level nearest ``size`` px.

    Parameters
    ----------
    level_arrays
        The slide's levels: a list of ``(H, W[, 3])`` arrays (numpy or dask), level 0
        first (``list(layer.data)`` of a multiscale layer), or one array.
    box
        ``(x, y, side)`` of the patch in level-0 pixels.
    size
        Wanted thumbnail side in pixels (the level read is the coarsest one that still
        gives at least this, or level 0).

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB (grey images are repeated to 3 channels).
    """
    levels = list(level_arrays) if isinstance(level_arrays, (list, tuple)) else [level_arrays]
    x, y, side = box
    h0 = levels[0].shape[0]
    chosen, down = levels[0], 1.0
    for arr in levels[1:]:
        d = h0 / arr.shape[0]
        if side / d >= size:
            chosen, down = arr, d
    x0, y0 = int(x / down), int(y / down)
    n = max(1, round(side / down))
    step = max(1, n // size)
    tile = np.asarray(chosen[max(0, y0) : y0 + n : step, max(0, x0) : x0 + n : step])
    if tile.size == 0:  # outside the image: a grey square
        return np.full((size, size, 3), 128, np.uint8)
    if tile.ndim == 2:
        tile = np.repeat(tile[..., None], 3, axis=2)
    tile = tile[..., :3]
    if tile.dtype != np.uint8:
        lo, hi = float(np.nanmin(tile)), float(np.nanmax(tile))
        tile = ((tile - lo) / (hi - lo or 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(tile)


def show_selection(viewer: ViewerModel, layer: Vectors | None, maps: AttentionMaps, region: int, patches: Any, *,
                   units: Any = None, offset: tuple[float, float] = (0.0, 0.0)) -> Vectors:
    """Outline ``region`` (cyan) and its listed ``patches`` (white) in a Vectors layer.

    The layer is re-used when it exists (outlines are cheap to redraw, unlike Shapes).

    Each rectangle is four edges, in level-0 pixel-*corner* coordinates with ``scale = mpp``
    and ``translate = -mpp / 2`` (as :mod:`._layers` draws grids), so they run along the
    pixel borders: rectangle ``i`` is ``layer.data[4 * i : 4 * i + 4]``, region first.
    """
    s = maps.patch.step_level0
    k = maps.region_size
    rx, ry = (int(v) for v in maps.embeddings.region_xy[region])
    rows, cols = maps.grid_shape
    rects = [((ry * k * s, rx * k * s), (min((ry + 1) * k, rows) * s, min((rx + 1) * k, cols) * s))]
    for i in patches:
        x, y, _side = maps.patch_box_level0(int(i))
        rects.append(((y, x), (y + s, x + s)))
    edges = []
    for (y0, x0), (y1, x1) in rects:
        corners = [(y0, x0), (y0, x1), (y1, x1), (y1, x0)]
        for (ay, ax), (by, bx) in zip(corners, corners[1:] + corners[:1]):
            edges.append([[ay, ax], [by - ay, bx - ax]])
    vectors = np.asarray(edges, dtype=float).reshape(-1, 2, 2)
    colours = np.array([[0.0, 1.0, 1.0, 1.0]] * 4 + [[1.0, 1.0, 1.0, 1.0]] * (len(vectors) - 4))
    width = max(1.0, s / 24)
    if layer is not None and layer in viewer.layers:
        layer.data = vectors
        layer.edge_color = colours
        if layer.edge_width != width:
            layer.edge_width = width
        return layer
    mpp_y, mpp_x = maps.patch.mpp
    with adding_quietly(viewer):  # the user's layer stays selected
        return viewer.add_vectors(
            vectors, name="selected region", edge_color=colours, edge_width=width, vector_style="line",
            scale=(mpp_y, mpp_x), translate=(offset[0] - mpp_y / 2, offset[1] - mpp_x / 2),
            metadata={"napari_regional_mil": {"heatmap": "selection"}},
            **({} if units is None else {"units": units}),
        )


def camera_of(viewer: ViewerModel) -> Camera:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def rgb_icon(tile: np.ndarray, size: int) -> QIcon:
    """A ``QIcon`` of an ``(h, w, 3)`` uint8 RGB tile, scaled to fit ``size`` px."""
    tile = np.ascontiguousarray(tile[..., :3], dtype=np.uint8)
    h, w, _ = tile.shape
    image = QImage(tile.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(image).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))


def jump_to(viewer: ViewerModel, centre_yx: tuple[float, float], extent_um: float) -> None:
    """Centre the camera on ``centre_yx`` (world um); zoom in so ``extent_um`` fills ~60 %.

    The camera never zooms *out*: a user looking closer than that stays as close.
    """
    camera = camera_of(viewer)
    camera.center = (float(centre_yx[0]), float(centre_yx[1]))
    canvas = getattr(getattr(viewer, "canvas", None), "size", None) or getattr(viewer, "_canvas_size", None)
    side = float(min(canvas)) if canvas and min(canvas) > 0 else 600.0
    camera.zoom = max(float(camera.zoom), 0.6 * side / max(float(extent_um), 1e-6))
