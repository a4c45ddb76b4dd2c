"""``napari-regional-mil crossval``: K-fold cross-validation of the first model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._train_options import add_data_options, add_model_options, add_train_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``crossval`` subcommand."""
    parser = subparsers.add_parser(
        "crossval",
        help="K-fold cross-validation (stratified, patient-grouped): AUC, balanced accuracy, confusion",
        description=(
            "Stratified K-fold cross-validation (patients never split across folds). Prints per-fold "
            "AUC (one-vs-rest macro for more than two classes), balanced accuracy and confusion matrix, "
            "and mean +- sd; --out writes them as JSON."
        ),
    )
    add_data_options(parser)
    parser.add_argument("--folds", type=int, default=5, help="number of folds K (default: 5)")
    parser.add_argument("--out", type=Path, metavar="JSON", help="write the results as JSON")
    add_model_options(parser)
    add_train_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``crossval``."""
    import warnings

    from ..cli._progress import drive
    from ..cli._train_options import (
        load_training_slides,
        model_config_from_args,
        train_config_from_args,
    )
    from ..cli.cmd_train import _print_warning, context_dims_of
    from ..errors import TrainingError
    from ..training.crossval import cross_validate

    if args.out is not None and not args.out.parent.is_dir():
        raise TrainingError(f"{args.out}: folder {args.out.parent} does not exist")
    train_config = train_config_from_args(args)
    cohort, slides = load_training_slides(args)
    model_config = model_config_from_args(
        args,
        input_dim=slides[0].embeddings.embedding_dim,
        n_classes=len(cohort.class_names),
        context_dims=context_dims_of(slides) if args.model_type == "regional" else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = _print_warning
        result = drive(
            cross_validate(
                slides, class_names=cohort.class_names, n_folds=args.folds, model_config=model_config, config=train_config
            )
        )
    print(result.summary())
    if args.out is not None:
        print(f"wrote {result.write_json(args.out)}")
    return 0
