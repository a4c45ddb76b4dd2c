"""Embedding many slides: the one path the CLI, the cluster, the widgets and the demo share.

:func:`embed_slides` embeds slides one after the other in this process, or one per task
on a dask cluster (``scheduler=``), then adds context embeddings (several scales) to every
cached slide; a slide that fails becomes a failed :class:`SlideSummary` and the others go
on (or, with ``on_error="raise"``, stops the job with its error).
:func:`embed_with_contexts` does the same for one slide (the Embed widget's job).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import CacheError, RegionalMilError
from ..jobs import Progress
from ..tiling import TilingParams
from ..tissue import TissueMask
from ..tissue_source import TissueSource
from .cluster import embed_on_cluster
from .context import ContextResult, context_requests, describe_context, embed_contexts
from .pipeline import EmbedResult, embed_slide, load_encoder_for
from .store import check_writable
from .summaries import SlideSummary, summarise

if TYPE_CHECKING:
    from ..encoders import EncoderLike

__all__ = ["ContextRequest", "embed_slides", "embed_with_contexts"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ContextRequest:
    """A context encoder (several scales, [0224]-[0225]) to run on every region after the patches.

    Parameters
    ----------
    encoder
        A registered name, an encoder file, or a loaded encoder.
    scale
        The context patch is read at ``scale`` x the tiling's um/px, centred on each region.
    options
        Loading options (e.g. ``{"weights": path}``).
    """

    encoder: EncoderLike
    scale: float = 2.0
    options: Mapping[str, object] | None = None


def _prefixed(job: Generator[Progress, None, EmbedResult], prefix: str) -> Generator[Progress, None, EmbedResult]:
    """Re-yield a job's events with ``prefix`` on their message; return its result."""
    try:
        while True:
            try:
                e = next(job)
            except StopIteration as stop:
                result: EmbedResult = stop.value
                return result
            message = f"{prefix}: {e.message}" if e.message else prefix
            yield Progress(e.stage, e.done, e.total, message, e.rate, e.metrics)
    finally:
        job.close()


def embed_slides(
    slide_paths: Sequence[PathLike],
    *,
    cache_dir: PathLike,
    encoder: EncoderLike = "builtin-he",
    encoder_options: Mapping[str, object] | None = None,
    tiling_params: TilingParams | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    mpp: float | None = None,
    contexts: Sequence[ContextRequest] = (),
    scheduler: str | None = None,
    workers: int = 2,
    on_error: Literal["continue", "raise"] = "continue",
    dtype: str = "auto",
    tissue: TissueSource | None = None,
) -> Generator[Progress, None, list[SlideSummary]]:
    """Embed slides into the cache, then their context embeddings (a job generator).

    Parameters
    ----------
    slide_paths
        The slides.
    cache_dir
        The cache directory (created if needed).
    encoder, encoder_options
        The encoder (a name, a file, or a loaded one; loaded once for every slide).
    tiling_params, batch_size, device, num_readers, mpp, dtype, tissue
        As for :func:`~napari_regional_mil.embedding.pipeline.embed_slide` (``dtype``: how the
        patch embeddings are stored, ``"auto"``, ``"float16"`` or ``"float32"``; ``tissue``: detection
        options, mask files, annotations).
    contexts
        Context encoders to run on every cached slide afterwards (each loaded once).
    scheduler
        None: in this process; ``"local"`` or ``"tcp://host:port"``: one slide per task
        on a dask cluster (``encoder`` must then be a name or a file).
    workers
        Workers of a local cluster.
    on_error
        ``"continue"``: a failing slide becomes a failed summary; ``"raise"``: its error
        stops the job.

    Yields
    ------
    Progress
        The slides' own events (``"embed"``, ``"context"``; messages prefixed with
        ``slide i/n (name)``), and one ``"embedded"`` event per slide whose message is
        its summary line and whose ``metrics`` are ``{"embedded": name, "ok": bool}``.

    Returns
    -------
    list of SlideSummary
        In the order of ``slide_paths``.

    Raises
    ------
    CacheError, EncoderError
        An unwritable cache directory or an encoder that cannot be loaded (before any
        slide); with ``on_error="raise"``, the first slide's error.
    """
    check_writable(cache_dir)
    paths = [Path(p) for p in slide_paths]
    summaries: list[SlideSummary] = []
    if scheduler:
        if not isinstance(encoder, (str, os.PathLike)):
            raise CacheError("embedding on a cluster needs the encoder's name or file, not a loaded encoder")
        summaries = yield from embed_on_cluster(
            paths, cache_dir=cache_dir, scheduler=scheduler, workers=workers, tiling_params=tiling_params,
            encoder=os.fspath(encoder), encoder_options=encoder_options, batch_size=batch_size, device=device,
            num_readers=num_readers, mpp=mpp, dtype=dtype, tissue=tissue,
        )
        for i, summary in enumerate(summaries):
            yield _embedded_event(summary, i, len(summaries))
        if contexts:
            summaries = yield from _add_contexts(summaries, _loaded(contexts, device), batch_size=batch_size,
                                                 device=device, num_readers=num_readers, on_error=on_error)
        return summaries
    loaded = load_encoder_for(encoder, device=device, options=encoder_options)  # once, for every slide
    loaded_contexts = _loaded(contexts, device)
    for i, path in enumerate(paths):
        prefix = f"slide {i + 1}/{len(paths)} ({path.stem})"
        try:
            job = embed_slide(path, cache_dir=cache_dir, encoder=loaded, tiling_params=tiling_params,
                              batch_size=batch_size, device=device, num_readers=num_readers, mpp=mpp, dtype=dtype,
                              tissue=tissue)
            result = yield from _prefixed(job, prefix)
            summary = summarise(result)
        except RegionalMilError as exc:
            if on_error == "raise":
                raise
            summary = SlideSummary(path.stem, False, str(exc))
        if loaded_contexts:
            [summary] = yield from _add_contexts([summary], loaded_contexts, batch_size=batch_size, device=device,
                                                 num_readers=num_readers, on_error=on_error)
        summaries.append(summary)
        yield _embedded_event(summary, i, len(paths))
    return summaries


