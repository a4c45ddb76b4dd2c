"""``napari-regional-mil import-h5``: CLAM/TRIDENT h5 features into the embedding cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import RegionalMilError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-h5`` subcommand."""
    parser = subparsers.add_parser(
        "import-h5",
        aliases=["import_h5"],
        help="import CLAM/TRIDENT h5 features (coords + features) as embedding caches",
        description="Read h5 files with 'features' (N, D) and optionally 'coords' (N, 2, level-0 x, y) and store each "
        "as a complete cache. With coords and a known patch size the patch grid and regions are rebuilt; "
        "without coords the slide is a bag without regions.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="H5", help="h5 files (one per slide; stem = slide name)")
    parser.add_argument("--out", type=Path, required=True, metavar="CACHE_DIR", help="cache directory")
    parser.add_argument("--patch-size-level0", type=float, default=None,
                        help="patch side in level-0 px when the file does not record it")
    parser.add_argument("--region-size", type=int, default=8, help="k: regions of k x k patches (default: 8)")
    parser.add_argument("--encoder-name", default=None, help="name of the encoder that made the features")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``import-h5``; 1 when some files could not be imported."""
    from ..embedding.h5io import import_h5  # lazy: help (imports h5py and zarr)
    from ..embedding.store import import_key, write_slide_embeddings  # lazy: help (imports zarr)

    failed = []
    for path in args.files:
        try:
            emb = import_h5(path, patch_size_level0=args.patch_size_level0, region_size=args.region_size,
                            encoder_name=args.encoder_name)
            encoder = emb.meta.get("encoder")
            key = import_key(path, region_size=args.region_size, patch_size_level0=args.patch_size_level0,
                             encoder=None if encoder is None else str(encoder))
            store = write_slide_embeddings(args.out, emb, key=key,
                                           attrs={"encoder_hash": emb.meta.get("encoder_hash", key)})
            kind = f"{emb.n_regions} regions" if emb.has_regions else "a bag without regions"
            print(f"{emb.slide_name}: {emb.n_patches} patches ({emb.embedding_dim}-d), {kind} -> {store}")
        except RegionalMilError as exc:
            failed.append(f"{path}: {exc}")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0
