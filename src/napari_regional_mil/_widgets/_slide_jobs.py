"""The Slide and Cohort widgets' jobs: tissue detection and tiling of one slide, off the GUI thread.

Each job opens its own handle of the slide (safe in the worker thread) and prepares every
array the GUI thread needs, so that only adding or updating layers is left to it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_regional_mil._reader import read_slide
from napari_regional_mil._widgets import _layers
from napari_regional_mil._widgets._warm_up import warm_up
from napari_regional_mil.jobs import Progress
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tiling import TilingParams, tile_slide
from napari_regional_mil.tissue import TissueMask, TissueOptions, detect_tissue

if TYPE_CHECKING:
    from napari.layers import Image

__all__ = ["associated_images_job", "open_job", "tiling_job", "tissue_job"]

logger = logging.getLogger(__name__)

def open_job(path: Path) -> Image:
    """Job: read a slide with this plugin's reader (the layer data napari would get from it).

    Only the file's structure is read; the slide stays open for the layer
    (:func:`napari_regional_mil._reader.read_slide`).
    """
    (layer_data,) = read_slide(path)
    warm_up()
    return _layers.make_slide_layer(layer_data)


def associated_images_job(path: Path) -> dict[str, np.ndarray]:
    """Job: the slide's associated images (label, macro, thumbnail), read on a fresh handle."""
    images: dict[str, np.ndarray] = {}
    with open_slide(path) as slide:
        for name in slide.info.associated_images:
            try:
                images[name] = np.asarray(slide.associated_image(name))
            except Exception:
                logger.warning("cannot read associated image %r of %s", name, path, exc_info=True)
    return images


def tissue_job(
    path: Path, mpp: float | None, options: TissueOptions | None = None
) -> Generator[Progress, None, TissueMask]:
    """Job: detect tissue (with ``options``) on a fresh handle of the slide; returns the low-resolution mask."""
    yield Progress("tissue", 0, 1, message="detecting tissue")
    with open_slide(path, mpp=mpp) as slide:
        mask = detect_tissue(slide, options)
    yield Progress("tissue", 1, 1, message="done")
    return mask


def tiling_job(
    path: Path, mpp: float, params: TilingParams, tissue: TissueMask | None, options: TissueOptions | None = None
) -> Generator[Progress, None, _layers.TilingLayers]:
    """Job: (detect tissue with ``options`` when ``tissue`` is None, then) tile the slide.

    Returns a :class:`._layers.TilingLayers`: the tiling with its grid outlines computed
    here, in the worker, and the detected tissue mask (``None`` when ``tissue`` was given),
    so the GUI thread only adds or updates layers.
    """
    with open_slide(path, mpp=mpp) as slide:
        detected = tissue is None
        if detected:
            yield Progress("tissue", 0, 2, message="detecting tissue")
            tissue = detect_tissue(slide, options)
        yield Progress("tile", 1, 2, message="tiling")
        tiling = tile_slide(slide, tissue, params)
        if hasattr(tiling, "send"):  # a job generator
            tiling = yield from tiling
        dimensions = slide.info.dimensions
    prepared = _layers.prepare_tiling_layers(tiling, tissue if detected else None, dimensions)
    yield Progress("tile", 2, 2, message="done")
    return prepared
