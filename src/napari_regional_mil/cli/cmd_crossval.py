"""``napari-regional-mil crossval``: K-fold cross-validation of the first model, pooled out of fold."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import write_json_atomic
from ..errors import ClinicalError, ConfigError, TrainingError
from ..jobs import Progress
from ..runrecord import write_run_record
from ._config import config_table, read_config
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
from .cmd_train import _print_warning, context_dims_of, plan_line

if TYPE_CHECKING:
    from ..clinical import ClinicalSpec
    from ..settings import ModelConfig, TrainConfig
    from ..training.cohort import Cohort
    from ..training.datasets import LabelledSlide
    from ..training.tuning import TuneGrid


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``crossval`` subcommand."""
    parser = subparsers.add_parser(
        "crossval",
        help="K-fold cross-validation (stratified, patient-grouped): pooled out-of-fold AUROC with 95%% CI",
        description=(
            "Stratified K-fold cross-validation (patients never split across folds). Prints per-fold AUC "
            "(one-vs-rest macro for more than two classes), balanced accuracy and confusion matrix, mean +- sd, "
            "and the pooled out-of-fold AUROC and AUPRC with bootstrap 95%% confidence intervals. --out DIR "
            "writes crossval.json, the out-of-fold predictions (oof_predictions.csv), metrics.json, a "
            "calibration table, ROC/PR/calibration/confusion plots (PNG and SVG) and run.json; --refit adds "
            "model.safetensors trained on every slide. With --clinical the model fuses those columns of the "
            "cohort table; --ablation cross-validates, on the same folds, the same model with and without "
            "them and a clinical-only logistic model (ablation.json, ablation_predictions.csv)."
        ),
    )
    add_data_options(parser)
    add_clinical_options(parser)
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="with --clinical: cross-validate three arms on the same folds (fused, slide only, clinical "
        "only); --out DIR then gets ablation.json (their AUCs) and ablation_predictions.csv (every slide's "
        "out-of-fold probabilities)",
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds K (default: 5)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="folder for the results (created)")
    parser.add_argument(
        "--refit", action="store_true",
        help="then train the model to deploy on every slide (epochs: the folds' median best epoch; threshold: the "
        "--threshold rule on the pooled out-of-fold predictions); written as DIR/model.safetensors",
    )
    parser.add_argument(
        "--tune", action="store_true",
        help="nested cross-validation: each fold picks learning rate, weight decay, dropout and epochs by an inner "
        "cross-validation on its training slides (grid: a [tune] table in --config, else 2x2x2x2 values)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples of the pooled confidence intervals (default: 1000)")
    parser.add_argument("--scheduler", default=None, metavar="local|ADDRESS",
                        help="train the folds as tasks on dask.distributed: 'local' (a local cluster of --workers "
                        "processes) or a running scheduler's tcp://host:port; every worker reads the caches under "
                        "the same path. Same results as without it for the same seed")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default: 2)")
    add_model_options(parser)
    add_train_options(parser)
    parser.set_defaults(func=run)


