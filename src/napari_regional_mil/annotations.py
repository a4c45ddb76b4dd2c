"""QuPath GeoJSON annotations as tissue regions to keep (include) or to leave out (exclude).

QuPath exports annotations (*File > Export objects as GeoJSON*) as a GeoJSON
``FeatureCollection`` (or a bare list of features) of ``Polygon`` / ``MultiPolygon``
geometries in level-0 pixel coordinates ``(x, y)``. Included regions restrict tiling to
the tissue inside them (the regions a pathologist drew); excluded ones (pen marks, folds,
bubbles) are removed from the tissue. The polygons are rasterised with scikit-image at the
tissue mask's resolution.

>>> regions = read_annotations("slide.geojson", slide_dimensions=(2220, 2967))   # doctest: +SKIP
>>> tissue = apply_annotations(tissue, regions, mode="exclude")                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import TilingError
from .tissue import TissueMask

__all__ = ["ANNOTATION_MODES", "Annotation", "apply_annotations", "read_annotations", "regions_mask"]

Mode = Literal["include", "exclude"]
#: How annotations are used.
ANNOTATION_MODES: tuple[str, ...] = ("include", "exclude")


@dataclass(frozen=True)
class Annotation:
    """One polygon of an annotation file (level-0 pixels).

    Parameters
    ----------
    exterior
        ``(n, 2)`` ``(x, y)`` vertices of the outer ring.
    holes
        Inner rings (same layout): areas inside the polygon that it does not cover.
    name
        The annotation's name or classification (``""`` when it has none).
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    name: str = ""


def _ring(path: Path, index: int, ring: object) -> np.ndarray:
    arr = np.asarray(ring, dtype=np.float64) if isinstance(ring, list) else np.zeros((0,))
    if arr.ndim != 2 or arr.shape[0] < 3 or arr.shape[1] < 2 or not np.isfinite(arr[:, :2]).all():
        raise TilingError(f"{path}: feature {index} has a polygon ring that is not a list of >= 3 (x, y) points")
    return arr[:, :2]


def _label(feature: dict[str, object]) -> str:
    props = feature.get("properties")
    if not isinstance(props, dict):
        return ""
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    return str(props.get("name") or "")


def _features(path: Path, data: object) -> list[dict[str, object]]:
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list):
        raise TilingError(f"{path}: not a GeoJSON FeatureCollection or list of features (QuPath's export)")
    return [f for f in data if isinstance(f, dict)]


def read_annotations(path: str | os.PathLike[str], *, slide_dimensions: tuple[int, int]) -> list[Annotation]:
    """The polygons of a QuPath GeoJSON file, checked against a slide of ``(width, height)`` px.

    Raises
    ------
    TilingError
        Missing or unreadable file, not GeoJSON, a feature that is not a Polygon or
        MultiPolygon (points, lines...), a malformed ring, no polygon at all, or no polygon
        that overlaps the slide; one line naming the file and the problem.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise TilingError(f"{path}: no such annotation file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TilingError(f"{path}: cannot read the annotation file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise TilingError(f"{path}: not JSON (line {exc.lineno}: {exc.msg}); export GeoJSON from QuPath") from None
    out: list[Annotation] = []
    for index, feature in enumerate(_features(path, data)):
        geometry = feature.get("geometry")
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if kind == "Polygon":
            polygons = [coords]
        elif kind == "MultiPolygon":
            polygons = coords if isinstance(coords, list) else [None]
        else:
            raise TilingError(
                f"{path}: feature {index} is a {kind or 'feature without geometry'}, not a polygon; only Polygon and "
                "MultiPolygon annotations mark regions"
            )
        for rings in polygons:
            if not isinstance(rings, list) or not rings:
                raise TilingError(f"{path}: feature {index} has a polygon without rings")
            rings_arr = [_ring(path, index, r) for r in rings]
            out.append(Annotation(rings_arr[0], tuple(rings_arr[1:]), _label(feature)))
    if not out:
        raise TilingError(f"{path}: holds no polygon annotations")
    width, height = slide_dimensions
    inside = [a for a in out if a.exterior[:, 0].max() > 0 and a.exterior[:, 0].min() < width
              and a.exterior[:, 1].max() > 0 and a.exterior[:, 1].min() < height]
    if not inside:
        lo, hi = np.min([a.exterior.min(axis=0) for a in out], axis=0), np.max([a.exterior.max(axis=0) for a in out],
                                                                               axis=0)
        raise TilingError(
            f"{path}: no annotation lies on the slide ({width} x {height} px; the annotations span x "
            f"{lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}): made for another slide, or at another scale?"
        )
    return out


def regions_mask(annotations: list[Annotation], shape: tuple[int, int], downsample: tuple[float, float]) -> np.ndarray:
    """``shape`` bool raster of the annotations' union (holes cut out), one pixel = ``downsample`` level-0 px."""
    from skimage.draw import polygon  # lazy: startup (scikit-image when annotations are drawn)

    out = np.zeros(shape, bool)
    dx, dy = downsample
    for ann in annotations:
        area = np.zeros(shape, bool)
        rr, cc = polygon(ann.exterior[:, 1] / dy - 0.5, ann.exterior[:, 0] / dx - 0.5, shape)
        area[rr, cc] = True
        for hole in ann.holes:
            rr, cc = polygon(hole[:, 1] / dy - 0.5, hole[:, 0] / dx - 0.5, shape)
            area[rr, cc] = False
        out |= area
    return out


def apply_annotations(tissue: TissueMask, annotations: list[Annotation], *, mode: Mode) -> TissueMask:
    """The tissue inside the annotations (``"include"``) or outside them (``"exclude"``).

    Raises
    ------
    ValueError
        An unknown mode.
    """
    if mode not in ANNOTATION_MODES:
        raise ValueError(f"annotation mode must be one of {', '.join(ANNOTATION_MODES)}, got {mode!r}")
    regions = regions_mask(annotations, tissue.shape, tissue.downsample)
    kept = tissue.mask & regions if mode == "include" else tissue.mask & ~regions
    return TissueMask(kept, tissue.downsample, tissue.mpp, tissue.threshold, f"{tissue.method}+annotations-{mode}")
