"""napari sample-data contribution: a deterministic synthetic H&E-like pyramidal slide.

The slide (6144 x 5120 px at 0.5 um/px, tissue of every type on glass) is generated on
first use into a cache folder and reused afterwards.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_regional_mil._reader import read_slide
from napari_regional_mil.synth.slides import write_synthetic_slide
from napari_regional_mil.synth.textures import make_tissue_layout

__all__ = ["SAMPLE_VERSION", "make_sample_slide", "sample_slide_path"]

#: Bumped whenever the generator's output changes, so stale caches are not reused.
SAMPLE_VERSION = 2
_LAYOUT_PX = 32  # level-0 px per layout cell: smooth tissue borders
_SHAPE = (160, 192)  # layout cells: 5120 x 6144 px


def _cache_dir() -> Path:
    root = os.environ.get("NAPARI_REGIONAL_MIL_CACHE") or os.path.join(tempfile.gettempdir(), "napari-regional-mil")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sample_slide_path(*, seed: int = 0) -> Path:
    """Write the sample slide if it is not cached yet and return its path."""
    path = _cache_dir() / f"sample_slide_v{SAMPLE_VERSION}_seed{seed}.tiff"
    if not path.exists():
        layout = make_tissue_layout(_SHAPE, np.random.default_rng(seed), blob_scale=0.3)
        write_synthetic_slide(path, layout, patch_px=_LAYOUT_PX, mpp=0.5, seed=seed)
    return path


def make_sample_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """The synthetic sample slide as napari layer data (like the reader gives)."""
    layers = read_slide(sample_slide_path())
    data, kwargs, kind = layers[0]
    kwargs = dict(kwargs, name="synthetic H&E-like slide")
    return [(data, kwargs, kind)]