def _grid(args: argparse.Namespace) -> TuneGrid:
    """The tuning grid: the config file's [tune] table, else the default one."""
    from ..training.tuning import TuneGrid  # lazy: help (imports torch)

    if getattr(args, "config", None) is None:
        return TuneGrid()

    table = config_table(args.config, read_config(args.config), "tune")
    try:
        values: dict[str, Any] = {k.replace("-", "_"): tuple(v) if isinstance(v, list) else v for k, v in table.items()}
        return TuneGrid(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{args.config.name}: [tune]: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``crossval``."""
    from ..model.checkpoint import save_checkpoint  # lazy: help (imports torch)
    from ..training.crossval import cross_validate  # lazy: help (imports torch)
    from ..training.device import resolve_device  # lazy: help (imports torch)
    from ..training.outputs import check_output_folder, staged_folder, write_report  # lazy: help (imports torch)

    out = check_output_folder(args.out, TrainingError) if args.out is not None else None
    if args.bootstrap < 0:
        raise TrainingError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    train_config = train_config_from_args(args)
    resolve_device(train_config.device)
    grid = _grid(args) if args.tune else None
    clinical = clinical_spec_from_args(args)
    if args.ablation and clinical is None:
        raise ClinicalError(
            "--ablation compares the model with and without clinical variables: give --clinical COLS"
        )
    if args.ablation and (args.refit or args.tune):
        raise TrainingError("--ablation runs its own three cross-validations: leave out --refit and --tune")
    cohort, slides = load_training_slides(args, clinical=clinical)
    model_config = model_config_from_args(
        args,
        input_dim=slides[0].embeddings.embedding_dim,
        n_classes=len(cohort.class_names),
        context_dims=context_dims_of(slides) if args.model_type == "regional" else None,
    )
    if args.ablation:
        assert clinical is not None
        return _ablation(args, out, cohort, slides, model_config, train_config, clinical)
    if args.workers < 1:
        raise TrainingError(f"--workers must be at least 1, got {args.workers}")

    def lines(event: Progress) -> str | None:
        # the memory plan, and each fold's result as it comes (the bar shows the rest)
        if "fold_auc" in event.metrics:
            return event.message
        return plan_line(event)

    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = _print_warning
        result = drive(
            cross_validate(
                slides, class_names=cohort.class_names, n_folds=args.folds, model_config=model_config,
                config=train_config, refit=args.refit, tune=grid, clinical=clinical, scheduler=args.scheduler,
                workers=args.workers,
            ),
            report=lines,
        )
    report = result.pooled_report(n_bootstrap=args.bootstrap, patients=cohort.has_patients)
    print(result.summary())
    print("pooled out-of-fold: " + report.summary().replace("\n", "\n  "))
    if out is None:
        return 0
    with staged_folder(out) as stage:
        result.write_json(stage / "crossval.json", report)
        pooled = result.pooled()
        write_report(stage, report, predictions_name="oof_predictions.csv", folds=pooled["folds"],
                     extra={"what": "pooled out-of-fold predictions", "labels": cohort.path.name})
        if result.refit is not None:
            save_checkpoint(result.refit.checkpoint, stage / "model.safetensors")
        written = [p.name for p in stage.iterdir()] + ["run.json"]
        write_run_record(stage / "run.json", record_for(args, "crossval", slides=slides, outputs=written))
    print(f"wrote {out}" + (" (with the refitted model.safetensors)" if result.refit is not None else ""))
    return 0


def _ablation(
    args: argparse.Namespace,
    out: Path | None,
    cohort: Cohort,
    slides: list[LabelledSlide],
    model_config: ModelConfig,
    train_config: TrainConfig,
    clinical: ClinicalSpec,
) -> int:
    """``--ablation``: fused, slide-only and clinical-only arms on the same folds.

    ``out`` gets ``ablation.json`` (each arm's fold and pooled AUCs), ``ablation_predictions.csv``
    (every slide's out-of-fold probabilities per arm) and ``run.json``, all or none.
    """
    from ..training.ablation import clinical_ablation  # lazy: help (imports torch)
    from ..training.outputs import staged_folder  # lazy: help (imports torch)

    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = _print_warning
        result = drive(
            clinical_ablation(
                slides, class_names=cohort.class_names, clinical=clinical, n_folds=args.folds,
                model_config=model_config, config=train_config,
            )
        )
    print(result.summary())
    if out is None:
        return 0
    with staged_folder(out) as stage:
        write_json_atomic(stage / "ablation.json", result.to_json())
        result.write_predictions(stage / "ablation_predictions.csv")
        written = [p.name for p in stage.iterdir()] + ["run.json"]
        write_run_record(stage / "run.json", record_for(args, "crossval", slides=slides, outputs=written))
    print(f"wrote {out}")
    return 0
