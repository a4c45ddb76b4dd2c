"""Building blocks of the first model: segment operations, gated attention, patch unit.

Segment operations work on a flat set of instances with a segment id each (the region
of a patch), with ``index_add`` and ``scatter_reduce`` only (no torch_scatter), so a
bag of any size is one tensor and no padding is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GatedAttention", "NeighbourAttention", "make_patch_unit", "segment_mean", "segment_softmax", "segment_sum"]


def segment_softmax(scores: Tensor, segments: Tensor, n_segments: int) -> Tensor:
    """Softmax of ``scores`` (N,) within each segment (``segments`` (N,) int64 in [0, S)).

    Computed in float32 whatever the scores' dtype (under CUDA autocast ``exp`` returns
    float32 while the scores are half precision; ``index_add`` needs one dtype).
    """
    scores = scores.float()
    peak = torch.full((n_segments,), float("-inf"), dtype=scores.dtype, device=scores.device)
    peak = peak.scatter_reduce(0, segments, scores.detach(), reduce="amax", include_self=True)
    exp = torch.exp(scores - peak[segments])
    total = torch.zeros(n_segments, dtype=scores.dtype, device=scores.device).index_add(0, segments, exp)
    return exp / total[segments]


def segment_sum(values: Tensor, segments: Tensor, n_segments: int) -> Tensor:
    """Sum of the rows of ``values`` (N, H) within each segment -> (S, H)."""
    out = torch.zeros((n_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add(0, segments, values)


def segment_mean(values: Tensor, segments: Tensor, n_segments: int) -> Tensor:
    """Mean of the rows of ``values`` (N, H) within each segment -> (S, H) (0 for empty ones)."""
    counts = torch.zeros(n_segments, dtype=values.dtype, device=values.device)
    counts = counts.index_add(0, segments, torch.ones_like(segments, dtype=values.dtype))
    return segment_sum(values, segments, n_segments) / counts.clamp_min(1.0).unsqueeze(-1)


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018): ``w^T (tanh(V h) * sigmoid(U h))``.

    With ``enabled=False`` every instance scores 0, so the softmax is a plain mean
    (the mean-pooling baseline comes from the same code).
    """

    def __init__(self, in_dim: int, attention_dim: int, *, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.value = nn.Linear(in_dim, attention_dim)
        self.gate = nn.Linear(in_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def scores(self, h: Tensor) -> Tensor:
        """Unnormalised attention scores (..., N) of instances ``h`` (..., N, H)."""
        if not self.enabled:
            return torch.zeros(h.shape[:-1], dtype=h.dtype, device=h.device)
        return self.score(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h))).squeeze(-1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Pool the instances ``h`` (N, H) into one vector; return ``(pooled (H,), weights (N,))``."""
        weights = torch.softmax(self.scores(h), dim=0)
        return weights @ h, weights


def make_patch_unit(kind: str, in_dim: int, hidden_dim: int, dropout: float) -> nn.Module:
    """The trainable patch unit ([0176]) on the frozen patch embeddings."""
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU())
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(),
    )


class NeighbourAttention(nn.Module):
    """Fuse a selected patch with its grid neighbours by attention ([0181], [0189]).

    The patch and its neighbours (after the patch unit) are scored by a gated attention
    and averaged with the softmax weights (multi-attention MIL, Konstantinov & Utkin 2021).
    """

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        self.attention = GatedAttention(dim, attention_dim)

    def forward(self, centre: Tensor, neighbours: Tensor, valid: Tensor) -> Tensor:
        """``centre`` (M, H), ``neighbours`` (M, n, H), ``valid`` (M, n) bool -> (M, H)."""
        stack = torch.cat([centre.unsqueeze(1), neighbours], dim=1)
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        scores = self.attention.scores(stack).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights.unsqueeze(-1) * stack).sum(dim=1)
