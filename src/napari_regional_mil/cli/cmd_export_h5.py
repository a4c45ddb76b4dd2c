"""``napari-regional-mil export-h5``: cached embeddings to CLAM/TRIDENT-style h5 files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CacheError, RegionalMilError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-h5`` subcommand."""
    parser = subparsers.add_parser(
        "export-h5",
        aliases=["export_h5"],
        help="export cached embeddings as CLAM/TRIDENT h5 files (coords + features)",
        description="Write <OUT>/<slide>.h5 with 'coords' (level-0 x, y), 'features' and the CLAM/TRIDENT attributes, "
        "plus our grid/region datasets. SLIDE is a cache store (.zarr) or a slide name/path found in --cache.",
    )
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="cache stores or slide names/paths")
    parser.add_argument("--cache", type=Path, default=None, metavar="CACHE_DIR",
                        help="cache directory (for slide names)")
    parser.add_argument("--encoder", default=None, help="choose the cache of this encoder when there are several")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``export-h5``; 1 when some slides could not be exported."""
    from ..embedding.h5io import export_h5  # lazy: help (imports h5py and zarr)
    from ..embedding.store import find_slide_cache, load_slide_embeddings  # lazy: help (imports zarr)

    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for item in args.slides:
        try:
            if str(item).rstrip("/").endswith(".zarr"):
                store = Path(item)
            elif args.cache is None:
                raise CacheError(f"{item}: not a .zarr store; give --cache to find it by slide name")
            else:
                store = find_slide_cache(args.cache, item, encoder=args.encoder)
            emb = load_slide_embeddings(store)
            path = export_h5(emb, args.out / f"{emb.slide_name}.h5")
            print(f"{emb.slide_name}: {emb.n_patches} patches ({emb.embedding_dim}-d) -> {path}")
        except RegionalMilError as exc:
            failed.append(f"{item}: {exc}")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0
