"""``napari-regional-mil evaluate``: score a trained model on labelled slides (test split or external cohort)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..clinical import parse_clinical_columns
from ..errors import ClinicalError, CohortError, TrainingError
from ._cohort_options import add_column_options, columns_from_args
from ._config import add_config_option
from ._progress import drive
from ._run import record_for

if TYPE_CHECKING:
    from ..model.checkpoint import Checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained model on labelled slides: AUROC/AUPRC with 95%% CIs, calibration, plots",
        description=(
            "Score a trained first model on labelled slides: the table's split=test rows (default), or every "
            "row of a table without a split column (an external cohort). Writes per-slide predictions, AUROC "
            "and AUPRC with bootstrap 95%% confidence intervals (one-vs-rest for more than two classes), "
            "balanced accuracy, sensitivity and specificity at the model's threshold, the confusion matrix, a "
            "calibration table, patient-level scores (with a patient column) and ROC, PR, calibration and "
            "confusion plots (PNG and SVG) into --out."
        ),
    )
    parser.add_argument("--model", required=True, type=Path, metavar="MODEL", help="checkpoint (.safetensors)")
    parser.add_argument("--labels", required=True, type=Path, metavar="TABLE", help="cohort table (CSV, TSV, XLSX)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", type=Path, metavar="DIR", help="embedding cache folder")
    source.add_argument(
        "--features", type=Path, metavar="DIR", help="feature files of another tool (CLAM/TRIDENT/STAMP .h5, .pt, .npz)"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the results (created)")
    parser.add_argument(
        "--split", choices=("auto", "test", "all"), default="auto",
        help="rows to score: test (split=test), all, or auto: test when the table has splits, else all (default)",
    )
    parser.add_argument("--threshold", type=float, help="decide at this fixed threshold (default: the model's)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--region-size", type=int, default=8,
                        help="k of the regions rebuilt from --features (default: 8)")
    parser.add_argument(
        "--clinical",
        metavar="COLS",
        help="the clinical variables of a model that takes them (checked against the model; their values "
        "are the table's columns of these names; default: the model's)",
    )
    add_column_options(parser)
    add_config_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``."""
    from ..model.checkpoint import load_checkpoint  # lazy: help (imports torch)
    from ..training.cohort import read_cohort  # lazy: help (imports torch)
    from ..training.device import resolve_device  # lazy: help (imports torch)
    from ..training.evaluate import evaluate_cohort, write_evaluation  # lazy: help (imports torch)
    from ..training.outputs import check_output_folder  # lazy: help (imports torch)

    out = check_output_folder(args.out, TrainingError)
    if args.bootstrap < 0:
        raise TrainingError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise TrainingError(f"--threshold must lie in [0, 1], got {args.threshold}")
    resolve_device(args.device)
    checkpoint = load_checkpoint(args.model)
    _check_clinical(args, checkpoint)
    cohort = read_cohort(args.labels, columns=columns_from_args(args), min_classes=1)
    if args.features is not None and not args.features.is_dir():
        raise CohortError(f"{args.features}: no such folder")
    evaluation = drive(
        evaluate_cohort(
            checkpoint, cohort, cache_dir=args.cache, features_dir=args.features, split=args.split,
            threshold=args.threshold, n_bootstrap=args.bootstrap, seed=args.seed, device=args.device,
            region_size=args.region_size,
        )
    )
    write_evaluation(
        out, evaluation, run=lambda written: record_for(args, "evaluate", slides=evaluation.slides, outputs=written)
    )
    print(f"{evaluation.model} on {len(evaluation.cohort)} slides of {cohort.path.name} ({evaluation.split})")
    print(evaluation.report.summary())
    print(f"wrote {out}")
    return 0


def _check_clinical(args: argparse.Namespace, checkpoint: Checkpoint) -> None:
    """``--clinical`` must name the model's clinical variables (in any order and case)."""
    if args.clinical is None:
        return
    encoding = checkpoint.config.clinical
    try:
        asked = {name.lower() for name in parse_clinical_columns(args.clinical).names}
    except ValueError as exc:
        raise ClinicalError(f"--clinical {args.clinical}: {exc}") from None
    has = () if encoding is None else encoding.names
    if asked != {name.lower() for name in has}:
        raise ClinicalError(
            f"{args.model.name}: takes clinical variables {', '.join(has) or 'none'}, "
            f"but --clinical names {args.clinical}"
        )
