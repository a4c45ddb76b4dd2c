"""The user's settings of the first model and of its training: the one table of options.

:class:`ModelConfig` (the first model's hyper-parameters), :class:`SelectionConfig`
(patch selection in training) and :class:`TrainConfig` (optimisation) mark each field a
user may set with :func:`~napari_regional_mil.options.option` metadata. The CLI's flags
(``train``, ``crossval``) and the Train widget's form are generated from these fields:
**adding an option is adding one field here** (see ``docs/architecture.md``).

This module imports neither torch nor the model, so the CLI builds its ``--help`` from it
at once. :mod:`napari_regional_mil.model.config` and
:mod:`napari_regional_mil.training.train` re-export the classes.

The three model types share one implementation (:class:`~.model.first_model.FirstModel`):

``"regional"``
    the method's first model: selected patches fused with the regional embedding of
    their region, gated-attention pooling of the selected set, plus (switchable) the
    all-regions path ([0174]-[0194], Fig. 3).
``"abmil"``
    the regional parts switched off: gated-attention MIL over patches (Ilse et al. 2018).
``"mean"``
    ``"abmil"`` with the attention replaced by a mean (mean pooling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from .clinical import ClinicalEncoding
from .options import option
from .thresholds import ThresholdRule, parse_threshold

__all__ = [
    "DEFAULT_TRAIN_CONFIG",
    "MODEL_TYPES",
    "PATCH_UNITS",
    "REGIONAL_SOURCES",
    "SELECTION_STRATEGIES",
    "WEIGHT_SOURCES",
    "ClinicalOptions",
    "ModelConfig",
    "SelectionConfig",
    "TrainConfig",
]

MODEL_TYPES = ("regional", "abmil", "mean")
SELECTION_STRATEGIES = ("random", "max_coverage", "equal_per_region", "uniform", "weighted")
WEIGHT_SOURCES = ("tissue", "attention")
REGIONAL_SOURCES = ("mean", "max", "attention")
PATCH_UNITS = ("mlp", "linear", "identity")


@dataclass(frozen=True)
class SelectionConfig:
    """How patches are selected in a training step ([0174]-[0175], [0181]).

    Parameters
    ----------
    strategy
        ``"random"``: a random subset; ``"max_coverage"``: one patch from as many regions
        as possible; ``"equal_per_region"``: ``patches_per_region`` patches from each of
        several regions (the preferred embodiment, [0181]); ``"uniform"``: spread as evenly
        as possible over the tissue (farthest-point sampling on the patch grid);
        ``"weighted"``: more patches where ``weight_source`` is higher ([0175]; see
        :mod:`~.model.selection`). Strategies that need regions fall back to ``"random"`` for
        bags without regions, ``"uniform"`` for bags without a grid.
    min_patches, max_patches
        The number of selected patches is drawn uniformly from ``[min, max]`` each step
        (capped by the bag size).
    patches_per_region
        n, for ``"equal_per_region"``; the number of regions is ``count // n``.
    n_neighbours
        For each selected patch, its n nearest patches on the grid are fused with it by
        attention ([0181], [0189], Fig. 3(c)); 0 switches this off.
    weight_source
        The weight of ``"weighted"``: ``"tissue"`` (each patch's tissue fraction, from the
        cache) or ``"attention"`` (the attention the patch received when last selected).
    """

    strategy: Literal["random", "max_coverage", "equal_per_region", "uniform", "weighted"] = field(
        default="equal_per_region", metadata=option(
            "patch selection per training step: random; max_coverage (one patch from as many regions as "
            "possible); equal_per_region (n patches from each of several regions, the preferred embodiment); "
            "uniform (spread evenly over the tissue); weighted (more patches where --weight-source is higher)",
            flag="--selection", label="Selection", gui=True,
        ),
    )
    min_patches: int = field(default=64, metadata=option(
        "fewest patches selected per training step", low=1, high=100000, gui=True))
    max_patches: int = field(default=256, metadata=option(
        "most patches selected per training step", low=1, high=100000, gui=True))
    patches_per_region: int = field(default=4, metadata=option(
        "n for equal_per_region", label="Patches / region", low=1, high=1024, gui=True))
    n_neighbours: int = field(default=0, metadata=option(
        "grid neighbours fused with each selected patch", flag="--neighbours", low=0, high=64))
    weight_source: Literal["tissue", "attention"] = field(default="tissue", metadata=option(
        "the weight of the weighted selection: each patch's tissue fraction, or the attention it received "
        "when last selected", label="Weight source", gui=True,
    ))

    def __post_init__(self) -> None:
        if self.weight_source not in WEIGHT_SOURCES:
            raise ValueError(f"unknown weight source {self.weight_source!r}; choose from {WEIGHT_SOURCES}")
        if self.strategy not in SELECTION_STRATEGIES:
            raise ValueError(f"unknown selection strategy {self.strategy!r}; choose from {SELECTION_STRATEGIES}")
        if not 1 <= self.min_patches <= self.max_patches:
            raise ValueError(f"need 1 <= min_patches <= max_patches, got {self.min_patches}, {self.max_patches}")
        if self.patches_per_region < 1 or self.n_neighbours < 0:
            raise ValueError("patches_per_region must be >= 1 and n_neighbours >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the first model.

    Parameters
    ----------
    input_dim
        Dimension D of the cached patch embeddings (the second model's output).
    n_classes
        Number of classes (>= 2).
    model_type
        ``"regional"``, ``"abmil"`` or ``"mean"`` (see the module docstring).
    hidden_dim
        Width of the patch unit and of the projected (1x1-convolved) vectors.
    attention_dim
        Width of the gated attention's hidden layer.
    dropout
        Dropout in the patch unit and before the classifier (training only).
    patch_unit
        The trainable unit that embeds selected patches ([0176]): ``"mlp"`` (an adapter
        on the frozen embeddings), ``"linear"`` or ``"identity"``.
    regional_source
        Where regional embeddings come from: the cache (``"mean"`` or ``"max"`` pooled,
        [0171]) or trainable attention over each region's patches inside the first
        model (``"attention"``, claim 5, [0170], [0172]).
    all_regions
        Whether the all-regions path (every regional embedding projected and
        attention-pooled, claim 6, [0182], [0193]) is part of the global embedding.
    context_dims
        Several scales ([0224]-[0225]): names and dimensions of extra per-region context
        embeddings (``SlideEmbeddings.context_embeddings``), each attention-pooled and
        concatenated into the global embedding. Empty by default.
    selection
        Patch selection in training.
    clinical
        Patient data ([0279]): the fitted encoding of the clinical variables the model
        takes next to the slide (see :mod:`~.clinical`), or ``None``. Set by training
        from the training slides' values; its projection is concatenated with the
        global embedding before the classifier.
    """

    input_dim: int
    n_classes: int = 2
    model_type: Literal["regional", "abmil", "mean"] = field(default="regional", metadata=option(
        "model type: regional (patches fused with their region's embedding, plus the all-regions path: the "
        "method); abmil (gated-attention MIL over patches); mean (mean pooling)",
        flag="--model", label="Model type", gui=True,
    ))
    hidden_dim: int = field(default=128, metadata=option(
        "width of the patch unit and of the projected vectors", low=4, high=2048, step=16, gui=True))
    attention_dim: int = field(default=64, metadata=option(
        "width of the gated attention's hidden layer", low=2, high=1024, step=8, gui=True))
    dropout: float = field(default=0.1, metadata=option(
        "dropout in the patch unit and before the classifier", low=0.0, high=0.95, step=0.05, decimals=2))
    patch_unit: Literal["mlp", "linear", "identity"] = field(default="mlp", metadata=option("trainable patch unit"))
    regional_source: Literal["mean", "max", "attention"] = field(default="mean", metadata=option(
        "regional embeddings: cached mean or max pooling of the region's patches, or trainable attention "
        "inside the model", gui=True,
    ))
    all_regions: bool = field(default=True, metadata=option(
        "the all-regions path (every regional embedding, attention-pooled) in the global embedding",
        negated_flag="--no-all-regions",
    ))
    context_dims: dict[str, int] = field(default_factory=dict)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    clinical: ClinicalEncoding | None = None

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model type {self.model_type!r}; choose from {MODEL_TYPES}")
        if self.regional_source not in REGIONAL_SOURCES:
            raise ValueError(f"unknown regional source {self.regional_source!r}; choose from {REGIONAL_SOURCES}")
        if self.patch_unit not in PATCH_UNITS:
            raise ValueError(f"unknown patch unit {self.patch_unit!r}; choose from {PATCH_UNITS}")
        if self.input_dim < 1 or self.n_classes < 2 or self.hidden_dim < 1 or self.attention_dim < 1:
            raise ValueError("need input_dim >= 1, n_classes >= 2, hidden_dim >= 1, attention_dim >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.patch_unit == "identity" and self.hidden_dim != self.input_dim:
            object.__setattr__(self, "hidden_dim", self.input_dim)

    @property
    def uses_regions(self) -> bool:
        """Whether the regional parts (fusion, all-regions path) are on."""
        return self.model_type == "regional"

    @property
    def uses_attention(self) -> bool:
        """Whether pooling is gated attention (``False``: mean pooling)."""
        return self.model_type != "mean"

    def without_regions(self) -> ModelConfig:
        """The same model with the regional parts switched off (for bags without coordinates)."""
        if not self.uses_regions:
            return self
        return replace(self, model_type="abmil", context_dims={})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (round-trips through :meth:`from_dict`)."""
        data = asdict(replace(self, clinical=None))
        data["clinical"] = None if self.clinical is None else self.clinical.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        data = dict(data)
        selection = SelectionConfig(**data.pop("selection", {}))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        data["context_dims"] = {str(k): int(v) for k, v in dict(data.get("context_dims", {})).items()}
        clinical = data.pop("clinical", None)
        if clinical is not None:
            data["clinical"] = ClinicalEncoding.from_dict(clinical)
        return cls(selection=selection, **data)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Parameters
    ----------
    epochs
        Maximum number of passes over the training slides.
    learning_rate, weight_decay
        AdamW settings.
    schedule
        ``"cosine"`` (linear warm-up, then cosine decay), ``"onecycle"`` or ``"constant"``.
    warmup_epochs
        Warm-up length (cosine) or the rising part of the one-cycle schedule.
    patience
        Stop when the validation AUC (ties: the validation loss) has not improved by
        more than :data:`~napari_regional_mil.training.train.MIN_DELTA` for this many epochs.
    min_epochs
        Never stop before this many epochs.
    val_fraction
        Fraction of patients held out for validation when no validation set is given
        (stratified by class; 0 trains all epochs without early stopping).
    class_weights
        ``"none"``, ``"balanced"`` (inverse class frequency) or one weight per class.
    slides_per_step
        Slides whose gradients are accumulated per optimiser step.
    seed
        Seeds the weights, the patch selection, dropout and the slide order.
    threshold
        Decision threshold stored with the model (binary models): a number, or a rule
        tuned on the validation slides: ``"youden"``, ``"sensitivity=0.95"``,
        ``"specificity=0.95"`` (see :func:`~napari_regional_mil.thresholds.parse_threshold`).
    device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (see
        :func:`~napari_regional_mil.training.device.resolve_device`); the trained model is
        returned on the CPU.
    threads
        torch CPU threads while training (``None``: leave torch's setting). The model's
        operations are small, so 1 thread is often fastest and never oversubscribes a
        busy machine; the previous setting is restored when the job ends.
    stream
        Where the patch embeddings of cached slides live while training: ``"auto"``
        holds them in memory when they need at most 40 % of the available memory and
        otherwise reads each step's patches from the caches (see
        :mod:`~napari_regional_mil.training.memory`); ``"always"`` streams, ``"never"``
        holds. The model is the same either way.
    """

    epochs: int = field(default=40, metadata=option(
        "maximum number of passes over the training slides", low=1, high=10000, gui=True))
    learning_rate: float = field(default=2e-3, metadata=option(
        "AdamW learning rate", flag="--lr", low=1e-5, high=1.0, step=5e-4, decimals=5, gui=True))
    weight_decay: float = field(default=1e-2, metadata=option("AdamW weight decay", low=0.0, high=1.0, decimals=4))
    schedule: Literal["cosine", "onecycle", "constant"] = field(default="cosine", metadata=option(
        "learning-rate schedule"))
    warmup_epochs: int = field(default=2, metadata=option("warm-up epochs", low=0, high=1000))
    patience: int = field(default=10, metadata=option(
        "early stopping: stop when the validation AUC has not improved for this many epochs", low=1, high=10000,
        gui=True,
    ))
    min_epochs: int = field(default=10, metadata=option("never stop before this epoch", low=1, high=10000))
    val_fraction: float = field(default=0.2, metadata=option(
        "fraction of patients held out per class for early stopping (0: none; rows with split=val are used "
        "instead when present)", low=0.0, high=0.9, step=0.05, decimals=2, gui=True,
    ))
    class_weights: str | tuple[float, ...] = field(default="none", metadata=option(
        "cross-entropy class weights", choices=("none", "balanced")))
    slides_per_step: int = field(default=1, metadata=option("slides per optimiser step", low=1, high=1024))
    seed: int = field(default=0, metadata=option(
        "random seed: the weights, the patch selection, the split and the slide order", low=0, high=2**31 - 1,
        gui=True,
    ))
    threshold: str | float = field(default=0.5, metadata=option(
        "decision threshold stored with the model (binary models): a number, or tuned on the validation "
        "slides: youden (max. sensitivity + specificity), sensitivity=0.95 (the most specific threshold "
        "that reaches it) or specificity=0.95", label="Threshold", gui=True,
    ))
    threads: int | None = field(default=None, metadata=option(
        "torch CPU threads for training; the model's operations are small, so 1 is usually fastest and leaves "
        "the other cores to the viewer", label="CPU threads", low=1, high=256, gui=True, front_default=1,
    ))
    device: str = field(default="cpu", metadata=option(
        "where the first model trains and predicts: cpu, cuda, cuda:N (mixed precision) or mps"))
    stream: Literal["auto", "always", "never"] = field(default="auto", metadata=option(
        "where the cached patch embeddings live while training: auto (in memory when they need at most 2/5 of "
        "the available memory, else each step's patches are read from the caches), always (stream from the "
        "caches), never (hold in memory); the model is the same either way",
    ))

    def __post_init__(self) -> None:
        if self.stream not in ("auto", "always", "never"):
            raise ValueError(f"unknown stream mode {self.stream!r}; choose auto, always or never")
        if self.epochs < 1 or self.slides_per_step < 1 or self.learning_rate <= 0:
            raise ValueError("need epochs >= 1, slides_per_step >= 1 and learning_rate > 0")
        if self.schedule not in ("cosine", "onecycle", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if isinstance(self.class_weights, str) and self.class_weights not in ("none", "balanced"):
            raise ValueError(f"class_weights must be 'none', 'balanced' or numbers, got {self.class_weights!r}")
        rule = parse_threshold(self.threshold)  # raises ValueError naming the accepted forms
        # one spelling per rule, whichever front end set it ("0.5" from a text field is 0.5)
        object.__setattr__(self, "threshold", rule.target if not rule.tuned else rule.text)

    @property
    def threshold_rule(self) -> ThresholdRule:
        """The threshold as a :class:`~napari_regional_mil.thresholds.ThresholdRule`."""
        return parse_threshold(self.threshold)


@dataclass(frozen=True)
class ClinicalOptions:
    """Patient data in the classification ([0279]): which cohort columns the first model takes.

    Not part of :class:`ModelConfig`: training fits the chosen columns' encoding on the
    training slides and stores that in ``ModelConfig.clinical`` (see
    :mod:`napari_regional_mil.clinical`).

    Parameters
    ----------
    clinical
        The cohort table's other columns to fuse with the slide, comma-separated
        (``"age,sex,grade"``; ``grade:categorical`` or ``age:numeric`` sets a kind);
        empty: none.
    clinical_missing
        ``"indicator"``: a missing value is encoded explicitly (a missing indicator, or the
        ``"unknown"`` level); ``"refuse"``: every value is required, in training and when
        predicting.
    """

    clinical: str = field(default="", metadata=option(
        "clinical variables fused with the slide: other columns of the cohort table, comma-separated "
        "(e.g. age,sex,grade; grade:categorical or age:numeric sets the kind)",
    ))
    clinical_missing: Literal["indicator", "refuse"] = field(default="indicator", metadata=option(
        "missing clinical values: indicator (encoded explicitly: a missing indicator, or the 'unknown' "
        "level) or refuse (every value is required, in training and when predicting)",
        label="Missing values",
    ))


#: The default optimisation settings (one frozen instance, used as a default argument).
DEFAULT_TRAIN_CONFIG = TrainConfig()
