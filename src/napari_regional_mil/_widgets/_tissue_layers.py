"""The tissue mask of a slide as an editable napari Labels layer (label 1 = tissue).

The layer is placed as :mod:`._slide_layers` describes (its pixel covers a fixed number of
level-0 pixels per axis) and carries the detected
:class:`~napari_regional_mil.tissue.TissueMask` in ``metadata["tissue_mask"]``; painting on
it edits the mask tiling uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap

from napari_regional_mil._widgets._selection import adding_quietly
from napari_regional_mil._widgets._slide_layers import (
    _by_name,
    _derived,
    _derived_name,
    _place,
    _units,
    layer_mpp,
    placement,
)
from napari_regional_mil.tissue import TissueMask

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from napari.layers import Layer

__all__ = ["read_tissue_mask", "show_tissue_mask", "tissue_labels", "tissue_layer_of", "tissue_mask_of"]

_TISSUE_COLOUR = "#00d7ff"


def show_tissue_mask(viewer: ViewerModel, slide_layer: Layer, tissue: TissueMask,
                     slide_dimensions: tuple[int, int]) -> Labels:
    """Show a low-resolution tissue mask as an editable Labels layer aligned with the slide.

    Parameters
    ----------
    viewer, slide_layer
        The viewer and the slide layer the mask belongs to.
    tissue
        A :class:`~napari_regional_mil.tissue.TissueMask` (its ``mask`` covers level 0).
    slide_dimensions
        ``(width, height)`` of level 0 (see :func:`tissue_labels`).

    Returns
    -------
    napari.layers.Labels
        The layer (label 1 = tissue); painting on it edits the mask tiling uses.
    """
    data, step = tissue_labels(tissue, slide_dimensions)
    width, height = slide_dimensions
    name = _derived_name(slide_layer, "tissue")
    meta = _derived(viewer, slide_layer, "tissue", step, corner=False)
    meta["slide_dimensions"] = (int(width), int(height))
    meta["tissue_mask"] = tissue
    mpp, units = layer_mpp(slide_layer), _units(slide_layer)
    layer = _by_name(viewer, name)
    if layer is None:
        colours = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: _TISSUE_COLOUR})
        with adding_quietly(viewer):
            layer = viewer.add_labels(data, name=name, opacity=0.3, colormap=colours, metadata=meta, units=units,
                                      **placement(step, mpp, corner=False))
    else:
        layer.data = data
        layer.metadata.update(meta)
        _place(layer, step, mpp, corner=False, units=units)
    return layer


def tissue_labels(tissue: TissueMask, slide_dimensions: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """The Labels data of a tissue mask and the ``(y, x)`` level-0 pixels one of its pixels covers.

    No napari: a worker may compute it.

    A mask pixel covers ``height/rows`` x ``width/cols`` level-0 pixels (per axis, so the
    layer's extent equals the slide's).
    """
    mask = np.asarray(tissue.mask, dtype=bool)
    width, height = slide_dimensions
    return mask.view(np.uint8).copy(), (height / mask.shape[0], width / mask.shape[1])


def read_tissue_mask(layer: Layer) -> np.ndarray:
    """The (possibly user-painted) tissue mask of a tissue Labels layer: ``data > 0``."""
    return np.asarray(layer.data) > 0


def tissue_layer_of(viewer: ViewerModel, slide_layer: Layer) -> Labels | None:
    """The tissue Labels layer of a slide layer, or ``None``."""
    name = _derived_name(slide_layer, "tissue")
    layer = _by_name(viewer, name)

    return layer if isinstance(layer, Labels) else None


def tissue_mask_of(viewer: ViewerModel, slide_layer: Layer, *, only_if_edited: bool = False) -> TissueMask | None:
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
    layer = tissue_layer_of(viewer, slide_layer)
    if layer is None:
        return None
    edited = read_tissue_mask(layer)
    template = layer.metadata.get("tissue_mask")
    if template is not None and template.mask.shape == edited.shape:
        default = layer.metadata.get("tissue_default", True)  # detected with the default options
        if only_if_edited and default and np.array_equal(template.mask, edited):
            return None
        return template.with_mask(edited)
    width, height = layer.metadata.get("slide_dimensions", (edited.shape[1], edited.shape[0]))
    return TissueMask(edited, (width / edited.shape[1], height / edited.shape[0]), None, method="user")
