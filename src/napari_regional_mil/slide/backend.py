"""The one interface every slide reader backend implements (tiffslide, OpenSlide, wsidicom).

A backend opens a slide's header, says what it holds (levels, mpp, properties,
associated images) and reads pixels: per level an array-like source the display
pyramid wraps lazily (:mod:`.pyramid`), and thread-safe regions for patches.
:class:`~napari_regional_mil.slide.Slide` holds one backend and adds the checks, the
mpp policy and the display pyramid, the same for all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["BackendHeader", "LevelSource", "RegionLevel", "SlideBackend", "to_rgb"]


@dataclass
class BackendHeader:
    """What a backend read from a slide's header (no pixel data).

    Parameters
    ----------
    vendor
        Format / scanner vendor as the library reports it, ``None`` for a generic TIFF.
    level_dimensions
        ``(width, height)`` of every native level, largest first.
    level_downsamples
        Downsample of every level relative to level 0.
    mpp
        The slide's own ``(mpp_x, mpp_y)`` when stored (not yet checked), else ``None``.
    objective_power
        Scanning objective magnification, when stored.
    tile_size
        ``(width, height)`` of the level-0 tiles, ``None`` when untiled.
    properties
        The library's properties (strings and numbers).
    warnings
        One-line warnings found while opening (library warnings included).
    """

    vendor: str | None
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None
    objective_power: float | None
    tile_size: tuple[int, int] | None
    properties: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LevelSource:
    """One native level's pixels for the display pyramid.

    Parameters
    ----------
    array
        Array-like with ``shape`` ``(h, w, c)`` (c = 3 or 4), ``dtype`` uint8 and
        ``__getitem__`` on ``(rows, cols)`` slices returning a numpy array.
    tile
        ``(rows, cols)`` of the native tiles (or strip bands): the unit a damaged read is
        narrowed down to. The display chunks are whole multiples of it (see
        :func:`~napari_regional_mil.slide.pyramid.display_chunks`).
    direct
        True when ``array`` is already in memory or memory-mapped (reads cannot fail
        to decode, so no guard is needed).
    """

    array: Any
    tile: tuple[int, int]
    direct: bool = False


def to_rgb(arr: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB from RGB, RGBA (transparent -> ``background``) or grey."""
    a = np.asarray(arr)
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if a.shape[2] == 4:
        alpha = a[..., 3]
        rgb = np.ascontiguousarray(a[..., :3])
        if not alpha.all():
            rgb[alpha == 0] = background
        return rgb
    return np.ascontiguousarray(a[..., :3])


class RegionLevel:
    """An array-like over one level of a backend that reads regions (OpenSlide, DICOM).

    ``level[y0:y1, x0:x1]`` reads that region of the level (in the level's pixels)
    through ``read(x, y, width, height)``, so dask can wrap it with tile-sized chunks.
    """

    def __init__(self, read: Callable[[int, int, int, int], np.ndarray], width: int, height: int) -> None:
        self._read = read
        self.shape = (int(height), int(width), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        rows = key[0] if len(key) > 0 else slice(None)
        cols = key[1] if len(key) > 1 else slice(None)
        rest = key[2:]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            out = np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        else:
            out = self._read(x0, y0, x1 - x0, y1 - y0)
        return out[(slice(None), slice(None), *rest)] if rest else out


class SlideBackend(ABC):
    """A slide opened by one reader library.

    Subclasses set :attr:`name`, open the file in ``__init__`` (raising any exception:
    :class:`~napari_regional_mil.slide.Slide` turns it into a one-line
    :class:`~napari_regional_mil.errors.SlideError`) and fill :attr:`header`.

    Parameters
    ----------
    path
        The slide file or DICOM folder.
    """

    #: The backend's name (``"tiffslide"``, ``"openslide"``, ``"wsidicom"``).
    name: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: BackendHeader

    @abstractmethod
    def level_sources(self) -> list[LevelSource]:
        """Every native level's pixels, level 0 first (lazy: nothing read yet)."""

    @abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """``(h, w, 3)`` uint8 of a region at ``location`` (level-0 px) of ``level``; thread-safe."""

    @abstractmethod
    def associated_names(self) -> tuple[str, ...]:
        """Names of the associated images (``"label"``, ``"macro"``, ``"thumbnail"``...)."""

    @abstractmethod
    def associated_image(self, name: str) -> np.ndarray:
        """An associated image as ``(h, w, 3)`` uint8."""

    def check_pixels(self) -> None:
        """Decode a little of the smallest level so an undecodable slide fails at open.

        The default reads up to 64 x 64 px at the top-left of the smallest level.
        """
        w, h = self.header.level_dimensions[-1]
        last = len(self.header.level_dimensions) - 1
        self.read_region((0, 0), last, (min(64, w), min(64, h)))

    @abstractmethod
    def close(self) -> None:
        """Release every file handle (idempotent)."""
