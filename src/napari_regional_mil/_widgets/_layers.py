"""Slide layers in a napari viewer: the slide, its tissue mask, its grids, the PCA overlay.

Every layer lies in napari world coordinates ``(y, x)`` in microns: a layer's ``scale`` is
the level-0 ``(mpp_y, mpp_x)`` times its pixel step, and napari puts pixel *centres* on
integer multiples of it. A level-0 pixel-*corner* coordinate ``u`` therefore sits at world
``(u - 0.5) * mpp``. Grid outlines are drawn in level-0 pixel-corner coordinates with
``scale = mpp`` and ``translate = -mpp / 2``; a mask or grid image whose pixel covers
``d`` level-0 pixels has ``scale = d * mpp`` and ``translate = (d - 1) / 2 * mpp``.

The slide layer's ``metadata`` holds ``slide_path`` (str), ``mpp`` (``(mpp_x, mpp_y)`` or
``None``), ``slide_info`` (the :class:`~napari_regional_mil.slide.info.SlideInfo` as a
dict) and, once the Slide or Cohort widget tiled it, ``tiling_params`` (a dict of
:class:`~napari_regional_mil.tiling.TilingParams`) and ``tiling`` (the
:class:`~napari_regional_mil.tiling.Tiling`); the Embed and Slide widgets read them.

Modules: :mod:`._slide_layers` (the slide layer, its metadata, placement of derived layers),
:mod:`._tissue_layers` (the tissue Labels layer), :mod:`._grid_layers` (grid outlines, RGBA
grid images). This module re-exports their public names and shows a tiling's layers from
arrays prepared in the worker (:func:`prepare_tiling_layers` there,
:func:`show_tiling_layers` in the GUI thread).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from napari_regional_mil._widgets._grid_layers import (
    GridOutlines,
    grid_outlines,
    outline_segments,
    show_grid_rgba,
    show_grids,
)
from napari_regional_mil._widgets._slide_layers import (
    SLIDE_PATH_KEY,
    add_slide_layer,
    find_slide_layer,
    layer_mpp,
    make_slide_layer,
    open_slide_of,
    placement,
    set_slide_mpp,
    show_slide_layer,
    slide_layers,
    slide_path_of,
    tiling_of,
    tiling_params_of,
)
from napari_regional_mil._widgets._tissue_layers import (
    read_tissue_mask,
    show_tissue_mask,
    tissue_labels,
    tissue_layer_of,
    tissue_mask_of,
)
from napari_regional_mil._widgets._warm_up import warm_up

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from napari.layers import Layer, Vectors

    from napari_regional_mil.tiling import Tiling
    from napari_regional_mil.tissue import TissueMask

__all__ = [
    "SLIDE_PATH_KEY",
    "GridOutlines",
    "TilingLayers",
    "add_slide_layer",
    "find_slide_layer",
    "grid_outlines",
    "layer_mpp",
    "make_slide_layer",
    "open_slide_of",
    "outline_segments",
    "placement",
    "prepare_tiling_layers",
    "read_tissue_mask",
    "set_slide_mpp",
    "show_grid_rgba",
    "show_grids",
    "show_slide_layer",
    "show_tiling_layers",
    "show_tissue_mask",
    "slide_layers",
    "slide_path_of",
    "tiling_of",
    "tiling_params_of",
    "tissue_labels",
    "tissue_layer_of",
    "tissue_mask_of",
]

@dataclass(frozen=True)
class TilingLayers:
    """What the GUI thread needs to show a tiled slide, computed in the worker.

    Attributes
    ----------
    tiling
        The :class:`~napari_regional_mil.tiling.Tiling`.
    outlines
        Its :class:`GridOutlines`.
    tissue
        The tissue mask to show (``None``: keep the tissue layer as it is).
    slide_dimensions
        ``(width, height)`` of level 0.
    """

    tiling: Tiling
    outlines: GridOutlines
    tissue: TissueMask | None
    slide_dimensions: tuple[int, int]


def prepare_tiling_layers(
    tiling: Tiling, tissue: TissueMask | None = None, slide_dimensions: tuple[int, int] | None = None
) -> TilingLayers:
    """The layers' geometry of a tiling (plain numpy; call it in the worker).

    Also pays what napari would pay in the GUI thread for its first layers (:func:`._warm_up.warm_up`).
    """
    warm_up()
    width, height = (int(v) for v in (slide_dimensions or tiling.slide_dimensions))
    return TilingLayers(tiling, grid_outlines(tiling), tissue, (width, height))


def show_tiling_layers(viewer: ViewerModel, slide_layer: Layer, prepared: TilingLayers) -> tuple[Vectors, Vectors]:
    """Show (add or update in place) the tissue and grid layers of a prepared tiling.

    The tiling is recorded on the slide layer (``metadata["tiling"]``, ``["tiling_params"]``).

    Returns ``(patch_grid_layer, region_grid_layer)``.
    """
    if prepared.tissue is not None:
        show_tissue_mask(viewer, slide_layer, prepared.tissue, prepared.slide_dimensions)
    grids = show_grids(viewer, slide_layer, prepared.outlines)
    slide_layer.metadata["tiling_params"] = asdict(prepared.tiling.params)
    slide_layer.metadata["tiling"] = prepared.tiling
    slide_layer.events.metadata()  # the Slide widget shows the counts of a tiling made elsewhere
    return grids
