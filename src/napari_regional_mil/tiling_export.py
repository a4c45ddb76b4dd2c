"""A slide's patch and region coordinates without embedding: TRIDENT/CLAM coords h5 and QuPath GeoJSON.

- **coords h5** (:func:`write_coords_h5`), TRIDENT's ``patches/<slide>_patches.h5`` layout::

      coords    (N, 2) int64  level-0 (x, y) top-left of each patch
                attrs: patch_size (px at the target resolution), patch_level (0: the
                coordinates and the side are level-0 pixels), patch_size_level0 (int, as
                TRIDENT writes it; patch_size_level0_exact: the grid step), downsample,
                level0_magnification, target_magnification, slide_mpp, target_mpp,
                region_size, overlap (0), name

  plus ``grid_xy``, ``region_index``, ``region_xy`` and ``tissue_fraction`` (other tools
  ignore them): the same ``coords`` attributes as the feature files of
  :mod:`napari_regional_mil.embedding.h5io`.
- **GeoJSON** (:func:`write_tiling_geojson`): a ``FeatureCollection`` QuPath imports
  (*File > Import objects from file*): one locked ``tile`` object per patch
  (classification ``Patch``) and per region (``Region``), rectangles in level-0 pixels,
  with ``tissue_fraction`` / ``n_patches`` measurements.

Both are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path
from .tiling import Tiling

__all__ = ["tiling_features", "write_coords_h5", "write_tiling_geojson"]

_PATCH_COLOUR = [230, 120, 30]
_REGION_COLOUR = [60, 120, 220]


def write_coords_h5(path: str | os.PathLike[str], tiling: Tiling, *, slide_name: str) -> Path:
    """Write ``tiling``'s patch coordinates in the TRIDENT/CLAM ``coords`` h5 layout (atomically)."""
    path = Path(path)
    p = tiling.params
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        coords = fh.create_dataset("coords", data=np.asarray(tiling.coords_px, np.int64))
        a = coords.attrs
        a["patch_size"] = int(p.patch_size)
        a["patch_level"] = 0
        a["patch_size_level0"] = round(tiling.patch_size_level0)  # an int, as TRIDENT writes it
        a["patch_size_level0_exact"] = float(tiling.patch_size_level0)
        a["downsample"] = np.array([1.0, 1.0])
        a["level0_magnification"] = round(10.0 / tiling.slide_mpp, 3)
        a["target_magnification"] = round(10.0 / float(p.target_mpp), 3)
        a["slide_mpp"] = float(tiling.slide_mpp)
        a["target_mpp"] = float(p.target_mpp)
        a["region_size"] = int(p.region_size)
        a["overlap"] = 0
        a["name"] = slide_name
        fh.create_dataset("grid_xy", data=tiling.grid_xy.astype(np.int32))
        fh.create_dataset("region_index", data=tiling.region_index.astype(np.int32))
        fh.create_dataset("region_xy", data=tiling.region_xy.astype(np.int32))
        fh.create_dataset("tissue_fraction", data=tiling.tissue_fraction.astype(np.float32))
        fh.attrs["slide_name"] = slide_name
        fh.attrs["slide_dimensions"] = np.asarray(tiling.slide_dimensions, np.int64)
        fh.attrs["grid_shape"] = np.asarray(tiling.grid_shape, np.int64)
        fh.attrs["tissue_threshold"] = float(p.tissue_threshold)
        fh.attrs["written_by"] = "napari-regional-mil"
    return path


def _rect(x0: float, y0: float, x1: float, y1: float) -> dict[str, object]:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [[[round(float(a), 3), round(float(b), 3)] for a, b in ring]]}


def _tile(geometry: dict[str, object], name: str, cls: str, colour: list[int], measurements: dict[str, float]) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {
        "objectType": "tile", "isLocked": True, "name": name, "classification": {"name": cls, "color": colour},
        "measurements": measurements}}


def tiling_features(tiling: Tiling) -> list[dict[str, object]]:
    """The QuPath GeoJSON features of ``tiling``: its patches, then its regions (level-0 px)."""
    s = tiling.patch_size_level0
    k = tiling.params.region_size
    rows, cols = tiling.grid_shape
    features = []
    for i, ((x, y), (gx, gy)) in enumerate(zip(tiling.coords_px.tolist(), tiling.grid_xy.tolist())):
        measurements = {"tissue_fraction": float(tiling.tissue_fraction[i]), "region": float(tiling.region_index[i])}
        name = f"patch {i} ({gx}, {gy})"
        features.append(_tile(_rect(x, y, x + s, y + s), name, "Patch", _PATCH_COLOUR, measurements))
    counts = np.bincount(tiling.region_index, minlength=tiling.n_regions)
    for r, (rx, ry) in enumerate(tiling.region_xy.tolist()):
        x0, y0 = round(rx * k * s), round(ry * k * s)
        x1, y1 = round(min((rx + 1) * k, cols) * s), round(min((ry + 1) * k, rows) * s)
        features.append(_tile(_rect(x0, y0, x1, y1), f"region {r} ({rx}, {ry})", "Region", _REGION_COLOUR,
                              {"n_patches": float(counts[r])}))
    return features


def write_tiling_geojson(path: str | os.PathLike[str], tiling: Tiling) -> Path:
    """Write ``tiling`` as a QuPath GeoJSON ``FeatureCollection`` (atomically)."""
    path = Path(path)
    collection = {"type": "FeatureCollection", "features": tiling_features(tiling)}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(collection, fh, allow_nan=False)
    return path
