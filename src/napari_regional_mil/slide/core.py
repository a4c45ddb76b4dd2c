"""Opening a whole-slide image: :func:`open_slide` and :class:`Slide` (any backend)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SlideError
from . import _checks, detect
from .backend import SlideBackend
from .backend_openslide import OpenSlideBackend, openslide_format
from .backend_tiffslide import PreferOpenSlide, TiffslideBackend
from .backend_wsidicom import WsiDicomBackend
from .damage import DamageLog
from .info import MppSource, SlideInfo, checked_slide_mpp, pick_properties
from .pyramid import build_pyramid, native_level, unique_name

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["DISPLAY_MIN_SIZE", "Slide", "open_slide"]

#: Display pyramids go down to a level whose longer side is at most this many px.
DISPLAY_MIN_SIZE = 1024


def open_slide(
    path: str | os.PathLike, *, mpp: float | None = None, backend: str | None = None, check_pixels: bool = True
) -> Slide:
    """Open a whole-slide image with the backend its content calls for.

    Opening reads the header and (with ``check_pixels``) one small tile: its cost does not
    depend on the slide's size.

    Parameters
    ----------
    path
        The slide file, or a folder of DICOM WSI files (see
        :data:`~napari_regional_mil.slide.formats.FORMATS`).
    mpp
        Level-0 microns per pixel to use instead of the slide's own (required for
        slides that store none).
    backend
        Force a backend (``"tiffslide"``, ``"openslide"``, ``"wsidicom"``) instead of
        choosing by content.
    check_pixels
        Decode a little of the smallest level now, so an undecodable slide fails at
        open (the napari reader leaves it to the first frame, whose tiles are guarded).

    Returns
    -------
    Slide

    Raises
    ------
    SlideError
        The file is missing, empty, not a supported slide, truncated, not 2-D 8-bit RGB,
        or its compression cannot be decoded; the message names the file and the problem.
    """
    return Slide(path, mpp=mpp, backend=backend, check_pixels=check_pixels)


def _open_forced(path: Path, name: str) -> SlideBackend:
    try:
        if name == "tiffslide":
            return TiffslideBackend(path, prefer_openslide=False)
        if name == "openslide":
            return OpenSlideBackend(path)
        return WsiDicomBackend(path)
    except SlideError:
        raise
    except Exception as exc:
        raise _backend_error(path, name, exc) from exc


def _open_tiff(path: Path) -> SlideBackend:
    """tiffslide; OpenSlide for what it reads better or when tiffslide cannot open a vendor file."""
    try:
        return TiffslideBackend(path)
    except PreferOpenSlide:
        try:
            return _open_forced(path, "openslide")
        except SlideError:
            return _open_forced(path, "tiffslide")
    except SlideError as exc:
        if openslide_format(path) in (None, "generic-tiff"):
            raise
        try:
            return _open_forced(path, "openslide")
        except SlideError:
            raise exc from None


def _open_any(path: Path, backend: str | None) -> SlideBackend:
    """Open ``path`` with the forced backend, or the one its content calls for."""
    kind = detect.sniff(path)
    if backend is not None:
        return _open_forced(path, detect.check_backend_name(path, backend))
    if kind == "tiff":
        return _open_tiff(path)
    if kind == "dicom":
        return _open_forced(path, "wsidicom")
    fmt = openslide_format(path)
    if fmt is None:
        raise detect.unsupported(path)
    return _open_forced(path, "wsidicom" if fmt == "dicom" else "openslide")


def _backend_error(path: Path, name: str, exc: BaseException) -> SlideError:
    text = _checks.one_line(exc)
    if name == "openslide" and "Unsupported or missing image file" in text:
        return SlideError(f"{path}: OpenSlide does not read this file ({text})")
    if name == "wsidicom":
        return SlideError(f"{path}: not a readable DICOM WSI ({text})")
    return SlideError(f"{path}: cannot be opened as a slide with {name} ({text})")


class Slide:
    """An opened slide: metadata, a lazy display pyramid and thread-safe region reads.

    Use :func:`open_slide`; close with :meth:`close` or a ``with`` block.

    Attributes
    ----------
    path : pathlib.Path
        The slide file (or DICOM folder).
    info : SlideInfo
        Its metadata (backend, dimensions, levels, mpp and where it came from, warnings...).
    damage : DamageLog
        Display tiles that failed to decode so far, per level.
    """

    def __init__(
        self, path: str | os.PathLike, *, mpp: float | None = None, backend: str | None = None,
        check_pixels: bool = True,
    ) -> None:
        self.path = Path(path).expanduser()
        self._closed = True
        user_mpp = _checks.check_user_mpp(self.path, mpp)
        with _checks.library_warnings() as warned, _checks.quiet_libraries() as logged:
            handle = _open_any(self.path, backend)
            try:
                if check_pixels:
                    self._check_pixels(handle)
                self.info = self._read_info(handle, user_mpp)
            except BaseException:
                handle.close()
                raise
        extra = [f"{self.path.name}: {text}" for text in dict.fromkeys([*warned, *logged])]
        if extra:  # opened despite what the library said (e.g. a broken extra IFD): say so
            self.info = replace(self.info, warnings=(*self.info.warnings, *extra))
        self._backend = handle
        self._pyramid: list[da.Array] | None = None
        self.damage = DamageLog(self.path)
        self._closed = False

    # --- opening -------------------------------------------------------------------------------
    def _check_pixels(self, handle: SlideBackend) -> None:
        try:
            handle.check_pixels()
        except SlideError:
            raise
        except Exception as exc:
            raise SlideError(f"{self.path}: cannot decode the image data ({_checks.one_line(exc)})") from exc

    def _read_info(self, handle: SlideBackend, user_mpp: float | None) -> SlideInfo:
        head = handle.header
        slide_mpp, warnings = checked_slide_mpp(head.mpp, self.path)
        source: MppSource
        if user_mpp is not None:
            mpp, source, warnings = (user_mpp, user_mpp), "user", []
        elif slide_mpp is not None:
            mpp, source = slide_mpp, "slide"
        else:
            mpp, source = None, "none"
        return SlideInfo(
            path=self.path,
            backend=handle.name,
            vendor=head.vendor,
            dimensions=head.level_dimensions[0],
            level_dimensions=head.level_dimensions,
            level_downsamples=head.level_downsamples,
            mpp=(float(mpp[0]), float(mpp[1])) if mpp else None,
            mpp_source=source,
            slide_mpp=slide_mpp,
            objective_power=head.objective_power,
            associated_images=handle.associated_names(),
            tile_size=head.tile_size,
            properties=pick_properties(head.properties),
            warnings=(*head.warnings, *warnings),
        )

    @property
    def backend(self) -> SlideBackend:
        """The backend that reads this slide."""
        self._check_open()
        return self._backend

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
    def display_pyramid(self) -> list[da.Array]:
        """The display pyramid: RGB uint8 dask arrays ``(h, w, 3)``, largest first.

        Native levels have the native tiles as chunks and read through a guarded chunk
        loader (a tile that fails to decode is flat grey, counted in :attr:`damage` and
        announced once per level); slides whose smallest level is larger than
        ``DISPLAY_MIN_SIZE`` px get lazily halved extra levels. Cached.
        """
        self._check_open()
        if self._pyramid is None:
            prefix = unique_name(f"slide-{self._backend.name}")
            natives = [
                native_level(source, level=i, log=self.damage, name=prefix)
                for i, source in enumerate(self._backend.level_sources())
            ]
            self._pyramid = build_pyramid(natives, min_size=DISPLAY_MIN_SIZE)
        return self._pyramid

    def display_downsamples(self) -> list[tuple[float, float]]:
        """``(downsample_x, downsample_y)`` of every display level relative to level 0."""
        w0, h0 = self.info.dimensions
        return [(w0 / lvl.shape[1], h0 / lvl.shape[0]) for lvl in self.display_pyramid()]

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
        backend = self.backend
        try:
            with _checks.quiet_libraries():
                out = backend.read_region((int(location[0]), int(location[1])), level, (width, height))
        except Exception as exc:
            raise SlideError(f"{self.path}: cannot read region at {tuple(location)} ({_checks.one_line(exc)})") from exc
        return np.ascontiguousarray(out)

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``"label"``, ``"macro"``, ``"thumbnail"``...) as RGB uint8."""
        self._check_open()
        if name not in self.info.associated_images:
            have = ", ".join(self.info.associated_images) or "none"
            raise SlideError(f"{self.path}: no associated image {name!r} (has: {have})")
        try:
            return self.backend.associated_image(name)
        except Exception as exc:
            raise SlideError(f"{self.path}: cannot read associated image {name!r} ({_checks.one_line(exc)})") from exc

    def thumbnail(self, max_size: int = 512) -> np.ndarray:
        """An RGB uint8 overview whose longer side is at most ``max_size`` px.

        Reads only the smallest display level (at most ``DISPLAY_MIN_SIZE`` px).
        """
        from PIL import Image  # lazy: startup (the reader imports slide: Pillow only for thumbnails)

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
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.info.dimensions
        mpp = f"{self.info.mpp[0]:.4g} um/px ({self.info.mpp_source})" if self.info.mpp else "no mpp"
        return (f"Slide({str(self.path)!r}, {self.info.backend}, {w} x {h} px, {self.info.level_count} levels, "
                f"{mpp})")
