"""The tissue flags shared by ``embed``, ``info`` and ``tile`` (argparse only; cheap to import)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TilingError
from ..tissue import TissueOptions
from ..tissue_source import TissueSource

if TYPE_CHECKING:
    from ..tissue_source import TissueSource

__all__ = ["add_tissue_arguments", "tissue_source"]

_METHODS = ("otsu-saturation", "otsu-od", "threshold-saturation", "threshold-od")


def add_tissue_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``tissue`` argument group: detection method and clean-up, mask file, QuPath annotations."""
    group = parser.add_argument_group(
        "tissue (default: Otsu on the saturation, closing 8 um, objects >= 2500 um^2, holes filled)"
    )
    group.add_argument("--tissue-method", choices=_METHODS, default="otsu-saturation",
                       help="Otsu's threshold on the saturation or the optical density, or a fixed threshold "
                            "(--tissue-cutoff) on either")
    group.add_argument("--tissue-cutoff", type=float, default=None, metavar="VALUE",
                       help="the fixed threshold of the threshold-* methods (saturation 0..1 or optical density; "
                            "default: 0.07 / 0.08)")
    group.add_argument("--min-tissue-area", type=float, default=2500.0, metavar="UM2",
                       help="drop tissue pieces smaller than this many square microns (default: 2500)")
    group.add_argument("--tissue-closing", type=float, default=8.0, metavar="UM",
                       help="radius of the closing that joins nearby tissue, microns; 0 turns it off (default: 8)")
    group.add_argument("--keep-tissue-holes", action="store_true", help="do not fill holes enclosed by tissue")
    group.add_argument("--tissue-mask", type=Path, default=None, metavar="FILE",
                       help="use this tissue mask (a PNG saved from the Slide widget or painted elsewhere, covering "
                            "the whole slide) instead of detecting tissue; a folder: <slide>.png per slide")
    group.add_argument("--annotations", type=Path, default=None, metavar="FILE",
                       help="QuPath GeoJSON annotations (polygons, level-0 pixels); "
                            "a folder: <slide>.geojson per slide")
    group.add_argument("--annotations-as", choices=("include", "exclude"), default="include",
                       help="include: tile only the tissue inside the annotations; exclude: remove the annotated "
                            "areas (pen marks, folds) (default: include)")


def tissue_source(args: argparse.Namespace) -> TissueSource:
    """The :class:`~napari_regional_mil.tissue_source.TissueSource` the flags describe.

    Raises
    ------
    TilingError
        A bad option value (one line naming the flag).
    """
    try:
        options = TissueOptions(
            method=args.tissue_method, threshold=args.tissue_cutoff, min_area_um2=args.min_tissue_area,
            closing_um=args.tissue_closing, fill_holes=not args.keep_tissue_holes,
        )
    except ValueError as exc:
        raise TilingError(f"tissue options: {exc}") from None
    if args.tissue_cutoff is not None and not args.tissue_method.startswith("threshold"):
        raise TilingError("--tissue-cutoff needs --tissue-method threshold-saturation or threshold-od")
    return TissueSource(options, mask=args.tissue_mask, annotations=args.annotations,
                        annotations_as=args.annotations_as)
