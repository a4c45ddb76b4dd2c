"""The tiffslide backend: TIFF-based slides (SVS, generic/OME TIFF, NDPI, SCN, QPTIFF...).

Opening parses the TIFF structure only; the display pyramid reads tiffslide's zarr
arrays (chunks = the native tiles), untiled images are memory-mapped when stored
uncompressed, and region reads use one tiffslide handle per thread.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, SupportsFloat

import numpy as np

from ..errors import SlideError
from . import _checks
from .backend import BackendHeader, LevelSource, SlideBackend, to_rgb

__all__ = ["STRIP_CHUNK", "PreferOpenSlide", "TiffslideBackend"]

#: Chunk side used for untiled (strip) images.
STRIP_CHUNK = 1024


class PreferOpenSlide(Exception):
    """Raised at open for a TIFF that OpenSlide reads better (Ventana BIF, Philips TIFF)."""


def _number(value: SupportsFloat | str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _memmap(path: Path, page: Any) -> np.ndarray | None:
    """A read-only memory map of an uncompressed, contiguous (h, w, c) uint8 page, else None."""
    try:
        if not page.is_memmappable or page.dtype != np.uint8 or len(page.shape) != 3:
            return None
        offset = int(page.dataoffsets[0])
        return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(page.shape))
    except (OSError, ValueError, IndexError):  # not mappable after all: fall back to zarr
        return None


def zarr_levels(group: Any) -> list[Any]:
    """The zarr arrays of a tiffslide zarr group, level 0 first (keys sorted numerically)."""
    if hasattr(group, "shape"):  # a single array rather than a group
        return [group]
    keys = sorted(group.array_keys(), key=int)
    return [group[k] for k in keys]


class TiffslideBackend(SlideBackend):
    """A TIFF-based slide read with tiffslide.

    Parameters
    ----------
    path
        The slide file.
    prefer_openslide
        Raise :class:`PreferOpenSlide` for formats OpenSlide reads better.
    """

    name = "tiffslide"

    def __init__(self, path: Path, *, prefer_openslide: bool = True) -> None:
        import tiffslide  # lazy: startup (a vendor reader, loaded when a slide is opened)

        super().__init__(path)
        try:
            handle = tiffslide.TiffSlide(path)
        except Exception as exc:
            raise _checks.diagnose_open_failure(path, exc) from exc
        self._handle = handle
        self._local = threading.local()
        self._lock = threading.Lock()
        self._thread_handles: list[Any] = []
        try:
            tif = handle.ts_tifffile
            if prefer_openslide and (tif.is_bif or tif.is_philips):
                raise PreferOpenSlide(path)
            self._open(handle)
        except (SlideError, PreferOpenSlide):
            handle.close()
            raise
        except Exception as exc:
            handle.close()
            raise _checks.diagnose_open_failure(path, exc) from exc

    def _open(self, handle: Any) -> None:
        path = self.path
        tif = handle.ts_tifffile
        props = dict(handle.properties)
        series = tif.series[int(props.get("tiffslide.series-index") or 0)]
        self._pages = [lvl.keyframe for lvl in series.levels]
        _checks.check_data_extent(path, self._pages)
        self._arrays = zarr_levels(handle.zarr_group)
        _checks.check_levels(path, self._arrays)
        page0 = self._pages[0]
        tile = (int(page0.tilewidth), int(page0.tilelength)) if page0.is_tiled else None
        warnings: list[str] = []
        if tile is None:
            warnings.append(f"{path.name}: not tiled (strips): lower display levels are computed lazily")
        mx, my = _number(props.get("tiffslide.mpp-x")), _number(props.get("tiffslide.mpp-y"))
        self.header = BackendHeader(
            vendor=props.get("tiffslide.vendor"),
            level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
            level_downsamples=tuple(float(d) for d in handle.level_downsamples),
            mpp=None if mx is None and my is None else (mx or my or 0.0, my or mx or 0.0),
            objective_power=_number(props.get("tiffslide.objective-power")),
            tile_size=tile,
            properties=props,
            warnings=warnings,
        )

    # --- pixels --------------------------------------------------------------------------------
    def level_sources(self) -> list[LevelSource]:
        """Zarr arrays (tiled: the native tiles); untiled levels memory-mapped or in row bands."""
        out = []
        for array, page in zip(self._arrays, self._pages):
            height, width = array.shape[:2]
            if page.is_tiled:
                out.append(LevelSource(array, (int(array.chunks[0]), int(array.chunks[1]))))
                continue
            mapped = _memmap(self.path, page)
            if mapped is not None:
                out.append(LevelSource(mapped, (min(STRIP_CHUNK, height), min(STRIP_CHUNK, width)), direct=True))
                continue
            strip = max(1, int(array.chunks[0]))
            rows = strip * max(1, -(-STRIP_CHUNK // strip))
            out.append(LevelSource(array, (min(rows, height), width)))
        return out

    def check_pixels(self) -> None:
        """Decode one tile of the smallest level (an unsupported compression fails now)."""
        _checks.check_decodes(self.path, self._arrays[-1])

    def _thread_handle(self) -> Any:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            import tiffslide  # lazy: startup (a vendor reader, loaded when a slide is opened)

            with _checks.library_warnings(), _checks.quiet_libraries():  # said once, at open
                handle = tiffslide.TiffSlide(self.path)
                _ = handle.properties  # parsed now (cached), so reads do not warn again
            with self._lock:
                self._thread_handles.append(handle)
            self._local.handle = handle
        return handle

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """One tiffslide handle per thread; ``(h, w, 3)`` uint8."""
        out = self._thread_handle().read_region(location, level, size, as_array=True)
        return to_rgb(out)

    # --- associated images ---------------------------------------------------------------------
    def associated_names(self) -> tuple[str, ...]:
        """Tiffslide's associated image names (a broken one does not block the slide)."""
        with contextlib.suppress(Exception):  # any tifffile error in an extra page
            return tuple(self._handle.associated_images.keys())
        return ()

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image as RGB uint8."""
        image = self._handle.associated_images[name]
        return to_rgb(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image))

    def close(self) -> None:
        """Close the main and the per-thread handles."""
        with self._lock:
            handles, self._thread_handles = self._thread_handles, []
        for handle in [self._handle, *handles]:
            with contextlib.suppress(Exception):  # closing must not raise
                handle.close()

    @property
    def thread_handle_count(self) -> int:
        """How many per-thread handles are open (for tests)."""
        return len(self._thread_handles)


def tiff_signature(path: Path) -> bool:
    """Whether ``path`` starts with a TIFF / BigTIFF signature."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _checks.TIFF_MAGIC
    except OSError as exc:
        raise SlideError(f"{path}: cannot be read ({_checks.one_line(exc)})") from exc
