"""Training a cohort: the one path shared by the CLI ``train``, the Train widget and the demo.

The same cohort, the same options and the same seed give the same model whichever front
end starts it, because all of them call :func:`train_cohort` (or
:func:`load_and_train_cohort`) with a :class:`ModelOptions` whose defaults are
:class:`~napari_regional_mil.model.config.ModelConfig`'s and a
:class:`~napari_regional_mil.training.train.TrainConfig`.

Roles of the slides: rows with ``split=val`` are the validation set (otherwise
``TrainConfig.val_fraction`` of the patients is held out), rows with ``split=test`` are
left out of training.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..clinical import ClinicalSpec
from ..embedding.store import cached_contexts
from ..errors import TrainingError
from ..jobs import Progress
from ..options import OptionValue, make, option_values, options_of
from ..settings import DEFAULT_TRAIN_CONFIG, ModelConfig, SelectionConfig, TrainConfig
from .clinical_values import check_clinical_values
from .cohort import Cohort
from .datasets import (
    EmbedFunction,
    LabelledSlide,
    clinical_records,
    find_cache,
    load_cohort_embeddings,
)

if TYPE_CHECKING:
    from .train import TrainResult

__all__ = [
    "CohortTraining",
    "ModelOptions",
    "available_contexts",
    "context_dims_of",
    "load_and_train_cohort",
    "split_roles",
    "train_cohort",
    "train_config_from",
]


_MODEL_OPTIONS = frozenset(o.name for o in options_of(ModelConfig))
_DEFAULT_MODEL_TYPE = next(str(o.default) for o in options_of(ModelConfig) if o.name == "model_type")
_SELECTION_OPTIONS = frozenset(o.name for o in options_of(SelectionConfig))


@dataclass(frozen=True)
class ModelOptions:
    """The first model's options, before the data fixes its input dimension.

    Parameters
    ----------
    model
        Values of :class:`~napari_regional_mil.model.config.ModelConfig`'s options by
        field name (``{"model_type": "abmil", "hidden_dim": 64}``); the others keep
        ModelConfig's defaults (which are the CLI's and the Train widget's).
    selection
        Patch selection in training.
    contexts
        Several scales: names of the context embeddings to merge into the global
        embedding; None (the CLI's default) takes every one that all slides have, ``()`` none.

    Raises
    ------
    ValueError
        A name in ``model`` that is not one of ModelConfig's options.
    """

    model: Mapping[str, OptionValue] = field(default_factory=dict)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    contexts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.model) - _MODEL_OPTIONS)
        if unknown:
            raise ValueError(f"unknown model options {unknown}; choose from {sorted(_MODEL_OPTIONS)}")

    @classmethod
    def from_values(cls, values: Mapping[str, object], *, contexts: tuple[str, ...] | None = None) -> ModelOptions:
        """The options from one flat mapping of option values (parsed CLI flags, the Train widget's form).

        Values of ModelConfig's and SelectionConfig's options are taken; others are ignored.

        Raises
        ------
        ValueError
            A value SelectionConfig refuses (e.g. min patches > max patches).
        """
        model = {k: v for k, v in values.items() if k in _MODEL_OPTIONS and isinstance(v, (int, float, str, bool))}
        selection = make(SelectionConfig, {k: v for k, v in values.items() if k in _SELECTION_OPTIONS})
        return cls(model=model, selection=selection, contexts=contexts)

    @property
    def model_type(self) -> str:
        """The model type chosen (ModelConfig's default when not given)."""
        return str(self.model.get("model_type", _DEFAULT_MODEL_TYPE))

    def model_config(self, slides: Sequence[LabelledSlide], n_classes: int) -> ModelConfig:
        """The :class:`ModelConfig` for ``slides`` (input dimension, shared context embeddings).

        Raises
        ------
        ValueError
            An invalid combination (see :class:`ModelConfig`).
        TrainingError
            A chosen context embedding that some slide lacks.
        """
        contexts = context_dims_of(slides, self.contexts) if self.model_type == "regional" else {}
        return make(
            ModelConfig, self.model, input_dim=slides[0].embeddings.embedding_dim, n_classes=n_classes,
            context_dims=contexts, selection=self.selection,
        )


def train_config_from(values: Mapping[str, object]) -> TrainConfig:
    """A :class:`TrainConfig` from a flat mapping of option values (others are ignored).

    Raises
    ------
    TrainingError
        A value TrainConfig refuses.
    """
    try:
        return make(TrainConfig, option_values(TrainConfig, values))
    except ValueError as exc:
        raise TrainingError(f"invalid option: {exc}") from None


@dataclass(frozen=True, eq=False)
class CohortTraining:
    """What :func:`train_cohort` returns: the trained model and the slides' roles.

    Parameters
    ----------
    result
        The training result (checkpoint, history, best epoch, validation slides).
    n_train
        Slides the model was optimised on (validation excluded).
    n_validation
        Slides used for early stopping.
    held_out
        Names of the ``split=test`` slides left out.
    """

    result: TrainResult
    n_train: int
    n_validation: int
    held_out: tuple[str, ...] = ()


def split_roles(
    slides: Sequence[LabelledSlide],
) -> tuple[list[LabelledSlide], list[LabelledSlide] | None, list[LabelledSlide]]:
    """``(train, validation or None, held_out)`` from the slides' ``split`` column."""
    train = [s for s in slides if s.split in (None, "", "train")]
    validation = [s for s in slides if s.split == "val"] or None
    held_out = [s for s in slides if s.split == "test"]
    return train, validation, held_out


def context_dims_of(slides: Sequence[LabelledSlide], names: Sequence[str] | None = None) -> dict[str, int]:
    """Context embeddings (several scales) for the first model, with their dimensions.

    Parameters
    ----------
    slides
        The cohort's slides.
    names
        The context embeddings wanted; None: every one that all slides have (the CLI's
        ``train``), ``()``: none.

    Raises
    ------
    TrainingError
        A named context embedding that some slides lack (they are listed), or whose
        dimension differs between slides.
    """
    if not slides:
        return {}
    if names is None:
        common = set(slides[0].embeddings.context_embeddings)
        for slide in slides[1:]:
            common &= set(slide.embeddings.context_embeddings)
        names = sorted(common)
    dims: dict[str, int] = {}
    for key in sorted(dict.fromkeys(names)):
        lacking = [s.name for s in slides if key not in s.embeddings.context_embeddings]
        if lacking:
            more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
            raise TrainingError(
                f"context embeddings {key!r} missing for {len(lacking)} slide(s): {', '.join(lacking[:5])}{more}; "
                "embed them with the same context encoder and scale"
            )
        found = {int(s.embeddings.context_embeddings[key].shape[1]) for s in slides}
        if len(found) > 1:
            raise TrainingError(f"context embeddings {key!r} have different dimensions across slides: {sorted(found)}")
        dims[key] = found.pop()
    return dims


def available_contexts(
    cohort: Cohort, *, cache_dir: str | os.PathLike, encoder: str | None = None
) -> tuple[dict[str, int], int]:
    """Which context embeddings the cohort's caches hold, from the stores' attributes only.

    Returns
    -------
    (counts, n_cached)
        ``counts[name]``: how many of the ``n_cached`` slides with a cache have it. The
        names every cached slide has are those :func:`context_dims_of` takes by default.
    """
    counts: dict[str, int] = {}
    n_cached = 0
    for row in cohort.rows:
        path = find_cache(cache_dir, row, encoder=encoder)
        if path is None:
            continue
        n_cached += 1
        for key in cached_contexts(path):
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items())), n_cached


def train_cohort(
    slides: Sequence[LabelledSlide],
    *,
    class_names: Sequence[str],
    options: ModelOptions | ModelConfig = ModelOptions(),
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, CohortTraining]:
    """Train the first model on labelled slides by their roles (a job).

    Parameters
    ----------
    slides
        Every slide of the cohort (roles from their ``split``).
    class_names
        Class names in the model's order.
    options
        Hyper-parameters (a full :class:`ModelConfig` is used as is).
    config
        Optimisation settings (the seed included).
    clinical
        Clinical variables fused with the slide ([0279]): the slides' cohort columns;
        their encoding is fitted on the training slides (the levels of categorical
        variables are those of every slide, held-out ones included).

    Raises
    ------
    TrainingError
        No training slide, or the training slides hold one class only.
    ClinicalError
        A slide without clinical values, or a value that cannot be encoded.
    """
    train, validation, held_out = split_roles(slides)
    if clinical is not None:  # every slide's values checked before training
        clinical = clinical.knowing(clinical_records(slides))
        check_clinical_values(clinical_records(slides), clinical)
    if not train:
        raise TrainingError("no training slides (every slide has split val or test)")
    if isinstance(options, ModelConfig):
        model_config = options
    else:
        try:
            model_config = options.model_config(slides, len(class_names))
        except ValueError as exc:
            raise TrainingError(f"invalid option: {exc}") from None
    from .train import train_model  # lazy: torch (the Train widget's form imports this module)

    result = yield from train_model(
        train, class_names=class_names, model_config=model_config, config=config, validation=validation,
        clinical=clinical,
    )
    n_val = len(result.validation_slides)
    return CohortTraining(result, len(train) - (0 if validation else n_val), n_val, tuple(s.name for s in held_out))


def load_and_train_cohort(
    cohort: Cohort,
    *,
    cache_dir: str | os.PathLike,
    options: ModelOptions = ModelOptions(),
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    encoder: str | None = None,
    embed: EmbedFunction | None = None,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, CohortTraining]:
    """Load every slide's cached embeddings, then :func:`train_cohort` (a job).

    Raises
    ------
    CacheError
        Slides without a cache (listed), when ``embed`` is not given.
    """
    slides = yield from load_cohort_embeddings(cohort, cache_dir=cache_dir, encoder=encoder, embed=embed)
    return (
        yield from train_cohort(
            slides, class_names=cohort.class_names, options=options, config=config, clinical=clinical
        )
    )
