"""The OpenSlide backend (openslide-python + the openslide-bin wheel).

MIRAX, Ventana BIF, Hamamatsu VMS/VMU, Leica SCN, Philips TIFF, Sakura SVSlide and
the TIFF formats tiffslide also reads. One OpenSlide handle serves every thread (the
library is thread-safe and releases the GIL while decoding); transparent pixels
(outside the scanned area) become the slide's background colour.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from . import _checks
from .backend import BackendHeader, LevelSource, RegionLevel, SlideBackend, to_rgb

__all__ = ["OpenSlideBackend", "openslide_format"]


def _number(value: Any) -> float | None:
    try:
        out = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return out


def openslide_format(path: Path) -> str | None:
    """OpenSlide's name for the format of ``path`` (``"mirax"``, ``"ventana"``...), or ``None``."""
    import openslide  # lazy: startup (a vendor reader and its native library, loaded when a slide needs it)

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except (OSError, ValueError, openslide.OpenSlideError):
        return None


def _background(props: dict[str, Any]) -> tuple[int, int, int]:
    text = str(props.get("openslide.background-color") or "FFFFFF")
    try:
        return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
    except ValueError:
        return (255, 255, 255)


class OpenSlideBackend(SlideBackend):
    """A slide read with OpenSlide.

    Parameters
    ----------
    path
        The slide file (for MIRAX the ``.mrxs`` file, with its data folder beside it).
    """

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide  # lazy: startup (a vendor reader and its native library, loaded when a slide needs it)

        super().__init__(path)
        with open(path, "rb") as fh:
            if fh.read(4) in _checks.TIFF_MAGIC:  # OpenSlide would open a truncated TIFF and fail per tile
                _checks.check_tiff_extent(path)
        self._slide = openslide.OpenSlide(str(path))
        try:
            self._open()
        except BaseException:
            self._slide.close()
            raise

    def _open(self) -> None:
        slide = self._slide
        props = dict(slide.properties)
        self._background = _background(props)
        mx, my = _number(props.get("openslide.mpp-x")), _number(props.get("openslide.mpp-y"))
        tw = props.get("openslide.level[0].tile-width")
        th = props.get("openslide.level[0].tile-height")
        tile = (int(tw), int(th)) if tw and th else None
        vendor = props.get("openslide.vendor")
        self.header = BackendHeader(
            vendor=None if vendor == "generic-tiff" else vendor,
            level_dimensions=tuple((int(w), int(h)) for w, h in slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            mpp=None if mx is None and my is None else (mx or my or 0.0, my or mx or 0.0),
            objective_power=_number(props.get("openslide.objective-power")),
            tile_size=tile,
            properties=props,
        )

    def _tile(self, level: int) -> tuple[int, int]:
        props = self.header.properties
        tw = props.get(f"openslide.level[{level}].tile-width")
        th = props.get(f"openslide.level[{level}].tile-height")
        if tw and th and int(tw) >= 64 and int(th) >= 64:
            return (min(int(th), 2048), min(int(tw), 2048))
        return (512, 512)

    def _level_read(self, level: int) -> Any:
        ds = self.header.level_downsamples[level]

        def read(x: int, y: int, width: int, height: int) -> np.ndarray:
            return self.read_region((round(x * ds), round(y * ds)), level, (width, height))

        return read

    def level_sources(self) -> list[LevelSource]:
        """One :class:`RegionLevel` per level, tiled as OpenSlide says (else 512 px)."""
        out = []
        for level, (w, h) in enumerate(self.header.level_dimensions):
            th, tw = self._tile(level)
            out.append(LevelSource(RegionLevel(self._level_read(level), w, h), (min(th, h), min(tw, w))))
        return out

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide's ``read_region`` as ``(h, w, 3)`` uint8 (transparent -> background)."""
        image = self._slide.read_region((int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1])))
        return to_rgb(np.asarray(image), self._background)

    def associated_names(self) -> tuple[str, ...]:
        """OpenSlide's associated image names (read without decoding them)."""
        import openslide  # lazy: startup (a vendor reader and its native library, loaded when a slide needs it)

        try:
            return tuple(self._slide.associated_images.keys())
        except openslide.OpenSlideError:
            return ()

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image as RGB uint8."""
        return to_rgb(np.asarray(self._slide.associated_images[name]), self._background)

    def close(self) -> None:
        """Close the OpenSlide handle."""
        with contextlib.suppress(Exception):  # closing must not raise
            self._slide.close()
