"""Which backend opens a slide: decided by the file's content, not only its suffix.

- a folder holding DICOM files, or a file with the DICOM preamble (``DICM`` at byte
  128): wsidicom;
- a TIFF / BigTIFF signature: tiffslide (which hands Ventana BIF and Philips TIFF on
  to OpenSlide), OpenSlide when tiffslide cannot open it;
- anything else OpenSlide recognises (MIRAX, VMS/VMU, SVSlide...): OpenSlide.

Each problem found here is a one-line :class:`~napari_regional_mil.errors.SlideError`
naming the file; an unknown format lists the supported ones.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SlideError
from . import _checks
from .formats import BACKENDS, DICOM_SUFFIX, supported_formats_text

__all__ = ["Kind", "check_backend_name", "sniff", "unsupported"]

#: What :func:`sniff` found: ``"tiff"``, ``"dicom"`` or ``"other"``.
Kind = str


def _dicom_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix.lower() == DICOM_SUFFIX or _is_dicom(p)))
    except OSError as exc:
        raise SlideError(f"{folder}: cannot be read ({_checks.one_line(exc)})") from exc


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _check_mirax(path: Path) -> None:
    """A MIRAX ``.mrxs`` file needs its data folder (same name, no suffix) beside it."""
    data = path.with_suffix("")
    if not data.is_dir():
        raise SlideError(
            f"{path}: MIRAX slide without its data folder ({data.name}/ must sit beside the .mrxs file; "
            "copy the folder with it)"
        )
    if not any(p.name.lower() == "slidedat.ini" for p in data.iterdir()):
        raise SlideError(f"{path}: MIRAX data folder {data.name}/ has no Slidedat.ini (incomplete copy?)")


def sniff(path: Path) -> Kind:
    """What ``path`` holds, from its first bytes (or, for a folder, its files).

    Raises
    ------
    SlideError
        Missing, unreadable or empty; a folder that is not a DICOM WSI; a MIRAX file
        without its data folder.
    """
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    if path.is_dir():
        if _dicom_files(path):
            return "dicom"
        if (path / "Slidedat.ini").is_file():
            raise SlideError(f"{path}: is the data folder of a MIRAX slide; open the .mrxs file beside it")
        raise SlideError(
            f"{path}: is a folder, not a slide file (a folder is read only as a DICOM WSI, and it holds "
            "no DICOM files)"
        )
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise SlideError(f"{path}: cannot be read ({_checks.one_line(exc)})") from exc
    if size == 0:
        raise SlideError(f"{path}: empty file (0 bytes)")
    if head[:4] in _checks.TIFF_MAGIC:
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    if path.suffix.lower() == ".mrxs":
        _check_mirax(path)
    return "other"


def unsupported(path: Path) -> SlideError:
    """The one-line error for a file no backend reads, listing the supported formats."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        head = b""
    return SlideError(
        f"{path}: not a supported slide format (file starts with {head!r}); supported: {supported_formats_text()}"
    )


def check_backend_name(path: Path, backend: str) -> str:
    """Validate a forced backend name."""
    if backend not in BACKENDS:
        raise SlideError(f"{path}: unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend
