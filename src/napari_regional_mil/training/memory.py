"""In memory or streamed: where a training run keeps the patch embeddings, decided by size.

:func:`~.datasets.load_cohort_embeddings` opens every slide's cache without reading its
patch embeddings (:class:`~napari_regional_mil.embedding.store.StoredEmbeddings`).
Training then decides (:func:`plan_memory`, ``TrainConfig.stream``): a cohort whose
patch embeddings fit comfortably in the memory available is read into memory once (the
fast path: every step indexes arrays already there); a larger one is streamed from the
caches step by step (:mod:`.streaming`), so memory stays flat whatever the cohort's
size. The decision and the numbers behind it are logged (logger ``napari_regional_mil``)
and yielded as one progress event whose ``metrics`` carry ``{"memory": "in memory" |
"streamed", ...}``.

Both paths give the same model for the same seed: the feature standardisation is
computed per slide (:func:`moments_of`, float64 sums of the float32 embeddings) and
summed in slide order either way.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from ..embedding.store import LazyEmbeddings
from ..jobs import Progress
from .datasets import LabelledSlide

__all__ = [
    "MEMORY_FRACTION",
    "MemoryPlan",
    "Moments",
    "StreamMode",
    "cached_moments",
    "feature_statistics",
    "hold_in_memory",
    "moments_of",
    "plan_memory",
    "prepare_slides",
    "remember_moments",
]

StreamMode = Literal["auto", "always", "never"]

#: ``stream="auto"`` keeps a cohort in memory when it needs at most this fraction of the available memory.
MEMORY_FRACTION = 0.4

_log = logging.getLogger("napari_regional_mil")

Moments = tuple[int, torch.Tensor, torch.Tensor]
_MOMENTS: OrderedDict[tuple[str, tuple[object, ...]], Moments] = OrderedDict()
_MOMENTS_KEPT = 8192  # about 16 KiB each at 1,024 dims


@dataclass(frozen=True)
class MemoryPlan:
    """Where the patch embeddings of a run live.

    Parameters
    ----------
    stream
        True: read from the caches per step; False: held in memory.
    needed
        Bytes the slides' patch embeddings take in memory (as stored, plus the float32 bags).
    available
        Bytes of memory available when the plan was made.
    n_slides
        Slides in the run.
    reason
        One line saying what was decided and why.
    """

    stream: bool
    needed: int
    available: int
    n_slides: int
    reason: str


def _available_memory() -> int:
    import psutil  # lazy: optional (psutil: not a declared dependency, napari and distributed bring it)

    return int(psutil.virtual_memory().available)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def plan_memory(slides: Sequence[LabelledSlide], *, mode: StreamMode = "auto",
                available: int | None = None) -> MemoryPlan:
    """Decide whether a run streams its slides from the caches.

    Parameters
    ----------
    slides
        Every slide of the run (training and validation).
    mode
        ``"always"`` streams, ``"never"`` holds every slide in memory, ``"auto"`` holds
        them when they need at most :data:`MEMORY_FRACTION` of the ``available`` memory.
    available
        Bytes of memory available (default: the system's, from psutil).

    Returns
    -------
    MemoryPlan
        Slides already in memory (e.g. bags from feature files) always stay there.
    """
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"unknown stream mode {mode!r}; choose auto, always or never")
    stored = [s.embeddings for s in slides if isinstance(s.embeddings, LazyEmbeddings)]
    needed = sum(e.n_patches * e.embedding_dim * (e.reader.dtype.itemsize + 4) for e in stored)
    available = _available_memory() if available is None else int(available)
    n = len(slides)
    if not stored:
        return MemoryPlan(False, 0, available, n, f"{n} slides in memory (no cache to stream from)")
    size = f"{len(stored)} slides, {_gb(needed)} of patch embeddings in memory"
    if mode == "always":
        return MemoryPlan(True, needed, available, n, f"streaming {size} from the caches (--stream always)")
    if mode == "never":
        return MemoryPlan(False, needed, available, n, f"holding {size} (--stream never; {_gb(available)} available)")
    if needed <= MEMORY_FRACTION * available:
        return MemoryPlan(
            False, needed, available, n,
            f"holding {size}: fits in {MEMORY_FRACTION:.0%} of the {_gb(available)} available",
        )
    return MemoryPlan(
        True, needed, available, n,
        f"streaming {size} would exceed {MEMORY_FRACTION:.0%} of the {_gb(available)} available: "
        "read per step from the caches",
    )


def hold_in_memory(slides: Sequence[LabelledSlide]) -> Generator[Progress, None, list[LabelledSlide]]:
    """Read every streamed slide's embeddings into memory (a job); others are returned as they are."""
    stored = [s for s in slides if isinstance(s.embeddings, LazyEmbeddings)]
    out: list[LabelledSlide] = []
    done = 0
    for slide in slides:
        if isinstance(slide.embeddings, LazyEmbeddings):
            slide = replace(slide, embeddings=slide.embeddings.load())
            done += 1
            yield Progress("load", done, len(stored), f"loaded {slide.name}")
        out.append(slide)
    return out


def prepare_slides(
    slides: Sequence[LabelledSlide], *, mode: StreamMode = "auto"
) -> Generator[Progress, None, list[LabelledSlide]]:
    """Plan the run (:func:`plan_memory`), say so (log and one progress event), load the slides when held (a job).

    Returns
    -------
    list of LabelledSlide
        The slides, streamed (as given) or in memory.
    """
    plan = plan_memory(slides, mode=mode)
    _log.info("%s", plan.reason)
    streamed = sum(isinstance(s.embeddings, LazyEmbeddings) for s in slides)
    yield Progress("load", 0, 0, plan.reason, metrics={
        "memory": "streamed" if plan.stream else "in memory", "memory_needed": plan.needed,
        "memory_available": plan.available,
    })
    if plan.stream or not streamed:
        return list(slides)
    return (yield from hold_in_memory(slides))


def moments_of(features: torch.Tensor) -> Moments:
    """``(n, sum, sum of squares)`` of ``(N, D)`` float32 patch embeddings (float64 sums over the patches)."""
    x = features.double()
    return int(features.shape[0]), x.sum(0), (x**2).sum(0)


def _moments_key(emb: LazyEmbeddings) -> tuple[str, tuple[object, ...]]:
    attrs = emb.reader.attrs
    return str(emb.reader.path), tuple(attrs.get(k) for k in ("cache_key", "created", "completed", "dtype"))


def cached_moments(emb: LazyEmbeddings) -> Moments | None:
    """The moments of a store computed earlier in this process (cross-validation folds read each slide once)."""
    key = _moments_key(emb)
    found = _MOMENTS.get(key)
    if found is not None:
        _MOMENTS.move_to_end(key)
    return found


def remember_moments(emb: LazyEmbeddings, moments: Moments) -> Moments:
    """Keep a store's moments for :func:`cached_moments`; returns them."""
    _MOMENTS[_moments_key(emb)] = moments
    while len(_MOMENTS) > _MOMENTS_KEPT:
        _MOMENTS.popitem(last=False)
    return moments


def feature_statistics(moments: Sequence[Moments]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation over every training patch, from per-slide moments.

    The sums run in slide order, so in-memory and streamed runs standardise identically.
    """
    total = sum(m[0] for m in moments)
    s1 = sum(m[1] for m in moments)
    s2 = sum(m[2] for m in moments)
    assert isinstance(s1, torch.Tensor) and isinstance(s2, torch.Tensor)
    mean = s1 / total
    std = (s2 / total - mean**2).clamp_min(0).sqrt()
    return mean.float(), std.float()
