"""``napari-regional-mil train``: train the first model on a cohort and save one checkpoint file."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import CheckpointError
from ..jobs import Progress
from ..runrecord import write_run_record
from ._progress import drive
from ._run import record_for
from ._train_options import (
    add_clinical_options,
    add_data_options,
    add_model_options,
    add_train_options,
    clinical_spec_from_args,
    load_training_slides,
    model_config_from_args,
    train_config_from_args,
)

if TYPE_CHECKING:
    from ..training.datasets import LabelledSlide


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train the first model (regional MIL, ABMIL or mean pooling) on cached embeddings",
        description=(
            "Train the first model on a cohort's cached embeddings and save it as one safetensors "
            "checkpoint (and <MODEL stem>.run.json beside it: options, versions, input hashes). Rows with "
            "split=val are the validation set (otherwise --val-fraction of the patients is held out), on which "
            "a --threshold rule is tuned; rows with split=test are left out (score them with evaluate). "
            "--clinical fuses other columns of the cohort table (patient data: age, sex, grade, ...) with "
            "the slide."
        ),
    )
    add_data_options(parser)
    add_clinical_options(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="MODEL", help="checkpoint to write (.safetensors)")
    add_model_options(parser)
    add_train_options(parser)
    parser.set_defaults(func=run)


def _print_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: TextIO | None = None, line: str | None = None,
) -> None:
    """Show a warning as one ``warning: <message>`` line on stderr (``warnings.showwarning``)."""
    print(f"warning: {message}", file=sys.stderr)


def plan_line(event: Progress) -> str | None:
    """The line saying whether the slides are held in memory or streamed from the caches (printed once)."""
    return f"memory: {event.message}" if "memory" in event.metrics else None


def context_dims_of(slides: Sequence[LabelledSlide]) -> dict[str, int]:
    """Context embeddings (several scales) that every slide has.

    The core's :func:`~napari_regional_mil.training.workflow.context_dims_of`, shared with the
    Train widget.
    """
    from ..training.workflow import context_dims_of as common_context_dims  # lazy: help (imports torch)

    return common_context_dims(slides)


def run(args: argparse.Namespace) -> int:
    """Run ``train``."""
    from ..training.device import resolve_device  # lazy: help (imports torch)
    from ..training.workflow import train_cohort  # lazy: help (imports torch)

    if not args.out.parent.is_dir():
        raise CheckpointError(f"{args.out}: folder {args.out.parent} does not exist")
    train_config = train_config_from_args(args)
    resolve_device(train_config.device)
    clinical = clinical_spec_from_args(args)
    cohort, slides = load_training_slides(args, clinical=clinical)
    model_config = model_config_from_args(
        args,
        input_dim=slides[0].embeddings.embedding_dim,
        n_classes=len(cohort.class_names),
        context_dims=context_dims_of(slides) if args.model_type == "regional" else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _print_warning
        # the GUI's Train widget and the demo train through the same function (roles from the split column)
        trained = drive(
            train_cohort(
                slides, class_names=cohort.class_names, options=model_config, config=train_config,
                clinical=clinical,
            ),
            report=plan_line,
        )
    result, held_out = trained.result, trained.held_out
    path = result.save(args.out)
    record = args.out.with_name(f"{args.out.stem}.run.json")
    write_run_record(record, record_for(args, "train", slides=slides, outputs=[path.name, record.name]))
    best = result.history[result.best_epoch - 1]
    print(
        f"trained {result.model.config.model_type} on {result.checkpoint.training['n_train']} slides "
        f"(validation {len(result.validation_slides)}, left out {len(held_out)}); "
        f"classes {', '.join(cohort.class_names)}"
    )
    print(
        f"best epoch {result.best_epoch}/{len(result.history)}: val_auc {best['val_auc']:.3f} "
        f"val_bacc {best['val_bacc']:.3f} train_loss {best['train_loss']:.3f}"
    )
    encoding = result.model.config.clinical
    if encoding is not None:
        print("clinical variables: " + "; ".join(encoding.describe()))
    rule = train_config.threshold_rule
    if rule.tuned:
        print(f"threshold {result.checkpoint.threshold:.4g} ({rule.text} on {result.checkpoint.training['n_val']} "
              "validation slides)")
    print(f"saved {path} and {record.name}")
    return 0