def _loaded(contexts: Sequence[ContextRequest], device: str) -> list[ContextRequest]:
    """The context requests with each encoder loaded once (so it is not loaded per slide)."""
    pairs = context_requests(
        [c.encoder for c in contexts], [c.scale for c in contexts], device=device,
        encoder_options=[c.options for c in contexts],
    )
    return [ContextRequest(encoder, scale) for encoder, scale in pairs]


def embed_with_contexts(
    slide_path: PathLike,
    *,
    cache_dir: PathLike,
    contexts: Sequence[ContextRequest] = (),
    encoder: EncoderLike = "builtin-he",
    encoder_options: Mapping[str, object] | None = None,
    tiling_params: TilingParams | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    mpp: float | None = None,
    tissue_mask: TissueMask | np.ndarray | None = None,
    dtype: str = "auto",
    tissue: TissueSource | None = None,
) -> Generator[Progress, None, tuple[EmbedResult, list[ContextResult]]]:
    """Embed one slide (or find its cache), then its context embeddings (a job); the Embed widget's job.

    Parameters are those of :func:`~napari_regional_mil.embedding.pipeline.embed_slide`
    and :func:`embed_slides`.
    """
    result = yield from embed_slide(
        slide_path, cache_dir=cache_dir, encoder=encoder, encoder_options=encoder_options, tiling_params=tiling_params,
        batch_size=batch_size, device=device, num_readers=num_readers, mpp=mpp, tissue_mask=tissue_mask, dtype=dtype,
        tissue=tissue,
    )
    pairs = [(c.encoder, c.scale) for c in _loaded(contexts, device)]
    context_results = yield from embed_contexts(result.cache_path, pairs, batch_size=batch_size, device=device,
                                                num_readers=num_readers)
    return result, context_results


def _embedded_event(summary: SlideSummary, index: int, total: int) -> Progress:
    metrics = {"embedded": summary.slide, "ok": summary.ok}
    return Progress("embedded", index + 1, total, summary.message, metrics=metrics)


def _add_contexts(
    summaries: list[SlideSummary],
    contexts: Sequence[ContextRequest],
    *,
    batch_size: int,
    device: str,
    num_readers: int,
    on_error: Literal["continue", "raise"],
) -> Generator[Progress, None, list[SlideSummary]]:
    """Context embeddings for every cached slide; a failure fails its slide."""
    pairs = [(c.encoder, c.scale) for c in contexts]
    out: list[SlideSummary] = []
    for summary in summaries:
        if summary.ok:
            try:
                results = yield from embed_contexts(summary.cache_path, pairs, batch_size=batch_size, device=device,
                                                    num_readers=num_readers)
                lines = "; ".join(describe_context(r) for r in results)
                yield Progress("context", len(out) + 1, len(summaries), f"{summary.slide}: {lines}",
                               metrics={"context": summary.slide})
            except RegionalMilError as exc:
                if on_error == "raise":
                    raise
                summary = replace(summary, ok=False, message=f"context embeddings: {exc}")
        out.append(summary)
    return out
