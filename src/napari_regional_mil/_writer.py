"""napari writer contribution: a tissue Labels layer (as painted) saved as a whole-slide mask PNG.

*File > Save Selected Layer(s)...* on a tissue layer, choosing "Tissue mask (whole-slide
PNG)", writes the file :func:`napari_regional_mil.masks.load_mask` and
``napari-regional-mil embed --tissue-mask FILE`` read. The slide's level-0 size comes from
the layer's metadata (the Slide widget's tissue layers carry it); without it the mask is
saved as it is and checked only by its aspect ratio when loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_regional_mil.masks import save_mask

__all__ = ["write_tissue_mask"]


def write_tissue_mask(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one Labels layer as a tissue mask PNG (label > 0 = tissue); returns the written path."""
    meta = attributes.get("metadata") or {}
    pixels = np.asarray(data)
    dims = meta.get("slide_dimensions") or (pixels.shape[1], pixels.shape[0])
    slide = meta.get("slide_path") or meta.get("slide_name")
    target = Path(path)
    if target.suffix.lower() != ".png":
        target = target.with_name(target.name + ".png")
    save_mask(target, pixels, slide_dimensions=(int(dims[0]), int(dims[1])),
              slide_name=Path(str(slide)).stem if slide else None)
    return [str(target)]
