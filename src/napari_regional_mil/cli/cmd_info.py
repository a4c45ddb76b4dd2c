"""``napari-regional-mil info``: what a slide holds and how it would be tiled."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import RegionalMilError
from ..geometry import patch_size_level0
from ..slide import Slide, open_slide
from ..tiling import TilingParams, tile_slide
from ._tissue_options import add_tissue_arguments, tissue_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="show a slide's levels, mpp, associated images and its tiling at the default settings",
        description=(
            "Print the backend that opened the slide, the vendor, level sizes and downsamples, "
            "microns per pixel, objective power and "
            "associated images of a slide, then detect tissue and report the patch grid and the "
            "number of tissue patches and regions the slide would give."
        ),
    )
    parser.add_argument("slide", type=Path, metavar="SLIDE",
                        help="a whole-slide image (.svs, .tif, .ndpi, .mrxs, .bif, ...) or a folder of DICOM WSI files")
    parser.add_argument("--backend", choices=("tiffslide", "openslide", "wsidicom"), default=None,
                        help="reader to use instead of the one the file's content calls for")
    parser.add_argument("--mpp", type=float, default=None,
                        help="level-0 microns per pixel, overriding the slide's (required when it has none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    group = parser.add_argument_group("tiling (defaults: the method's)")
    group.add_argument("--patch-size", type=int, default=256, help="patch side in px at --target-mpp (default: 256)")
    group.add_argument("--target-mpp", type=float, default=0.5, help="microns per pixel of patches (default: 0.5)")
    group.add_argument("--region-size", type=int, default=8, help="k: regions of k x k patches (default: 8)")
    group.add_argument("--tissue-threshold", type=float, default=0.5,
                       help="keep a patch when its tissue fraction is at least this (default: 0.5)")
    add_tissue_arguments(parser)
    parser.set_defaults(func=run)


def _tiling_summary(slide: Slide, args: argparse.Namespace) -> dict[str, Any]:
    params = TilingParams(
        patch_size=args.patch_size, target_mpp=args.target_mpp, region_size=args.region_size,
        tissue_threshold=args.tissue_threshold,
    )
    out: dict[str, Any] = {"params": vars(params).copy()}
    if slide.info.mpp is not None:
        step = patch_size_level0(params.patch_size, params.target_mpp, slide.mpp)
        width, height = slide.info.dimensions
        out["patch_size_level0"] = step
        out["grid_shape"] = [int(height // step), int(width // step)]
    source = tissue_source(args)
    # a bad mask or annotation file is the user's error (exit 2); detection finding nothing is a finding
    tissue = source.resolve(slide) if source.mask is not None or source.annotations is not None else None
    try:
        tissue = tissue if tissue is not None else source.resolve(slide)
        out["tissue_fraction"] = round(tissue.tissue_fraction, 4)
        out["tissue_method"] = tissue.method
        tiling = tile_slide(slide, tissue, params)
    except RegionalMilError as exc:
        out["error"] = str(exc)
        return out
    out.update(
        patch_size_level0=tiling.patch_size_level0,
        grid_shape=list(tiling.grid_shape),
        region_grid_shape=list(tiling.region_grid_shape),
        n_patches=tiling.n_patches,
        n_regions=tiling.n_regions,
    )
    return out


def _print_text(info: dict[str, Any], tiling: dict[str, Any]) -> None:
    mpp = info["mpp"]
    source = {"slide": "from the slide", "user": "given with --mpp", "none": "unknown"}[info["mpp_source"]]
    w, h = info["dimensions"]
    power = info["objective_power"]
    lines = [
        f"slide:             {info['path']}",
        f"backend:           {info['backend']}",
        f"vendor:            {info['vendor'] or 'generic TIFF'}",
        f"size:              {w} x {h} px",
        f"mpp:               {f'{mpp[0]:.4g} x {mpp[1]:.4g} um/px' if mpp else 'none'} ({source})",
        f"objective power:   {f'{power:g}x' if power is not None else 'unknown'}",
        f"tile size:         {'x'.join(map(str, info['tile_size'])) if info['tile_size'] else 'not tiled (strips)'}",
        f"levels:            {len(info['level_dimensions'])}",
    ]
    for i, ((lw, lh), ds) in enumerate(zip(info["level_dimensions"], info["level_downsamples"])):
        lines.append(f"  level {i}:         {lw} x {lh} px, downsample {ds:.4g}")
    lines.append(f"associated images: {', '.join(info['associated_images']) or 'none'}")
    p = tiling["params"]
    lines.append(
        f"tiling:            {p['patch_size']} px patches at {p['target_mpp']:g} um/px, regions of "
        f"{p['region_size']} x {p['region_size']} patches, tissue threshold {p['tissue_threshold']:g}"
    )
    if "tissue_fraction" in tiling:
        fraction = 100 * tiling["tissue_fraction"]
        lines.append(f"  tissue:          {fraction:.1f} % of the slide ({tiling['tissue_method']})")
    if "patch_size_level0" in tiling:
        lines.append(f"  patch size:      {tiling['patch_size_level0']:.2f} level-0 px")
    if "error" in tiling:
        lines.append(f"  not tileable:    {tiling['error']}")
    else:
        rows, cols = tiling["grid_shape"]
        rrows, rcols = tiling["region_grid_shape"]
        lines += [
            f"  patch grid:      {rows} rows x {cols} columns",
            f"  region grid:     {rrows} rows x {rcols} columns",
            f"  tissue patches:  {tiling['n_patches']}",
            f"  regions:         {tiling['n_regions']}",
        ]
    for warning in info["warnings"]:
        lines.append(f"warning: {warning}")
    print("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    """Run ``info``."""
    with open_slide(args.slide, mpp=args.mpp, backend=args.backend) as slide:
        info = slide.info.to_dict()
        tiling = _tiling_summary(slide, args)
    if args.json:
        print(json.dumps({"slide": info, "tiling": tiling}, indent=2))
    else:
        _print_text(info, tiling)
    return 0
