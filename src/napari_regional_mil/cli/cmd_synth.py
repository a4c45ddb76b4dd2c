"""``napari-regional-mil synth``: write a synthetic cohort with known answers."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SlideError
from ._progress import drive


def _grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS (e.g. 4x5), got {text!r}") from None
    return rows, cols


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic cohort (pyramidal TIFF slides, labels.csv, ground-truth regions)",
        description=(
            "Write synthetic H&E-like slides built from regions of k x k patches, labels.csv and "
            "<slide>.truth.json (the regions that make a slide positive). Task 'context': the label "
            "depends on where a motif lies (same patch-type counts in both classes); 'presence': "
            "positive iff the motif is present. With --clinical (task context) labels.csv also gets "
            "the columns grade, age and sex, and a slide is positive iff it is inflamed AND its grade "
            "is G3 (age and sex are distractors). Embed with --patch-size P --mpp MPP --region-size K."
        ),
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder")
    parser.add_argument("--slides", type=int, default=20, help="number of slides (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--task", choices=("context", "presence"), default="context", help="default: context")
    parser.add_argument("--patch-px", type=int, default=64, help="patch side in px at --mpp (default: 64)")
    parser.add_argument("--region-size", type=int, default=8, help="k: regions of k x k patches (default: 8)")
    parser.add_argument("--grid", type=_grid, default=(4, 5), metavar="ROWSxCOLS",
                        help="regions per slide (default: 4x5)")
    parser.add_argument("--mpp", type=float, default=0.5, help="microns per pixel (default: 0.5)")
    parser.add_argument(
        "--clinical",
        action="store_true",
        help="task context: add clinical columns grade, age, sex; label = inflamed AND grade G3",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``synth``."""
    from ..synth.cohort import write_synthetic_cohort  # lazy: help (imports zarr and scikit-image)

    if args.slides < 2:
        raise SlideError(f"{args.out_dir}: need at least 2 slides (one per class), got {args.slides}")
    try:
        cohort = drive(
            write_synthetic_cohort(
                args.out_dir,
                n_slides=args.slides,
                seed=args.seed,
                task=args.task,
                patch_px=args.patch_px,
                region_size=args.region_size,
                region_grid=args.grid,
                mpp=args.mpp,
                clinical=args.clinical,
            )
        )
    except ValueError as exc:
        raise SlideError(f"{args.out_dir}: {exc}") from None
    task = f"{args.task} with clinical columns grade, age, sex" if args.clinical else args.task
    print(
        f"wrote {len(cohort.slides)} slides, {cohort.labels_csv.name} and ground truth to {cohort.out_dir} "
        f"(task {task}; classes {', '.join(cohort.class_names)}; embed with --patch-size {args.patch_px} "
        f"--mpp {args.mpp} --region-size {args.region_size})"
    )
    return 0
