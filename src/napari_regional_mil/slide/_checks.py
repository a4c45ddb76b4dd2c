"""Cheap checks that turn bad slide files into one-line :class:`SlideError` messages.

Every check costs the same whatever the slide size: file signature, the TIFF structure
tifffile already parsed (shapes, dtypes, tile offsets), and decoding one small tile.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SlideError

__all__ = [
    "TIFF_MAGIC",
    "check_data_extent",
    "check_decodes",
    "check_levels",
    "check_tiff_extent",
    "check_user_mpp",
    "diagnose_open_failure",
    "library_warnings",
    "one_line",
    "quiet_libraries",
]

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: Loggers of the reader libraries whose records are kept off stderr while a slide opens.
LIBRARY_LOGGERS = ("tifffile", "tiffslide", "openslide", "wsidicom", "pydicom")
#: Modules whose Python warnings become the slide's one-line warnings.
LIBRARY_MODULES = ("tifffile", "tiffslide", "openslide", "wsidicom", "pydicom", "zarr", "numcodecs", "imagecodecs")

_QUIET = threading.local()


class _QuietFilter(logging.Filter):
    """Drops the libraries' log records in a thread inside :func:`quiet_libraries` (keeping their text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        seen = getattr(_QUIET, "seen", None)
        if seen is None:
            return True
        if record.levelno >= logging.WARNING:
            seen.append(f"{record.name.split('.')[0]}: " + " ".join(record.getMessage().split())[:200])
        return False


_FILTER = _QuietFilter()


@contextlib.contextmanager
def quiet_libraries() -> Iterator[list[str]]:
    """Keep the reader libraries' log messages off stderr in this thread.

    A broken file must give one line (our :class:`SlideError`), not tifffile's or
    wsidicom's log lines first; their warnings are collected (``"tifffile: ..."``) in the
    yielded list instead.
    """
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    outer = getattr(_QUIET, "seen", None)
    seen: list[str] = []
    _QUIET.seen = seen
    try:
        yield seen
    finally:
        _QUIET.seen = outer


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Collect the reader libraries' Python warnings as one-line texts (``"tiffslide: ..."``).

    Warnings raised by other code meanwhile are shown as usual (re-issued on exit).
    """
    collected: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield collected
    for rec in records:
        module = _warning_module(rec.filename)
        # what a library says about the file (UserWarning, RuntimeWarning); not e.g. a ResourceWarning of an
        # unrelated handle the garbage collector closed meanwhile, nor deprecations meant for developers
        if module is not None and issubclass(rec.category, (UserWarning, RuntimeWarning)):
            text = f"{module}: " + " ".join(str(rec.message).split())[:200]
            if text not in collected:
                collected.append(text)
        else:
            warnings.warn_explicit(rec.message, rec.category, rec.filename, rec.lineno)


def _warning_module(filename: str) -> str | None:
    parts = Path(filename).parts
    for name in LIBRARY_MODULES:
        if name in parts:
            return name
    return None


def one_line(exc: BaseException) -> str:
    """``ExceptionType: message`` squeezed onto one line."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"[:300]


def diagnose_open_failure(path: Path, exc: BaseException) -> SlideError:
    """A clear :class:`SlideError` for a file that tiffslide failed to open."""
    import tifffile  # lazy: startup (the reader's slide sniffing stays light; tifffile only to diagnose a file)

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return SlideError(f"{path}: TIFF holds no image")
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            level0 = _level0_problem(shape, np.dtype(series.dtype), axes)
            if level0:
                return SlideError(f"{path}: {level0}")
    except Exception as inner:  # the TIFF structure itself is broken
        return SlideError(f"{path}: not a readable TIFF, maybe truncated or corrupt ({one_line(inner)})")
    return SlideError(f"{path}: cannot be opened as a slide ({one_line(exc)})")


def _level0_problem(shape: tuple[int, ...], dtype: np.dtype, axes: str = "") -> str | None:
    """Why an image of this shape/dtype is not a 2-D 8-bit RGB slide (None when it is)."""
    dims = " x ".join(str(s) for s in shape)
    if len(shape) > 3 or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
        where = f" (axes {axes})" if axes else ""
        return (f"{len(shape)}-D image {dims}{where}; only 2-D RGB whole-slide images are supported "
                "(no z-stacks, time series or channel stacks)")
    channels = shape[-1] if len(shape) == 3 else 1
    if channels not in (3, 4):
        plural = "s" if channels != 1 else ""
        return f"not an RGB image ({channels} channel{plural}, {dims}); only RGB slides are supported"
    if dtype != np.uint8:
        return f"not an 8-bit RGB image (sample type {dtype}); only 8-bit RGB slides are supported"
    return None


def check_levels(path: Path, arrays: list[Any]) -> None:
    """Check every zarr level is a non-empty (h, w, 3|4) uint8 image."""
    if not arrays:
        raise SlideError(f"{path}: slide has no image levels")
    problem = _level0_problem(tuple(arrays[0].shape), np.dtype(arrays[0].dtype))
    if problem:
        raise SlideError(f"{path}: {problem}")
    if min(arrays[0].shape[:2]) < 1:
        raise SlideError(f"{path}: image has no pixels ({arrays[0].shape[1]} x {arrays[0].shape[0]})")


def check_data_extent(path: Path, pages: list[Any]) -> None:
    """Reject a file whose image data point beyond its end (a truncated download/copy).

    ``pages`` are the pyramid levels' tifffile pages (their tile offsets are already
    loaded by tiffslide, so this costs microseconds per thousand tiles).
    """
    size = path.stat().st_size
    for page in pages:
        offsets = np.asarray(getattr(page, "dataoffsets", ()), dtype=np.int64)
        counts = np.asarray(getattr(page, "databytecounts", ()), dtype=np.int64)
        if offsets.size and counts.size == offsets.size:
            end = int((offsets + counts).max())
            if end > size:
                raise SlideError(
                    f"{path}: file is truncated (image data run to byte {end:,} but the file has {size:,} bytes)"
                )


def check_tiff_extent(path: Path) -> None:
    """For a TIFF-based file read by another library: parse it with tifffile and reject truncation.

    Every page's tile/strip offsets must lie inside the file (the cost is one pass over
    the IFDs, not over the pixels).
    """
    import tifffile  # lazy: startup (the reader's slide sniffing stays light; tifffile only to diagnose a file)

    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            check_data_extent(path, pages)
    except SlideError:
        raise
    except Exception as exc:  # the TIFF structure itself is broken
        raise SlideError(f"{path}: not a readable TIFF, maybe truncated or corrupt ({one_line(exc)})") from exc


def check_decodes(path: Path, array: Any) -> None:
    """Decode one tile of the smallest level, so an unsupported compression fails now."""
    chunks = array.chunks if hasattr(array, "chunks") else array.shape
    h = min(int(chunks[0]), array.shape[0], 64)
    w = min(int(chunks[1]), array.shape[1], 64)
    try:
        np.asarray(array[:h, :w])
    except Exception as exc:
        text = one_line(exc)
        if "compression" in text.lower() or "codec" in text.lower() or "decode" in text.lower():
            raise SlideError(f"{path}: cannot decode the image data, unsupported compression ({text})") from exc
        raise SlideError(f"{path}: cannot decode the image data ({text})") from exc


def check_user_mpp(path: Path, mpp: float | None) -> float | None:
    """Validate a user-given mpp (positive, finite)."""
    if mpp is None:
        return None
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise SlideError(f"{path}: mpp must be a number of microns per pixel, got {mpp!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SlideError(f"{path}: mpp must be a positive number of microns per pixel, got {mpp!r}")
    return value
