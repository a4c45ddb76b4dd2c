"""Where a slide's tissue mask comes from: detection options, a mask file, QuPath annotations.

:class:`TissueSource` is what the CLI's ``--tissue-*``, ``--tissue-mask`` and
``--annotations`` flags build and :func:`~napari_regional_mil.embedding.embed_slide`
takes: detect tissue with :class:`~napari_regional_mil.tissue.TissueOptions` (or load a
saved / painted mask), then keep only the tissue inside included annotations or remove
excluded ones. A mask file or annotation file may be given as a folder holding one file
per slide, named after the slide (``<slide>.png``, ``<slide>.geojson``). The mask it
gives is hashed into the embedding cache key, so caches made with other tissue never mix;
with the defaults (detection with default options, nothing else) the key is what it has
always been.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .annotations import ANNOTATION_MODES, Mode, apply_annotations, read_annotations
from .errors import TilingError
from .masks import MASK_SUFFIXES, load_mask
from .slide import Slide
from .slide.formats import slide_name
from .tissue import TissueMask, TissueOptions, detect_tissue

__all__ = ["ANNOTATION_SUFFIXES", "TissueSource"]

#: Suffixes of annotation files looked up in a folder.
ANNOTATION_SUFFIXES = (".geojson", ".json")


def _per_slide(base: Path, slide: Slide, suffixes: tuple[str, ...], what: str) -> Path:
    """``base`` itself, or the file named after the slide inside the folder ``base``."""
    if not base.is_dir():
        if not base.exists():
            raise TilingError(f"{base}: no such {what} file")
        return base
    name = slide_name(slide.path)
    for suffix in suffixes:
        for candidate in (base / f"{name}{suffix}", base / f"{name}.tissue{suffix}"):
            if candidate.is_file():
                return candidate
    raise TilingError(f"{base}: no {what} file for slide {name} (looked for {name}{' / '.join(suffixes)})")


@dataclass(frozen=True)
class TissueSource:
    """How a slide's tissue mask is made.

    Parameters
    ----------
    options
        Detection options (used when there is no ``mask``).
    mask
        A mask file (see :mod:`napari_regional_mil.masks`) or a folder of ``<slide>.png``.
    annotations
        A QuPath GeoJSON file or a folder of ``<slide>.geojson``.
    annotations_as
        ``"include"`` (tile only the tissue inside the annotations) or ``"exclude"``
        (remove the annotated areas: pen marks, folds).
    """

    options: TissueOptions = field(default_factory=TissueOptions)
    mask: Path | None = None
    annotations: Path | None = None
    annotations_as: Mode = "include"

    def __post_init__(self) -> None:
        if self.annotations_as not in ANNOTATION_MODES:
            raise ValueError(f"annotations must be used as one of {', '.join(ANNOTATION_MODES)}, "
                             f"got {self.annotations_as!r}")
        for name in ("mask", "annotations"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(os.fspath(value)).expanduser())

    @property
    def is_default(self) -> bool:
        """Detection with default options and nothing else (the pipeline then detects as always)."""
        return self.options.is_default and self.mask is None and self.annotations is None

    def describe(self) -> dict[str, object]:
        """A JSON-able record of the source (stored with the embeddings)."""
        return {
            "detection": None if self.mask is not None else self.options.to_dict(),
            "mask_file": str(self.mask) if self.mask is not None else None,
            "annotations": str(self.annotations) if self.annotations is not None else None,
            "annotations_as": self.annotations_as if self.annotations is not None else None,
        }

    def key_record(self) -> dict[str, object]:
        """How the mask is made, for the cache key (files enter it through the mask's own hash)."""
        return {
            "detection": None if self.mask is not None else self.options.to_dict(),
            "mask_file": self.mask is not None,
            "annotations_as": self.annotations_as if self.annotations is not None else None,
        }

    def resolve(self, slide: Slide, *, mpp: float | None = None) -> TissueMask:
        """The tissue mask of ``slide``.

        Raises
        ------
        TilingError
            A missing or bad mask or annotation file (one line naming it).
        """
        dims = slide.info.dimensions
        if self.mask is not None:
            tissue = load_mask(_per_slide(self.mask, slide, MASK_SUFFIXES, "tissue mask"), slide_dimensions=dims)
        else:
            tissue = detect_tissue(slide, self.options, mpp=mpp)
        if self.annotations is not None:
            path = _per_slide(self.annotations, slide, ANNOTATION_SUFFIXES, "annotation")
            tissue = apply_annotations(tissue, read_annotations(path, slide_dimensions=dims), mode=self.annotations_as)
            if not tissue.mask.any():
                where = "inside the included" if self.annotations_as == "include" else "outside the excluded"
                raise TilingError(f"{path}: no tissue lies {where} annotations")
        return tissue
