"""Hyper-parameters of the first model and of its patch selection.

The three model types share one implementation (:class:`~.first_model.FirstModel`):

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

__all__ = [
    "MODEL_TYPES",
    "REGIONAL_SOURCES",
    "SELECTION_STRATEGIES",
    "WEIGHT_SOURCES",
    "ModelConfig",
    "SelectionConfig",
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
        :mod:`~.selection`). Strategies that need regions fall back to ``"random"`` for
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

    strategy: Literal["random", "max_coverage", "equal_per_region", "uniform", "weighted"] = (
        "equal_per_region"
    )
    min_patches: int = 64
    max_patches: int = 256
    patches_per_region: int = 4
    n_neighbours: int = 0
    weight_source: Literal["tissue", "attention"] = "tissue"

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
    model_type: Literal["regional", "abmil", "mean"] = "regional"
    hidden_dim: int = 128
    attention_dim: int = 64
    dropout: float = 0.1
    patch_unit: Literal["mlp", "linear", "identity"] = "mlp"
    regional_source: Literal["mean", "max", "attention"] = "mean"
    all_regions: bool = True
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
        data["clinical"] = None if clinical is None else ClinicalEncoding.from_dict(clinical)
        return cls(selection=selection, **data)
