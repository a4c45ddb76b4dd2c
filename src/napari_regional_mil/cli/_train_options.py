"""Options shared by ``train`` and ``crossval``: data, model and optimisation.

``add_*`` functions are argparse only (cheap); the ``*_from_args`` builders import the
core lazily and are called from the commands' ``run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = [
    "add_data_options",
    "add_model_options",
    "add_train_options",
    "load_training_slides",
    "model_config_from_args",
    "train_config_from_args",
]


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--labels CSV`` and ``--cache DIR`` or ``--features DIR``."""
    parser.add_argument("--labels", required=True, type=Path, metavar="CSV", help="cohort CSV: slide,label[,patient][,split]")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", type=Path, metavar="DIR", help="embedding cache folder (napari-regional-mil embed)")
    source.add_argument(
        "--features",
        type=Path,
        metavar="DIR",
        help="bags of features without regions: CLAM/TRIDENT .h5 or .npz per slide (patch-level MIL)",
    )
    parser.add_argument("--encoder", metavar="NAME", help="use caches of this encoder (when several exist)")
    parser.add_argument("--classes", metavar="A,B,...", help="class names in the model's order (default: sorted labels)")
    group = parser.add_argument_group("slides without a cache")
    group.add_argument(
        "--embed-missing",
        action="store_true",
        help="embed slides that have no cache first (the CSV's slide column must then be a path, "
        "absolute or relative to the CSV), with --encoder (default builtin-he) and this tiling",
    )
    group.add_argument("--patch-size", type=int, default=256, help="patch side in px for --embed-missing (default: 256)")
    group.add_argument("--target-mpp", type=float, default=0.5, help="um/px for --embed-missing (default: 0.5)")
    group.add_argument("--region-size", type=int, default=8, help="k for --embed-missing (default: 8)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Hyper-parameters of the first model and of its patch selection."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=("regional", "abmil", "mean"), default="regional", help="model type (default: regional)")
    group.add_argument("--hidden-dim", type=int, default=128, help="width of the projected vectors (default: 128)")
    group.add_argument("--attention-dim", type=int, default=64, help="width of the gated attention (default: 64)")
    group.add_argument("--dropout", type=float, default=0.1, help="dropout (default: 0.1)")
    group.add_argument("--patch-unit", choices=("mlp", "linear", "identity"), default="mlp", help="trainable patch unit (default: mlp)")
    group.add_argument(
        "--regional-source",
        choices=("mean", "max", "attention"),
        default="mean",
        help="regional embeddings: cached mean/max pooling, or trainable attention in the model (default: mean)",
    )
    group.add_argument("--no-all-regions", action="store_true", help="switch off the all-regions path")
    group.add_argument(
        "--selection",
        choices=("random", "max_coverage", "equal_per_region"),
        default="equal_per_region",
        help="patch selection per training step (default: equal_per_region)",
    )
    group.add_argument("--min-patches", type=int, default=64, help="fewest selected patches per step (default: 64)")
    group.add_argument("--max-patches", type=int, default=256, help="most selected patches per step (default: 256)")
    group.add_argument("--patches-per-region", type=int, default=4, help="n for equal_per_region (default: 4)")
    group.add_argument("--neighbours", type=int, default=0, help="grid neighbours fused with each selected patch (default: 0)")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """AdamW, schedule, early stopping, seed."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=40, help="maximum epochs (default: 40)")
    group.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: 2e-3)")
    group.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default: 0.01)")
    group.add_argument("--schedule", choices=("cosine", "onecycle", "constant"), default="cosine", help="learning-rate schedule (default: cosine)")
    group.add_argument("--warmup-epochs", type=int, default=2, help="warm-up epochs (default: 2)")
    group.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default: 10)")
    group.add_argument("--min-epochs", type=int, default=10, help="never stop before this epoch (default: 10)")
    group.add_argument("--val-fraction", type=float, default=0.2, help="patients held out for early stopping (default: 0.2)")
    group.add_argument("--class-weights", choices=("none", "balanced"), default="none", help="cross-entropy class weights (default: none)")
    group.add_argument("--slides-per-step", type=int, default=1, help="slides per optimiser step (default: 1)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    group.add_argument("--threshold", type=float, default=0.5, help="decision threshold stored with the model (default: 0.5)")
    group.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for training; the model's operations are small, so 1 is usually fastest (default: 1)",
    )


def _checked(build: Any) -> Any:
    from ..errors import TrainingError

    try:
        return build()
    except ValueError as exc:
        raise TrainingError(f"invalid option: {exc}") from None


def model_config_from_args(args: argparse.Namespace, *, input_dim: int, n_classes: int, context_dims: dict[str, int] | None = None):
    """A :class:`~napari_regional_mil.model.config.ModelConfig` from the parsed options."""
    from ..model.config import ModelConfig, SelectionConfig

    return _checked(
        lambda: ModelConfig(
            input_dim=input_dim,
            n_classes=n_classes,
            model_type=args.model,
            hidden_dim=args.hidden_dim,
            attention_dim=args.attention_dim,
            dropout=args.dropout,
            patch_unit=args.patch_unit,
            regional_source=args.regional_source,
            all_regions=not args.no_all_regions,
            context_dims=dict(context_dims or {}),
            selection=SelectionConfig(
                strategy=args.selection,
                min_patches=args.min_patches,
                max_patches=args.max_patches,
                patches_per_region=args.patches_per_region,
                n_neighbours=args.neighbours,
            ),
        )
    )


def train_config_from_args(args: argparse.Namespace):
    """A :class:`~napari_regional_mil.training.train.TrainConfig` from the parsed options."""
    from ..training.train import TrainConfig

    return _checked(
        lambda: TrainConfig(
            epochs=args.epochs,
            learning_rate=args.lr,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            patience=args.patience,
            min_epochs=args.min_epochs,
            val_fraction=args.val_fraction,
            class_weights=args.class_weights,
            slides_per_step=args.slides_per_step,
            seed=args.seed,
            threshold=args.threshold,
            threads=args.threads,
        )
    )


def load_training_slides(args: argparse.Namespace):
    """Read the cohort and load every slide's embeddings (caches or feature bags).

    Returns
    -------
    (cohort, slides)
    """
    from ..cli._progress import drive
    from ..training.cohort import read_cohort
    from ..training.datasets import (
        find_cache,
        find_feature_bag,
        load_cohort_embeddings,
        load_feature_bags,
    )

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    base = args.labels.parent

    def slide_file(row) -> bool:
        return Path(row.slide).is_file() or (base / row.slide).is_file()

    if args.features is not None:
        cohort = read_cohort(
            args.labels,
            class_names=classes,
            slide_exists=lambda row: find_feature_bag(args.features, row) is not None,
            unknown_slide_hint=f"no feature file (.h5/.npz) in {args.features}",
        )
        return cohort, drive(load_feature_bags(cohort, features_dir=args.features))
    cohort = read_cohort(
        args.labels,
        class_names=classes,
        slide_exists=lambda row: slide_file(row) or find_cache(args.cache, row, encoder=args.encoder) is not None,
        unknown_slide_hint=f"no embedding cache in {args.cache} and no slide file",
    )
    embed = None
    if args.embed_missing:
        from ..embedding import embed_slide
        from ..tiling import TilingParams

        params = TilingParams(patch_size=args.patch_size, target_mpp=args.target_mpp, region_size=args.region_size)

        def embed(row):
            path = Path(row.slide) if Path(row.slide).is_file() else base / row.slide
            if not path.is_file():
                from ..errors import CohortError

                raise CohortError(f"{cohort.where(row)}: no cache for {row.slide!r} and no such slide file to embed")
            return embed_slide(path, cache_dir=args.cache, tiling_params=params, encoder=args.encoder or "builtin-he")

    return cohort, drive(load_cohort_embeddings(cohort, cache_dir=args.cache, encoder=args.encoder, embed=embed))

