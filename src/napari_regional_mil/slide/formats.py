"""The one list of supported slide formats and file suffixes (core, no Qt, cheap to import).

Everything that offers, filters or names slide files uses this module: the napari
manifest's reader patterns (a test keeps ``napari.yaml`` in line), the file dialogs,
the cohort table, the embedding cache lookup, pretraining's slide lists and the CLI.
Which backend opens a file is decided by its content (:mod:`.detect`), not by the
suffix; the suffixes only say which files to offer.

>>> from napari_regional_mil.slide.formats import SLIDE_SUFFIXES, is_slide_file
>>> ".svs" in SLIDE_SUFFIXES and is_slide_file("CMU-1.SVS")
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BACKENDS",
    "DICOM_SUFFIX",
    "FORMATS",
    "SLIDE_SUFFIXES",
    "SlideFormat",
    "dialog_filter",
    "find_slides",
    "is_dicom_folder",
    "is_slide_file",
    "reader_patterns",
    "slide_name",
    "supported_formats_text",
]

#: The reader backends, in the order they are tried for a file they can all read.
BACKENDS: tuple[str, ...] = ("tiffslide", "openslide", "wsidicom")

#: A DICOM file; a folder of them is one DICOM WSI slide.
DICOM_SUFFIX = ".dcm"


@dataclass(frozen=True)
class SlideFormat:
    """One slide format: its name, its file suffixes and the backends that read it.

    Parameters
    ----------
    name
        Human-readable format name.
    suffixes
        Lower-case file suffixes with the dot.
    backends
        Backends that read it, preferred first.
    """

    name: str
    suffixes: tuple[str, ...]
    backends: tuple[str, ...]


#: Every supported format.
FORMATS: tuple[SlideFormat, ...] = (
    SlideFormat("Aperio SVS", (".svs",), ("tiffslide", "openslide")),
    SlideFormat("tiled pyramidal TIFF / BigTIFF (generic, OME, Philips, Ventana)", (".tif", ".tiff"),
                ("tiffslide", "openslide")),
    SlideFormat("Hamamatsu NDPI", (".ndpi",), ("tiffslide", "openslide")),
    SlideFormat("Hamamatsu VMS/VMU", (".vms", ".vmu"), ("openslide",)),
    SlideFormat("Leica SCN", (".scn",), ("tiffslide", "openslide")),
    SlideFormat("Ventana BIF", (".bif",), ("openslide", "tiffslide")),
    SlideFormat("PerkinElmer QPTIFF", (".qptiff",), ("tiffslide",)),
    SlideFormat("3DHistech MIRAX (with its data folder)", (".mrxs",), ("openslide",)),
    SlideFormat("Sakura SVSlide", (".svslide",), ("openslide",)),
    SlideFormat("DICOM WSI (a folder of .dcm files, or one)", (DICOM_SUFFIX,), ("wsidicom",)),
)

#: Every supported suffix, lower case with the dot, in the order of :data:`FORMATS`.
SLIDE_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(s for fmt in FORMATS for s in fmt.suffixes))

_OME_SUFFIXES = (".ome.tiff", ".ome.tif")


def is_slide_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s suffix is a supported slide suffix (case-insensitive; no I/O)."""
    return Path(path).suffix.lower() in SLIDE_SUFFIXES


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one ``.dcm`` file (one DICOM WSI slide)."""
    folder = Path(path)
    try:
        return folder.is_dir() and any(
            p.suffix.lower() == DICOM_SUFFIX and p.is_file() for p in folder.iterdir()
        )
    except OSError:
        return False


def slide_name(path: str | os.PathLike) -> str:
    """The slide's name as caches, cohorts and predictions use it.

    The file name without a slide suffix (``.ome.tif``/``.ome.tiff`` removed whole), or
    the folder's name for a DICOM folder. A name without a slide suffix is kept whole.
    """
    name = Path(str(path).strip().rstrip("/\\")).name
    for suffix in _OME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if is_slide_file(name) else name


def find_slides(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The slides inside ``folder``, sorted by path.

    Slide files (hidden ones skipped), and DICOM WSI folders (a folder holding ``.dcm``
    files counts as one slide, its ``.dcm`` files are not listed one by one). A folder
    that itself holds ``.dcm`` files is one slide: ``[folder]``. With ``recursive``,
    sub-folders are searched too.
    """
    root = Path(folder)
    if is_dicom_folder(root):
        return [root]
    out: list[Path] = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and is_slide_file(p) and p.suffix.lower() != DICOM_SUFFIX:
            out.append(p)
        elif p.is_dir():
            if is_dicom_folder(p):
                out.append(p)
            elif recursive:
                out.extend(find_slides(p, recursive=True))
    return sorted(out)


def reader_patterns() -> list[str]:
    """The napari reader's ``filename_patterns`` (``*.svs``, ...): what ``napari.yaml`` lists."""
    return [f"*{s}" for s in SLIDE_SUFFIXES]


def dialog_filter() -> str:
    """A Qt file-dialog filter: ``"Slides (*.svs *.tif ...);;All files (*)"``."""
    return f"Slides ({' '.join(reader_patterns())});;All files (*)"


def supported_formats_text() -> str:
    """One line naming every supported format and its suffixes (for error messages)."""
    return "; ".join(f"{fmt.name} ({', '.join(fmt.suffixes)})" for fmt in FORMATS)
