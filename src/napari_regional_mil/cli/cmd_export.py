"""``napari-regional-mil export``: the Predict widget's exports (GeoJSON, heatmap TIFF, CSV) for a batch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import ExportError
from ._progress import drive


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export predictions as QuPath GeoJSON, heatmap TIFF or per-patch CSV (what the Predict widget writes)",
        description=(
            "Export every prediction that predict stored in a folder (<store>.attention.npz beside the embeddings) "
            "as the Predict widget does for one slide: <slide>.geojson (QuPath tile objects with measurements), "
            "<slide>_heatmap.tif (ImageJ stack at patch-grid resolution) and <slide>_scores.csv (one row per "
            "patch). The files are identical to the widget's."
        ),
    )
    parser.add_argument("--predictions", required=True, type=Path, metavar="DIR",
                        help="folder with the predictions (predict's --cache or --features folder)")
    parser.add_argument("--format", action="append", choices=("geojson", "tiff", "csv"), dest="formats",
                        metavar="{geojson,tiff,csv}", help="export format (repeatable; default: all three)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the exports (created)")
    parser.add_argument("--normalisation", choices=("rank", "minmax", "log", "raw"), default="rank",
                        help="of the heatmap TIFF's values (default: rank, as the Predict widget)")
    parser.add_argument("--slides", nargs="+", default=(), metavar="SLIDE", help="only these slides (default: all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``export``."""
    from ..batch_export import export_predictions  # lazy: help (imports torch)

    if not args.out.exists():
        if not args.out.parent.is_dir():
            raise ExportError(f"{args.out}: folder {args.out.parent} does not exist")
        args.out.mkdir()
    written = drive(export_predictions(
        args.predictions, args.out, formats=args.formats or ("geojson", "tiff", "csv"),
        normalisation=args.normalisation, slides=args.slides,
    ))
    print(f"wrote {len(written)} files to {args.out}")
    return 0
