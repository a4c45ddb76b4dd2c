"""``napari-regional-mil tile``: patch and region coordinates of slides, without embedding."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import RegionalMilError
from ..slide import open_slide
from ..slide.formats import slide_name
from ..tiling import TilingParams, tile_slide, validate_params
from ..tiling_export import write_coords_h5, write_tiling_geojson
from ._tissue_options import add_tissue_arguments, tissue_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tile`` subcommand."""
    parser = subparsers.add_parser(
        "tile",
        help="find tissue and write each slide's patch and region coordinates (TRIDENT coords h5, QuPath GeoJSON)",
        description=(
            "Detect tissue (or use a mask / QuPath annotations), cut each slide into patches and regions as "
            "embed would, and write <slide>_patches.h5 (TRIDENT/CLAM 'coords' layout: level-0 (x, y), with "
            "patch_size, patch_level and patch_size_level0 attributes) and <slide>_patches.geojson (QuPath tile "
            "objects: patches and regions) into --out. Nothing is embedded. Exit status 1 when any slide failed."
        ),
    )
    parser.add_argument("slides", nargs="+", type=Path, metavar="SLIDE",
                        help="slide files (.svs, .tif, .ndpi, .mrxs, .bif, ...) or DICOM WSI folders")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--format", choices=("both", "h5", "geojson"), default="both",
                        help="what to write (default: both)")
    parser.add_argument("--mpp", type=float, default=None,
                        help="level-0 um/px when the slide lacks it (or to override)")
    parser.add_argument("--patch-size", type=int, default=256, help="patch side in px at --target-mpp (default: 256)")
    parser.add_argument("--target-mpp", type=float, default=0.5, help="um/px of the patch grid (default: 0.5)")
    parser.add_argument("--region-size", type=int, default=8, help="k: regions of k x k patches (default: 8)")
    parser.add_argument("--tissue-threshold", type=float, default=0.5,
                        help="min tissue fraction of a patch (default: 0.5)")
    add_tissue_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tile``; 0 when every slide was written, 1 when some failed (2: bad options)."""
    params = TilingParams(patch_size=args.patch_size, target_mpp=args.target_mpp, region_size=args.region_size,
                          tissue_threshold=args.tissue_threshold)
    validate_params(params)
    source = tissue_source(args)
    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    for path in args.slides:
        name = slide_name(path)
        try:
            with open_slide(path, mpp=args.mpp) as slide:
                tiling = tile_slide(slide, source.resolve(slide), params)
            written = []
            if args.format in ("both", "h5"):
                written.append(write_coords_h5(args.out / f"{name}_patches.h5", tiling, slide_name=name))
            if args.format in ("both", "geojson"):
                written.append(write_tiling_geojson(args.out / f"{name}_patches.geojson", tiling))
        except RegionalMilError as exc:
            failed.append((path, str(exc)))
            continue
        print(f"{name}: {tiling.n_patches} patches of {tiling.patch_size_level0:.4g} level-0 px in "
              f"{tiling.n_regions} regions -> {', '.join(p.name for p in written)}")
    if len(args.slides) == 1 and failed:
        print(f"error: {failed[0][1]}", file=sys.stderr)
        return 1
    if failed:
        print(f"{len(failed)} of {len(args.slides)} slides failed:", file=sys.stderr)
        for path, message in failed:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0
