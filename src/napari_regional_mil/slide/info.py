"""The metadata record of an opened slide."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, SupportsFloat

__all__ = ["MPP_RANGE", "SlideInfo", "checked_slide_mpp", "pick_properties"]

#: Plausible level-0 microns per pixel of a microscope scan; outside it the value is
#: treated as "no real mpp" (e.g. 352.78 um/px read from a 72-dpi tag).
MPP_RANGE: tuple[float, float] = (0.02, 50.0)

MppSource = Literal["slide", "user", "none"]


@dataclass(frozen=True)
class SlideInfo:
    """What is known about a slide, cheap to compute (no pixel data read).

    Parameters
    ----------
    path
        The slide file (or DICOM folder).
    backend
        The reader backend that opened it: ``"tiffslide"``, ``"openslide"`` or ``"wsidicom"``.
    vendor
        Format reported by the backend (``"aperio"``, ``"hamamatsu"``, ``"mirax"``,
        ``"dicom"``...), ``None`` for a generic TIFF.
    dimensions
        ``(width, height)`` of level 0 in pixels.
    level_dimensions
        ``(width, height)`` of every native level, largest first.
    level_downsamples
        Downsample of every native level relative to level 0.
    mpp
        ``(mpp_x, mpp_y)`` level-0 microns per pixel in use (the user's override, else
        the slide's), ``None`` when unknown.
    mpp_source
        ``"user"``, ``"slide"`` or ``"none"``.
    slide_mpp
        ``(mpp_x, mpp_y)`` as stored in the file when plausible, else ``None``.
    objective_power
        Scanning objective magnification, when stored.
    associated_images
        Names of the associated images (``"label"``, ``"macro"``, ``"thumbnail"``...).
    tile_size
        ``(width, height)`` of the level-0 tiles, ``None`` for a strip (untiled) TIFF.
    properties
        A subset of the slide's properties (the backend's own and short vendor values).
    warnings
        One-line warnings (no mpp, implausible mpp, no pyramid, the reader library's own
        warnings...), each naming the file.
    """

    path: Path
    backend: str
    vendor: str | None
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None
    mpp_source: MppSource
    slide_mpp: tuple[float, float] | None
    objective_power: float | None
    associated_images: tuple[str, ...]
    tile_size: tuple[int, int] | None
    properties: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def level_count(self) -> int:
        """Number of native pyramid levels."""
        return len(self.level_dimensions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (paths as strings, tuples as lists)."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["properties"] = {k: _jsonable(v) for k, v in self.properties.items()}
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _number(value: SupportsFloat | str | None) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def checked_slide_mpp(
    stored: tuple[float, float] | None, path: Path
) -> tuple[tuple[float, float] | None, list[str]]:
    """The slide's own ``(mpp_x, mpp_y)`` when present and plausible, and warnings.

    Parameters
    ----------
    stored
        ``(mpp_x, mpp_y)`` as the backend read it (either may be 0/NaN when missing).
    path
        The slide (named in warnings).
    """
    x, y = (_number(stored[0]), _number(stored[1])) if stored is not None else (None, None)
    known = [v for v in (x, y) if v is not None]
    if not known:
        return None, [f"{path.name}: the slide stores no microns per pixel (mpp); pass mpp= / --mpp"]
    mx = x if x is not None else known[0]  # one axis stored: the other is taken as equal
    my = y if y is not None else known[0]
    lo, hi = MPP_RANGE
    if not (lo <= mx <= hi and lo <= my <= hi):
        return None, [
            (f"{path.name}: the stored resolution ({mx:.5g} x {my:.5g} um/px) is not a microscope "
             f"resolution (outside {lo}..{hi} um/px, e.g. a screen-dpi tag); it is ignored: pass mpp= / --mpp")
        ]
    return (mx, my), []


def pick_properties(props: dict[str, Any]) -> dict[str, Any]:
    """The properties worth showing: the backend's own and short vendor values (no per-level keys)."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if value is None or ".level[" in key or key.endswith(".comment"):
            continue
        if isinstance(value, str) and len(value) > 200:
            continue
        if isinstance(value, (str, int, float, bool)):
            out[key] = value
    return out
