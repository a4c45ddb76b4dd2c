"""The first model: regional-embedding MIL ([0174]-[0195], Fig. 3, Fig. 4), and its baselines.

Data flow for one slide (``model_type="regional"``):

1. the selected patches (all patches at inference) go through the trainable patch unit
   ([0176]); optionally each is fused with its grid neighbours by attention ([0189]);
2. each patch vector and the regional embedding of its region are projected (1x1
   convolution = linear, FV_P and FV_SR), concatenated and projected again ([0191]-[0192]);
   the fused vectors of the selected patches of one region are pooled by attention into
   one vector FV_SR+P per selected region ([0180]) -- since the fusion is linear, this
   equals fusing the attention-pooled patch vector with the regional embedding;
3. the FV_SR+P are pooled by gated attention into FV*_SR+P ([0194]);
4. all-regions path: every regional embedding is projected (FV_R) and pooled by gated
   attention into FV*_R ([0182], [0193]);
5. the global embedding is the concatenation ([0194]) (plus, for several scales, pooled
   context embeddings, [0224]-[0225]); a linear classifier gives the class logits ([0195]).
6. patient data ([0279], optional): the encoded clinical variables (``config.clinical``)
   go through a small linear projection that is concatenated with the global embedding
   before the classifier. There is no non-linearity on this path, so the logits are the
   slide's term plus one additive term per clinical variable (``slide_logits`` and
   :meth:`FirstModel.clinical_logits`): each variable's contribution is exact, and the
   clinical-only logistic baseline is the same model without the slide's term. The
   projection starts at zero, so an encoded column that is never 1 in training (a
   missing indicator of a variable always present) stays without effect.

Attention pooling is a weighted mean, so a model trained on selected subsets applies
unchanged to the whole bag at inference: the weights renormalise over whatever patches
and regions are present. ``"abmil"`` skips the regional parts (one gated attention over
the patch vectors); ``"mean"`` also replaces the attention by a mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ..clinical import ClinicalRecord
from ..embedding.types import SlideEmbeddings
from ..errors import ClinicalError, TrainingError
from .config import ModelConfig
from .contributions import Contributions, explain_additive
from .layers import (
    GatedAttention,
    NeighbourAttention,
    make_patch_unit,
    segment_softmax,
    segment_sum,
)
from .selection import grid_neighbours

if TYPE_CHECKING:
    from ..embedding.store import LazyEmbeddings

__all__ = ["CLINICAL_DIM", "Bag", "FirstModel", "ModelOutput", "clinical_tensor", "make_bag"]

#: Width of the projected clinical vector (at most the model's ``hidden_dim``).
CLINICAL_DIM = 16


@dataclass(frozen=True, eq=False)
class Bag:
    """One slide as tensors, ready for :class:`FirstModel`.

    Parameters
    ----------
    name
        The slide's name.
    features
        ``(N, D)`` float32 patch embeddings.
    region_index
        ``(N,)`` int64 region of each patch, or ``None`` (no regions).
    regional
        ``(R, D)`` cached regional embeddings (pooled), or ``None``.
    neighbours
        ``(N, n)`` int64 grid neighbours (``-1`` = none), or ``None``.
    context
        Several-scales context embeddings by name, each ``(R, D_k)``.
    clinical
        ``(K,)`` float32 encoded clinical variables (``ModelConfig.clinical``), or ``None``.
    """

    name: str
    features: Tensor
    region_index: Tensor | None = None
    regional: Tensor | None = None
    neighbours: Tensor | None = None
    context: dict[str, Tensor] = field(default_factory=dict)
    clinical: Tensor | None = None

    @property
    def n_patches(self) -> int:
        """The number of patches in the bag."""
        return int(self.features.shape[0])

    @property
    def n_regions(self) -> int:
        """The number of regions in the bag (0 without a region index)."""
        return 0 if self.region_index is None else int(self.region_index.max()) + 1


def _pooled_regions(features: np.ndarray, region_index: np.ndarray, n_regions: int, how: str) -> np.ndarray:
    out = np.zeros((n_regions, features.shape[1]), dtype=np.float32)
    if how == "max":
        out[:] = -np.inf
        np.maximum.at(out, region_index, features)
        return out
    np.add.at(out, region_index, features)
    counts = np.bincount(region_index, minlength=n_regions).clip(min=1)
    return out / counts[:, None]


def clinical_tensor(name: str, config: ModelConfig, clinical: ClinicalRecord | None) -> Tensor | None:
    """The encoded clinical variables of slide ``name`` for ``config`` (``None`` when it takes none).

    Raises
    ------
    ClinicalError
        The model takes clinical variables and ``clinical`` is missing or cannot be encoded.
    """
    if config.clinical is None:
        return None
    if clinical is None:
        raise ClinicalError(
            f"slide {name!r}: the model takes clinical variables ({', '.join(config.clinical.names)}); "
            "none were given for this slide"
        )
    return torch.from_numpy(config.clinical.encode(clinical))


def make_bag(
    embeddings: SlideEmbeddings | LazyEmbeddings, config: ModelConfig, *, clinical: ClinicalRecord | None = None
) -> Bag:
    """Turn cached :class:`SlideEmbeddings` into a :class:`Bag` for ``config``.

    Parameters
    ----------
    embeddings
        The slide's cached embeddings.
    config
        The model's hyper-parameters.
    clinical
        The slide's clinical values; required when ``config.clinical`` is set (ignored
        otherwise).

    Raises
    ------
    TrainingError
        The bag is empty, its dimension differs from the model's, or the model needs
        regions (or context embeddings) the bag does not have.
    ClinicalError
        The model takes clinical variables and ``clinical`` is missing or holds a value
        the encoding cannot take (naming the row and column).
    """
    name = embeddings.slide_name
    if embeddings.n_patches == 0:
        raise TrainingError(f"slide {name!r}: empty bag (no patches)")
    if embeddings.embedding_dim != config.input_dim:
        raise TrainingError(
            f"slide {name!r}: embedding dimension {embeddings.embedding_dim} "
            f"differs from the model's {config.input_dim}"
        )
    features = torch.from_numpy(np.ascontiguousarray(embeddings.features, dtype=np.float32))
    encoded = clinical_tensor(name, config, clinical)
    if not config.uses_regions:
        return Bag(name=name, features=features, clinical=encoded)
    grid_xy = embeddings.grid_xy
    if not embeddings.has_regions or grid_xy is None:
        raise TrainingError(f"slide {name!r}: the regional model needs patch grid and regions; this bag has none")
    region_index = np.asarray(embeddings.region_index, dtype=np.int64)
    n_regions = embeddings.n_regions
    regional = None
    if config.regional_source != "attention":
        cached = embeddings.regional_embeddings.get(config.regional_source)
        if cached is None or cached.shape[0] != n_regions:
            cached = _pooled_regions(np.asarray(embeddings.features), region_index, n_regions, config.regional_source)
        regional = torch.from_numpy(np.ascontiguousarray(cached, dtype=np.float32))
    neighbours = None
    if config.selection.n_neighbours:
        neighbours = torch.from_numpy(grid_neighbours(grid_xy, config.selection.n_neighbours))
    context = {}
    for key in config.context_dims:
        if key not in embeddings.context_embeddings:
            raise TrainingError(f"slide {name!r}: no context embeddings {key!r} (the model was built with them)")
        context[key] = torch.from_numpy(np.ascontiguousarray(embeddings.context_embeddings[key], dtype=np.float32))
    return Bag(
        name=name,
        features=features,
        region_index=torch.from_numpy(region_index),
        regional=regional,
        neighbours=neighbours,
        context=context,
        clinical=encoded,
    )


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """What :meth:`FirstModel.forward` returns.

    Parameters
    ----------
    logits
        ``(C,)`` class logits.
    patch_indices
        ``(M,)`` the patches the selected-patch path used (all of them at inference).
    patch_attention
        ``(M,)`` attention of each of those patches in the selected-patch path (sums to 1).
    region_attention
        ``(R,)`` attention of every region in the all-regions path, or ``None``.
    patch_evidence
        ``(M, C)`` attention times each patch's logit contribution, when asked for.
    slide_logits
        ``(C,)`` the slide's term of the logits (classifier weights times the slide's
        part of the global embedding, no bias), for models with clinical variables.
    """

    logits: Tensor
    patch_indices: Tensor
    patch_attention: Tensor
    region_attention: Tensor | None = None
    patch_evidence: Tensor | None = None
    slide_logits: Tensor | None = None


class FirstModel(nn.Module):
    """The first model (``config.model_type``: regional, abmil or mean).

    Parameters
    ----------
    config
        Hyper-parameters (see :class:`~.config.ModelConfig`).
    """

    #: Patches processed at once by the per-patch layers (bounds memory at inference).
    chunk_size: int = 16384
    # buffers (register_buffer): the embeddings' standardisation and the slide term's reference
    feature_shift: Tensor
    feature_scale: Tensor
    slide_logit_reference: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, h, a = config.input_dim, config.hidden_dim, config.attention_dim
        attend = config.uses_attention
        # standardisation of the frozen embeddings (set from the training patches, saved with the model)
        self.register_buffer("feature_shift", torch.zeros(d))
        self.register_buffer("feature_scale", torch.ones(d))
        self.patch_unit = make_patch_unit(config.patch_unit, d, h, config.dropout)
        self.neighbour_attention = NeighbourAttention(h, a) if config.selection.n_neighbours else None
        self.dropout = nn.Dropout(config.dropout)
        global_dim = h
        if config.uses_regions:
            if config.regional_source == "attention":
                self.region_pooling = GatedAttention(d, a)
            self.project_patch = nn.Linear(h, h)  # FV_P, 1x1 convolution
            self.project_selected_region = nn.Linear(d, h)  # FV_SR
            self.fuse = nn.Linear(2 * h, h)  # FV_SR+P
            self.within_region_attention = GatedAttention(h, a, enabled=attend)
            if config.all_regions:
                self.project_region = nn.Linear(d, h)  # FV_R
                self.all_regions_attention = GatedAttention(h, a, enabled=attend)
                global_dim += h
            self.context_projections = nn.ModuleDict({k: nn.Linear(v, h) for k, v in config.context_dims.items()})
            self.context_attention = nn.ModuleDict(
                {k: GatedAttention(h, a, enabled=attend) for k in config.context_dims}
            )
            global_dim += h * len(config.context_dims)
        self.selected_attention = GatedAttention(h, a, enabled=attend)
        #: Width of the slide's part of the global embedding (the clinical part follows it).
        self.slide_dim = global_dim
        if config.clinical is not None:
            self.clinical_projection = nn.Linear(config.clinical.width, min(CLINICAL_DIM, h))
            nn.init.zeros_(self.clinical_projection.weight)
            nn.init.zeros_(self.clinical_projection.bias)
            global_dim += self.clinical_projection.out_features
            # mean of the slide's logit term over the training slides (set after training):
            # the reference the slide's contribution is measured against
            self.register_buffer("slide_logit_reference", torch.zeros(config.n_classes))
        self.classifier = nn.Linear(global_dim, config.n_classes)

    @torch.no_grad()
    def set_feature_normalisation(self, mean: Tensor, std: Tensor) -> None:
        """Standardise the frozen embeddings with these per-dimension statistics."""
        floor = max(1e-6, 0.01 * float(std.median()))
        self.feature_shift.copy_(mean)
        self.feature_scale.copy_(std.clamp_min(floor))

    @torch.no_grad()
    def set_slide_reference(self, slide_logits: Tensor) -> None:
        """Store the mean slide term of the logits over the training slides ``(n, C)``."""
        self.slide_logit_reference.copy_(slide_logits.mean(dim=0))

    def clinical_logits(self, encoded: Tensor) -> Tensor:
        """The clinical term of the logits (no bias): ``(..., K)`` encoded values -> ``(..., C)``."""
        if self.config.clinical is None:
            raise TrainingError("this model takes no clinical variables")
        weight = self.classifier.weight[:, self.slide_dim :]
        return self.clinical_projection(encoded) @ weight.T

    @torch.no_grad()
    def contributions(self, bag: Bag, output: ModelOutput, class_index: int) -> Contributions:
        """Contributions of the slide and of each clinical variable to ``class_index``.

        ``output`` is this model's output on ``bag`` in eval mode (see :mod:`~.contributions`).
        """
        if self.config.clinical is None or bag.clinical is None or output.slide_logits is None:
            raise TrainingError("contributions need a model with clinical variables and its output on a bag")

        device = self.classifier.bias.device

        def host(t: Tensor) -> np.ndarray:
            return t.double().cpu().numpy()

        def clinical_logits(x: np.ndarray) -> np.ndarray:
            return host(self.clinical_logits(torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)))

        return explain_additive(
            encoding=self.config.clinical,
            encoded=bag.clinical.cpu().numpy(),
            clinical_logits=clinical_logits,
            base_logits=host(self.classifier.bias),
            class_index=class_index,
            slide_logits=host(output.slide_logits),
            slide_reference=host(self.slide_logit_reference),
        )

    def _normalised(self, features: Tensor) -> Tensor:
        return (features - self.feature_shift) / self.feature_scale

    # -- per-patch layers, in chunks -----------------------------------------------------
    def _patch_vectors(self, bag: Bag, idx: Tensor) -> Tensor:
        """Patch unit (+ neighbour fusion) of the patches ``idx`` -> (M, H)."""
        parts = []
        for start in range(0, idx.shape[0], self.chunk_size):
            chunk = idx[start : start + self.chunk_size]
            u = self.patch_unit(self._normalised(bag.features[chunk]))
            if self.neighbour_attention is not None and bag.neighbours is not None:
                nb = bag.neighbours[chunk]
                valid = nb >= 0
                u_nb = self.patch_unit(self._normalised(bag.features[nb.clamp_min(0)]))
                u = self.neighbour_attention(u, u_nb, valid)
            parts.append(u)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def regional_embeddings(self, bag: Bag) -> Tensor:
        """``(R, D)`` standardised regional embeddings: cached, or by trainable attention."""
        if bag.regional is not None:
            return self._normalised(bag.regional)
        assert bag.region_index is not None
        chunks = [slice(s, s + self.chunk_size) for s in range(0, bag.n_patches, self.chunk_size)]
        scores = torch.cat([self.region_pooling.scores(self._normalised(bag.features[c])) for c in chunks])
        weights = segment_softmax(scores, bag.region_index, bag.n_regions)
        pooled = torch.zeros(
            (bag.n_regions, bag.features.shape[1]), dtype=bag.features.dtype, device=bag.features.device
        )
        for c in chunks:
            weighted = weights[c].unsqueeze(-1) * self._normalised(bag.features[c])
            pooled = pooled + segment_sum(weighted, bag.region_index[c], bag.n_regions)
        return pooled

    # -- forward ----------------------------------------------------------------------
    def forward(self, bag: Bag, selected: Tensor | None = None, *, evidence: bool = False) -> ModelOutput:
        """Run the first model on one bag.

        Parameters
        ----------
        bag
            The slide (see :func:`make_bag`).
        selected
            int64 indices of the selected patches (training); ``None`` uses every patch.
        evidence
            Also compute per-patch class evidence (inference).
        """
        idx = torch.arange(bag.n_patches, device=bag.features.device) if selected is None else selected
        u = self._patch_vectors(bag, idx)
        parts: list[Tensor] = []
        region_attention = None
        w_sel = self.classifier.weight[:, : self.config.hidden_dim]
        if self.config.uses_regions:
            assert bag.region_index is not None
            e = self.regional_embeddings(bag)
            segments, inverse = torch.unique(bag.region_index[idx], return_inverse=True)
            fv_sr = self.project_selected_region(e[segments])[inverse]
            h = self.fuse(torch.cat([self.project_patch(u), fv_sr], dim=-1))
            a = segment_softmax(self.within_region_attention.scores(h), inverse, segments.shape[0])
            v = self.dropout(torch.relu(segment_sum(a.unsqueeze(-1) * h, inverse, segments.shape[0])))
            z_sel, b = self.selected_attention(v)
            patch_attention = a * b[inverse]
            contrib = (a.unsqueeze(-1) * (b.unsqueeze(-1) * (v @ w_sel.T))[inverse]) if evidence else None
            parts.append(z_sel)
            if self.config.all_regions:
                v_r = torch.relu(self.project_region(e))
                z_r, region_attention = self.all_regions_attention(v_r)
                parts.append(z_r)
            for key, projection in self.context_projections.items():
                z_k, _ = self.context_attention[key](torch.relu(projection(bag.context[key])))
                parts.append(z_k)
        else:
            h = self.dropout(u)
            z_sel, patch_attention = self.selected_attention(h)
            contrib = patch_attention.unsqueeze(-1) * (h @ w_sel.T) if evidence else None
            parts.append(z_sel)
        slide_logits = None
        if self.config.clinical is not None:
            if bag.clinical is None:
                raise ClinicalError(
                    f"slide {bag.name!r}: the model takes clinical variables "
                    f"({', '.join(self.config.clinical.names)}); none were given for this slide"
                )
            slide_embedding = torch.cat(parts)
            slide_logits = self.classifier.weight[:, : self.slide_dim] @ slide_embedding
            parts.append(self.clinical_projection(bag.clinical))
        global_embedding = torch.cat(parts)
        logits = self.classifier(self.dropout(global_embedding))
        return ModelOutput(
            logits=logits,
            patch_indices=idx,
            patch_attention=patch_attention,
            region_attention=region_attention,
            patch_evidence=contrib,
            slide_logits=slide_logits,
        )

    def region_attention_of_patches(self, bag: Bag, patch_attention: Tensor) -> Tensor:
        """Sum the selected-path attention of the patches per region -> (R,)."""
        assert bag.region_index is not None
        return segment_sum(patch_attention.unsqueeze(-1), bag.region_index, bag.n_regions).squeeze(-1)

