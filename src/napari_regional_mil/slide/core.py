"""Opening a whole-slide image: :func:`open_slide` and :class:`Slide`."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SlideError
from ..slide import _checks
from ..slide.info import SlideInfo, pick_properties, slide_mpp_from_properties
from ..slide.pyramid import build_pyramid, native_level, zarr_levels

__all__ = ["Slide", "open_slide", "DISPLAY_MIN_SIZE"]

#: Display pyramids go down to a level whose longer side is at most this many px.
DISPLAY_MIN_SIZE = 1024


def open_slide(path: str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """Open a whole-slide image (any format tiffslide reads).

    Opening reads only the TIFF structure and one small tile: its cost does not depend
    on the slide's size.

    Parameters
    ----------
    path
        The slide file (.svs, .tif, .tiff, .ndpi, .scn, .bif, .qptiff, ...).
    mpp
        Level-0 microns per pixel to use instead of the slide's own (required for
        slides that store none).

    Returns
    -------
    Slide

    Raises
    ------
    SlideError
        The file is missing, empty, not a slide, truncated, not 2-D 8-bit RGB, or its
        compression cannot be decoded; the message names the file and the problem.
    """
    return Slide(path, mpp=mpp)


class Slide:
    """An opened slide: metadata, a lazy display pyramid and thread-safe region reads.

    Use :func:`open_slide`; close with :meth:`close` or a ``with`` block.

    Attributes
    ----------
    path : pathlib.Path
        The slide file.
    info : SlideInfo
        Its metadata (dimensions, levels, mpp and where it came from, warnings...).
    """

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None) -> None:
        import tiffslide

        self.path = Path(path).expanduser()
        _checks.check_file(self.path)
        user_mpp = _checks.check_user_mpp(self.path, mpp)
        with _checks.quiet_tifffile() as logged:  # tifffile's log lines would precede our one-line error
            try:
                handle = tiffslide.TiffSlide(self.path)
            except Exception as exc:
                raise _checks.diagnose_open_failure(self.path, exc) from exc
            try:
                self._handle = handle
                self.info = self._read_info(handle, user_mpp)
            except SlideError:
                handle.close()
                raise
            except Exception as exc:
                handle.close()
                raise _checks.diagnose_open_failure(self.path, exc) from exc
        if logged:  # opened despite damage tifffile noticed (e.g. a broken extra IFD): say so
            self.info = replace(self.info, warnings=(*self.info.warnings, f"{self.path.name}: tifffile: {logged[0]}"))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._thread_handles: list[Any] = []
        self._pyramid: list[Any] | None = None
        self._closed = False

    # --- opening -------------------------------------------------------------------------------
    def _read_info(self, handle: Any, user_mpp: float | None) -> SlideInfo:
        path = self.path
        tif = handle.ts_tifffile
        props = dict(handle.properties)
        series = tif.series[int(props.get("tiffslide.series-index") or 0)]
        self._pages = [lvl.keyframe for lvl in series.levels]
        _checks.check_data_extent(path, self._pages)
        arrays = zarr_levels(handle.zarr_group)
        _checks.check_levels(path, arrays)
        _checks.check_decodes(path, arrays[-1])
        self._arrays = arrays
        slide_mpp, warnings = slide_mpp_from_properties(props, path)
        if user_mpp is not None:
            mpp, source, warnings = (user_mpp, user_mpp), "user", []
        elif slide_mpp is not None:
            mpp, source = slide_mpp, "slide"
        else:
            mpp, source = None, "none"
        page0 = self._pages[0]
        tile = (int(page0.tilewidth), int(page0.tilelength)) if page0.is_tiled else None
        if tile is None:
            warnings.append(f"{path.name}: not tiled (strips): lower display levels are computed lazily")
        objective = props.get("tiffslide.objective-power")
        try:
            objective = float(objective) if objective is not None else None
        except (TypeError, ValueError):
            objective = None
        try:
            associated = tuple(handle.associated_images.keys())
        except Exception:  # a broken associated image must not block the slide
            associated = ()
        return SlideInfo(
            path=path,
            vendor=props.get("tiffslide.vendor"),
            dimensions=tuple(int(v) for v in handle.dimensions),
            level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
            level_downsamples=tuple(float(d) for d in handle.level_downsamples),
            mpp=(float(mpp[0]), float(mpp[1])) if mpp else None,
            mpp_source=source,
            slide_mpp=slide_mpp,
            objective_power=objective,
            associated_images=associated,
            tile_size=tile,
            properties=pick_properties(props),
            warnings=tuple(warnings),
        )

    # --- physical size -------------------------------------------------------------------------
    @property
    def mpp_xy(self) -> tuple[float, float]:
        """``(mpp_x, mpp_y)`` level-0 microns per pixel (user override > slide).

        Raises
        ------
        SlideError
            When the slide stores no (plausible) mpp and none was given.
        """
        if self.info.mpp is None:
            raise SlideError(
                f"{self.path}: the slide has no microns-per-pixel (mpp) information; "
                "pass mpp= (Python), --mpp (CLI) or set it in the Slide widget"
            )
        return self.info.mpp

    @property
    def mpp(self) -> float:
        """Level-0 microns per pixel (mean of x and y); raises :class:`SlideError` if unknown."""
        mx, my = self.mpp_xy
        return (mx + my) / 2

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.info.dimensions

    def level_for_mpp(self, target_mpp: float) -> int:
        """The coarsest native level whose resolution is at least as fine as ``target_mpp``.

        Reading there and resizing down loses nothing; level 0 when even it is coarser.
        """
        if not target_mpp > 0:
            raise ValueError(f"target_mpp must be positive, got {target_mpp}")
        best = 0
        for level, ds in enumerate(self.info.level_downsamples):
            if self.mpp * ds <= target_mpp * 1.01:
                best = level
        return best

    # --- pixels --------------------------------------------------------------------------------
    def display_pyramid(self) -> list[Any]:
        """The display pyramid: RGB uint8 dask arrays ``(h, w, 3)``, largest first.

        Native levels have the native tiles as chunks; slides whose smallest level is
        larger than ``DISPLAY_MIN_SIZE`` px get lazily halved extra levels. Cached.
        """
        self._check_open()
        if self._pyramid is None:
            natives = [
                native_level(arr, tiled=bool(page.is_tiled), path=self.path, page=page)
                for arr, page in zip(self._arrays, self._pages)
            ]
            self._pyramid = build_pyramid(natives, min_size=DISPLAY_MIN_SIZE)
        return self._pyramid

    def display_downsamples(self) -> list[tuple[float, float]]:
        """``(downsample_x, downsample_y)`` of every display level relative to level 0."""
        w0, h0 = self.info.dimensions
        return [(w0 / lvl.shape[1], h0 / lvl.shape[0]) for lvl in self.display_pyramid()]

    def _thread_handle(self) -> Any:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            import tiffslide

            self._check_open()
            with _checks.quiet_tifffile():
                handle = tiffslide.TiffSlide(self.path)
            with self._lock:
                self._thread_handles.append(handle)
            self._local.handle = handle
        return handle

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a region; safe to call from many threads (one file handle per thread).

        Parameters
        ----------
        location
            ``(x, y)`` top-left in **level-0** pixels.
        level
            Native level index.
        size
            ``(width, height)`` in pixels of ``level``.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` uint8 RGB.
        """
        if not 0 <= level < self.info.level_count:
            raise ValueError(f"level must lie in 0..{self.info.level_count - 1}, got {level}")
        width, height = int(size[0]), int(size[1])
        if width < 1 or height < 1:
            raise ValueError(f"size must be positive, got {size}")
        handle = self._thread_handle()
        try:
            out = handle.read_region((int(location[0]), int(location[1])), level, (width, height), as_array=True)
        except Exception as exc:
            raise SlideError(f"{self.path}: cannot read region at {tuple(location)} ({_checks.one_line(exc)})") from exc
        return np.ascontiguousarray(out[..., :3])

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``"label"``, ``"macro"``, ``"thumbnail"``...) as RGB uint8."""
        self._check_open()
        if name not in self.info.associated_images:
            have = ", ".join(self.info.associated_images) or "none"
            raise SlideError(f"{self.path}: no associated image {name!r} (has: {have})")
        try:
            image = self._handle.associated_images[name]
            arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        except Exception as exc:
            raise SlideError(f"{self.path}: cannot read associated image {name!r} ({_checks.one_line(exc)})") from exc
        return np.ascontiguousarray(arr[..., :3]) if arr.ndim == 3 else np.stack([arr] * 3, axis=-1)

    def thumbnail(self, max_size: int = 512) -> np.ndarray:
        """An RGB uint8 overview whose longer side is at most ``max_size`` px.

        Reads only the smallest display level (at most ``DISPLAY_MIN_SIZE`` px).
        """
        from PIL import Image

        try:
            level = np.asarray(self.display_pyramid()[-1])
        except Exception as exc:  # a corrupt tile (codec errors have their own types)
            raise SlideError(f"{self.path}: cannot read the overview ({_checks.one_line(exc)})") from exc
        h, w = level.shape[:2]
        scale = min(1.0, max_size / max(h, w))
        if scale >= 1.0:
            return np.ascontiguousarray(level)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return np.asarray(Image.fromarray(level).resize(size, Image.Resampling.BOX))

    # --- lifetime ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if getattr(self, "_closed", False):
            raise SlideError(f"{self.path}: the slide was closed")

    def close(self) -> None:
        """Close every file handle (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        with self._lock:
            handles, self._thread_handles = self._thread_handles, []
        for handle in [self._handle, *handles]:
            try:
                handle.close()
            except Exception:  # pragma: no cover - closing must not raise
                pass

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.info.dimensions
        mpp = f"{self.info.mpp[0]:.4g} um/px ({self.info.mpp_source})" if self.info.mpp else "no mpp"
        return f"Slide({str(self.path)!r}, {w} x {h} px, {self.info.level_count} levels, {mpp})"
