"""Export a prediction's scores: QuPath GeoJSON, a heatmap TIFF, a per-patch CSV.

All three take an :class:`~napari_regional_mil.heatmap.AttentionMaps` (a slide's
embeddings plus the first model's prediction on them) and write atomically (a temp file
in the same folder, then ``os.replace``): a failed or interrupted export leaves no
half-written file.

- **GeoJSON** (:func:`export_geojson`): a ``FeatureCollection`` QuPath imports with
  *File > Import objects from file* (or drag and drop). One ``tile`` object per patch and
  one per region; geometry a rectangle in **level-0 pixels** with the origin at the top
  left of the full-resolution image (QuPath's convention). ``properties``:
  ``objectType: "tile"``, ``isLocked`` (so a click does not move them), ``name``,
  ``classification`` (``Patch`` or ``Region``, so each set can be shown or hidden in
  QuPath) and ``measurements`` (QuPath >= 0.4 map form): ``attention``, ``attention_rank``,
  ``region_attention``, ``tissue_fraction``,
  ``prob_<class>`` (the slide's class probabilities, on every object so a measurement
  map can colour by them) and ``evidence_<class>`` when the model gives it. A region's
  ``attention`` is the sum of its patches' attention. Missing values are omitted (JSON
  has no NaN).
- **Heatmap TIFF** (:func:`export_heatmap_tiff`): an ImageJ hyperstack, float32,
  ``(C, n_rows, n_cols)`` at *patch-grid* resolution (one pixel per patch; pixel
  ``(gx, gy)`` covers level-0 ``[gx*s, (gx+1)*s)``), NaN off tissue, with the pixel size
  in microns in the resolution tags and channel labels ``attention``,
  ``region_attention`` (each region's value over its patches), ``evidence_<class>``.
  Values are normalised as asked (default ``rank``, in [0, 1]). Fiji opens it as a
  calibrated stack; scaled by ``s`` it overlays the slide.
- **CSV** (:func:`export_csv`): one row per patch, in the cache's order.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import numpy as np
import tifffile

from .atomic import atomic_path
from .errors import RegionalMilError
from .heatmap import AttentionMaps, normalise

__all__ = [
    "ExportError",
    "csv_columns",
    "export_csv",
    "export_geojson",
    "export_heatmap_tiff",
    "geojson_features",
    "heatmap_stack",
]

#: Colours (RGB) of the two QuPath classifications.
_PATCH_COLOUR = [230, 120, 30]
_REGION_COLOUR = [60, 120, 220]


class ExportError(RegionalMilError):
    """An export file cannot be written (folder missing, not writable, disk full)."""


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temp file onto ``path`` (same folder)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"{path}: the folder {path.parent} does not exist")
    try:
        with atomic_path(path) as tmp:
            write(str(tmp))
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    return path


def _open_text(tmp: str) -> IO[str]:
    return open(tmp, "w", encoding="utf-8", newline="")


def _class_keys(maps: AttentionMaps) -> list[str]:
    return [_safe(name) for name in maps.prediction.class_names]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def _measurements(pairs: Mapping[str, float | None]) -> dict[str, float]:
    out = {}
    for key, value in pairs.items():
        if value is not None and np.isfinite(value):
            out[key] = float(value)
    return out


def _rect(x0: float, y0: float, x1: float, y1: float) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [[[round(float(a), 3), round(float(b), 3)] for a, b in ring]]}


def _require_coords(maps: AttentionMaps) -> np.ndarray:
    coords = maps.embeddings.coords_px
    if coords is None:
        raise ExportError(f"{maps.embeddings.slide_name}: the embeddings have no patch coordinates to export")
    return np.asarray(coords, dtype=np.int64)


def geojson_features(maps: AttentionMaps) -> list[dict]:
    """The QuPath GeoJSON features of ``maps``: the patches, then the regions."""
    emb, pred = maps.embeddings, maps.prediction
    coords = _require_coords(maps)
    s = maps.patch.step_level0
    k = maps.region_size
    att = np.asarray(pred.patch_attention, np.float64)
    rank = normalise(att, "rank")
    reg_of_patch = maps.region_attention_of_patches()
    probs = {f"prob_{c}": float(p) for c, p in zip(_class_keys(maps), pred.probabilities)}
    tissue = emb.tissue_fraction
    evidence = pred.class_evidence
    features = []
    for i in range(emb.n_patches):
        x, y = coords[i]
        gx, gy = (int(v) for v in maps.grid_xy[i])
        m = {
            "attention": att[i],
            "attention_rank": rank[i],
            "region_attention": reg_of_patch[i],
            "tissue_fraction": None if tissue is None else tissue[i],
        }
        m.update(probs)
        if evidence is not None:
            m.update({f"evidence_{c}": evidence[i, j] for j, c in enumerate(_class_keys(maps))})
        features.append(
            {
                "type": "Feature",
                "geometry": _rect(x, y, x + s, y + s),
                "properties": {
                    "objectType": "tile",
                    "isLocked": True,
                    "name": f"patch {i} ({gx}, {gy})",
                    "classification": {"name": "Patch", "color": _PATCH_COLOUR},
                    "measurements": _measurements(m),
                },
            }
        )
    region_sum = np.bincount(maps.region_index, weights=att, minlength=emb.n_regions)
    region_count = np.bincount(maps.region_index, minlength=emb.n_regions)
    region_att = pred.region_attention
    region_rank = None if region_att is None else normalise(region_att, "rank")
    rows, cols = maps.grid_shape
    for r in range(emb.n_regions):
        rx, ry = (int(v) for v in maps.region_xy[r])
        x0, y0 = round(rx * k * s), round(ry * k * s)
        x1, y1 = round(min((rx + 1) * k, cols) * s), round(min((ry + 1) * k, rows) * s)
        m = {
            "attention": region_sum[r],
            "region_attention": None if region_att is None else region_att[r],
            "region_attention_rank": None if region_rank is None else region_rank[r],
            "n_patches": float(region_count[r]),
        }
        m.update(probs)
        features.append(
            {
                "type": "Feature",
                "geometry": _rect(x0, y0, x1, y1),
                "properties": {
                    "objectType": "tile",
                    "isLocked": True,
                    "name": f"region {r} ({rx}, {ry})",
                    "classification": {"name": "Region", "color": _REGION_COLOUR},
                    "measurements": _measurements(m),
                },
            }
        )
    return features


def export_geojson(path: str | os.PathLike, maps: AttentionMaps) -> Path:
    """Write the QuPath GeoJSON ``FeatureCollection`` of ``maps`` to ``path``.

    Returns the path written. Raises :class:`ExportError` when it cannot be written or the
    embeddings have no coordinates.
    """
    collection = {"type": "FeatureCollection", "features": geojson_features(maps)}

    def write(tmp: str) -> None:
        with _open_text(tmp) as fh:
            json.dump(collection, fh, allow_nan=False)

    return _atomic_write(path, write)


def heatmap_stack(maps: AttentionMaps, *, normalisation: str = "rank") -> tuple[np.ndarray, list[str]]:
    """The heatmap channels at patch-grid resolution: ``(C, n_rows, n_cols)`` and labels."""
    channels = [maps.patch_image(normalisation)]
    labels = ["attention"]
    if maps.has_region_attention:
        k = maps.region_size
        region = maps.region_image(normalisation)
        up = np.repeat(np.repeat(region, k, axis=0), k, axis=1)[: maps.grid_shape[0], : maps.grid_shape[1]]
        tissue = np.isfinite(channels[0])
        channels.append(np.where(tissue, up, np.nan).astype(np.float32))
        labels.append("region_attention")
    for name in maps.evidence_classes:
        channels.append(maps.evidence_image(name, normalisation))
        labels.append(f"evidence_{_safe(name)}")
    return np.stack(channels).astype(np.float32), labels


def export_heatmap_tiff(path: str | os.PathLike, maps: AttentionMaps, *, normalisation: str = "rank") -> Path:
    """Write the heatmaps as a calibrated float32 ImageJ TIFF at patch-grid resolution.

    Parameters
    ----------
    path
        The ``.tif`` to write.
    maps
        The slide's attention maps.
    normalisation
        One of :data:`~napari_regional_mil.heatmap.NORMALISATIONS` (default ``rank``).
    """
    stack, labels = heatmap_stack(maps, normalisation=normalisation)
    sy, sx = maps.patch.scale  # um per grid pixel

    def write(tmp: str) -> None:
        tifffile.imwrite(
            tmp,
            stack,
            imagej=True,
            resolution=(1.0 / sx, 1.0 / sy),
            metadata={
                "axes": "CYX",
                "unit": "um",
                "Labels": labels,
                **({} if normalisation == "raw" else {"min": 0.0, "max": 1.0}),
                "Info": json.dumps(
                    {
                        "slide": maps.embeddings.slide_name,
                        "normalisation": normalisation,
                        "patch_size_level0": maps.patch.step_level0,
                        "slide_mpp": list(maps.patch.mpp),
                        "classes": list(maps.prediction.class_names),
                        "probabilities": [float(p) for p in maps.prediction.probabilities],
                    }
                ),
            },
        )

    return _atomic_write(path, write)


def csv_columns(maps: AttentionMaps) -> list[str]:
    """The header of :func:`export_csv` for ``maps``."""
    cols = ["patch", "x", "y", "grid_x", "grid_y", "region", "attention", "attention_rank",
            "region_attention", "tissue_fraction"]
    cols += [f"prob_{c}" for c in _class_keys(maps)]
    if maps.prediction.class_evidence is not None:
        cols += [f"evidence_{c}" for c in _class_keys(maps)]
    return cols


def export_csv(path: str | os.PathLike, maps: AttentionMaps) -> Path:
    """Write one row of scores per patch (level-0 ``x, y`` = top-left corner; empty = missing)."""
    emb, pred = maps.embeddings, maps.prediction
    coords = _require_coords(maps)
    att = np.asarray(pred.patch_attention, np.float64)
    rank = normalise(att, "rank")
    reg = maps.region_attention_of_patches()
    tissue = emb.tissue_fraction
    probs = [float(p) for p in pred.probabilities]

    def fmt(v: float | None) -> str:
        return "" if v is None or not np.isfinite(v) else repr(float(v))

    def write(tmp: str) -> None:
        with _open_text(tmp) as fh:
            w = csv.writer(fh)
            w.writerow(csv_columns(maps))
            for i in range(emb.n_patches):
                row = [i, int(coords[i, 0]), int(coords[i, 1]), int(maps.grid_xy[i, 0]), int(maps.grid_xy[i, 1]),
                       int(maps.region_index[i]), fmt(att[i]), fmt(rank[i]), fmt(reg[i]),
                       fmt(None if tissue is None else tissue[i])]
                row += [fmt(p) for p in probs]
                if pred.class_evidence is not None:
                    row += [fmt(e) for e in pred.class_evidence[i]]
                w.writerow(row)

    return _atomic_write(path, write)
