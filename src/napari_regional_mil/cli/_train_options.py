"""Options shared by ``train`` and ``crossval``: data, model and optimisation.

The model, patch-selection and training flags are generated from the one table of
options, :mod:`napari_regional_mil.settings` (torch-free, so ``--help`` stays fast); the
data flags are this module's own. The ``*_from_args`` builders are called from the
commands' ``run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..clinical import parse_clinical_columns
from ..errors import ClinicalError, CohortError, TrainingError
from ..options import add_options, make, option_values
from ..settings import ClinicalOptions, ModelConfig, SelectionConfig, TrainConfig
from ..tiling import TilingParams
from ._cohort_options import add_column_options, columns_from_args
from ._config import add_config_option
from ._progress import drive

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ..clinical import ClinicalSpec
    from ..embedding import EmbedResult
    from ..jobs import Progress
    from ..training.cohort import Cohort, CohortRow
    from ..training.datasets import LabelledSlide
    from ..training.workflow import ModelOptions

__all__ = [
    "add_clinical_options",
    "add_data_options",
    "add_model_options",
    "add_train_options",
    "clinical_spec_from_args",
    "load_training_slides",
    "model_config_from_args",
    "model_options_from_args",
    "train_config_from_args",
]


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--labels TABLE``, its column names, and ``--cache DIR`` or ``--features DIR``."""
    parser.add_argument(
        "--labels", required=True, type=Path, metavar="TABLE",
        help="cohort table (CSV, TSV or XLSX): slide,label[,patient][,split] plus any other columns",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", type=Path, metavar="DIR", help="embedding cache folder (napari-regional-mil embed)")
    source.add_argument(
        "--features",
        type=Path,
        metavar="DIR",
        help="feature files of another tool, one per slide: CLAM/TRIDENT or STAMP .h5, CLAM .pt, .npz (regions "
        "rebuilt from the coordinates and patch size in the file, with --region-size)",
    )
    parser.add_argument("--encoder", metavar="NAME", help="use caches of this encoder (when several exist)")
    parser.add_argument("--classes", metavar="A,B,...",
                        help="class names in the model's order (default: sorted labels)")
    group = parser.add_argument_group("slides without a cache")
    group.add_argument(
        "--embed-missing",
        action="store_true",
        help="embed slides that have no cache first (the CSV's slide column must then be a path, "
        "absolute or relative to the CSV), with --encoder (default builtin-he) and this tiling",
    )
    group.add_argument("--patch-size", type=int, default=256,
                       help="patch side in px for --embed-missing (default: 256)")
    group.add_argument("--target-mpp", type=float, default=0.5, help="um/px for --embed-missing (default: 0.5)")
    group.add_argument("--region-size", type=int, default=8, help="k for --embed-missing and --features (default: 8)")
    add_column_options(parser)
    add_config_option(parser)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Hyper-parameters of the first model and of its patch selection (from :mod:`..settings`)."""
    add_options(parser, ModelConfig, title="model")
    add_options(parser, SelectionConfig, title="patch selection")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """AdamW, schedule, early stopping, seed, threads (from :mod:`..settings`)."""
    add_options(parser, TrainConfig, title="training")


def add_clinical_options(parser: argparse.ArgumentParser) -> None:
    """``--clinical COLS`` and ``--clinical-missing`` (from :mod:`..settings`)."""
    add_options(parser, ClinicalOptions, title="clinical variables (patient data)")


def clinical_spec_from_args(args: argparse.Namespace) -> ClinicalSpec | None:
    """The clinical columns chosen with ``--clinical`` (``None``: none).

    Raises
    ------
    ClinicalError
        An empty name, an unknown kind, or a column named twice.
    """
    options = make(ClinicalOptions, option_values(ClinicalOptions, args))
    if not options.clinical.strip():
        return None
    try:
        return parse_clinical_columns(options.clinical, missing=options.clinical_missing)
    except ValueError as exc:
        raise ClinicalError(f"--clinical {options.clinical}: {exc}") from None


def model_options_from_args(args: argparse.Namespace) -> ModelOptions:
    """The :class:`~napari_regional_mil.training.workflow.ModelOptions` of the parsed options.

    Raises
    ------
    TrainingError
        A value the settings refuse (e.g. min patches > max patches).
    """
    from ..training.workflow import ModelOptions  # lazy: help (imports torch)

    try:
        return ModelOptions.from_values(vars(args))
    except ValueError as exc:
        raise TrainingError(f"invalid option: {exc}") from None


def model_config_from_args(
    args: argparse.Namespace, *, input_dim: int, n_classes: int, context_dims: dict[str, int] | None = None
) -> ModelConfig:
    """A :class:`~napari_regional_mil.settings.ModelConfig` from the parsed options.

    Raises
    ------
    TrainingError
        A value or a combination the settings refuse.
    """
    options = model_options_from_args(args)
    try:
        return make(ModelConfig, options.model, input_dim=input_dim, n_classes=n_classes,
                    context_dims=dict(context_dims or {}), selection=options.selection)
    except ValueError as exc:
        raise TrainingError(f"invalid option: {exc}") from None


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`~napari_regional_mil.settings.TrainConfig` from the parsed options.

    Raises
    ------
    TrainingError
        A value the settings refuse.
    """
    try:
        return make(TrainConfig, option_values(TrainConfig, args))
    except ValueError as exc:
        raise TrainingError(f"invalid option: {exc}") from None


def load_training_slides(
    args: argparse.Namespace, *, clinical: ClinicalSpec | None = None
) -> tuple[Cohort, list[LabelledSlide]]:
    """Read the cohort and load every slide's embeddings (caches or feature bags).

    ``clinical``: the clinical columns asked for, checked on every row of the table
    before any embedding is loaded (a bad value names its row and column).

    Returns
    -------
    (cohort, slides)
    """
    from ..training.cohort import read_cohort  # lazy: help (imports torch)
    from ..training.datasets import (
        find_cache,
        find_feature_bag,
        load_cohort_embeddings,
        load_feature_bags,
    )  # lazy: help (imports torch)

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    base = args.labels.parent

    def slide_file(row: CohortRow) -> bool:
        return Path(row.slide).is_file() or (base / row.slide).is_file()

    columns = columns_from_args(args)
    if args.features is not None:
        cohort = read_cohort(
            args.labels,
            class_names=classes,
            columns=columns,
            slide_exists=lambda row: find_feature_bag(args.features, row) is not None,
            unknown_slide_hint=f"no feature file (.h5/.npz/.pt) in {args.features}",
        )
        _check_clinical(cohort, clinical)
        return cohort, drive(load_feature_bags(cohort, features_dir=args.features, region_size=args.region_size))
    cohort = read_cohort(
        args.labels,
        class_names=classes,
        columns=columns,
        slide_exists=lambda row: slide_file(row) or find_cache(args.cache, row, encoder=args.encoder) is not None,
        unknown_slide_hint=f"no embedding cache in {args.cache} and no slide file",
    )
    _check_clinical(cohort, clinical)
    embed: Callable[[CohortRow], Generator[Progress, None, EmbedResult]] | None = None
    if args.embed_missing:
        from ..embedding import embed_slide  # lazy: help (imports zarr)

        params = TilingParams(patch_size=args.patch_size, target_mpp=args.target_mpp, region_size=args.region_size)

        def embed(row: CohortRow) -> Generator[Progress, None, EmbedResult]:
            path = Path(row.slide) if Path(row.slide).is_file() else base / row.slide
            if not path.is_file():
                raise CohortError(f"{cohort.where(row)}: no cache for {row.slide!r} and no such slide file to embed")
            return embed_slide(path, cache_dir=args.cache, tiling_params=params, encoder=args.encoder or "builtin-he")

    return cohort, drive(load_cohort_embeddings(cohort, cache_dir=args.cache, encoder=args.encoder, embed=embed))


def _check_clinical(cohort: Cohort, clinical: ClinicalSpec | None) -> None:
    if clinical is not None:
        from ..training.clinical_values import check_cohort_clinical  # lazy: help (imports torch)

        check_cohort_clinical(cohort, clinical)
