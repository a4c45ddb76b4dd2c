"""Embedding jobs of many slides: the one path the CLI, the cluster, the widgets and the demo share.

- :func:`embed_slides` embeds slides one after the other in this process, or one per
  task on a dask cluster (``scheduler=``), then adds context embeddings (several
  scales) to every cached slide; a slide that fails becomes a failed
  :class:`SlideSummary` and the others go on (or, with ``on_error="raise"``, stops the
  job with its error).
- :func:`embeddings_for` finds the cached embeddings of a slide for a trained model, or
  embeds the slide first with the model's encoder and tiling ("find the cache or embed").
- :func:`default_cache_dir` is where a slide's cache goes when the user chose none.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import platformdirs

from ..errors import CacheError, RegionalMilError
from ..jobs import Progress, run_job
from ..tiling import TilingParams
from ..tissue import TissueMask
from ..tissue_source import TissueSource
from .cluster import run_on_cluster
from .context import ContextResult, context_requests, describe_context, embed_contexts
from .pipeline import EmbedResult, embed_slide, load_encoder_for
from .store import check_writable, find_slide_cache, load_slide_embeddings
from .types import SlideEmbeddings

if TYPE_CHECKING:
    from ..encoders import EncoderLike, FrozenEncoder
    from ..model.checkpoint import Checkpoint

__all__ = [
    "CACHE_FOLDER",
    "ContextRequest",
    "SlideSummary",
    "checkpoint_tiling",
    "default_cache_dir",
    "embed_on_cluster",
    "embed_one",
    "embed_slides",
    "embed_with_contexts",
    "embeddings_for",
    "summary_line",
    "user_cache_dir",
]

#: Name of the cache folder made next to the slides.
CACHE_FOLDER = "regional-mil-cache"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SlideSummary:
    """Outcome of embedding one slide.

    ``ok`` False means ``message`` says why (one line); otherwise ``message`` is the
    summary line (:func:`summary_line`).
    """

    slide: str
    ok: bool
    message: str
    cache_path: str = ""
    n_patches: int = 0
    n_regions: int = 0
    computed: bool = False
    seconds: float = 0.0

    def describe(self) -> str:
        """``<slide> ok`` or ``<slide> failed``."""
        return self.slide + (" ok" if self.ok else " failed")


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


def user_cache_dir() -> Path:
    """The user's cache folder for embeddings (``$XDG_CACHE_HOME`` on Linux, the platform's elsewhere)."""
    return Path(platformdirs.user_cache_dir("napari-regional-mil", appauthor=False)) / "embeddings"


def default_cache_dir(slide_path: PathLike) -> Path:
    """``<slide folder>/regional-mil-cache`` when that folder is writable, else :func:`user_cache_dir`.

    Parameters
    ----------
    slide_path
        The slide file.
    """
    folder = Path(slide_path).expanduser().resolve().parent
    cache = folder / CACHE_FOLDER
    if (cache.is_dir() and os.access(cache, os.W_OK)) or (not cache.exists() and os.access(folder, os.W_OK)):
        return cache
    return user_cache_dir()


def summary_line(result: EmbedResult) -> str:
    """One line about an :class:`~napari_regional_mil.embedding.pipeline.EmbedResult`."""
    how = f"{result.rate:.1f} patches/s" + (f", resumed at {result.resumed_from}" if result.resumed_from else "")
    how = how if result.computed else "already cached"
    skipped = (f" ({result.n_damaged} patches on damaged tiles could not be read and were left out)"
               if result.n_damaged else "")
    return (
        f"{result.slide_name}: {result.n_patches} patches{skipped}, {result.n_regions} regions, "
        f"{result.encoder} ({result.embedding_dim}-d) -> {result.cache_path} [{how}, {result.seconds:.1f} s]"
    )


def _summary(result: EmbedResult) -> SlideSummary:
    return SlideSummary(
        result.slide_name, True, summary_line(result), cache_path=str(result.cache_path), n_patches=result.n_patches,
        n_regions=result.n_regions, computed=result.computed, seconds=result.seconds,
    )


_WORKER_ENCODER: dict[tuple[str, ...], FrozenEncoder] = {}  # this worker process's loaded encoder
_WORKER_LOCK = threading.Lock()


def _stamp(path: str) -> str:
    """A file's size and modification time (so a replaced encoder file is loaded again); ``""`` otherwise."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def worker_encoder(encoder: str, *, device: str, options: Mapping[str, object] | None) -> FrozenEncoder:
    """The encoder of a cluster task, loaded once per worker process and reused by its next slides.

    The worker keeps one encoder (the last one asked for); a different name, device, option or a
    changed encoder or weights file loads it again.
    """
    opts = dict(options or {})
    weights = str(opts.get("weights") or "")
    key = (encoder, device, repr(sorted(opts.items())), _stamp(encoder), _stamp(weights))
    with _WORKER_LOCK:
        if key not in _WORKER_ENCODER:
            _WORKER_ENCODER.clear()  # one model per worker: bounded memory
            _WORKER_ENCODER[key] = load_encoder_for(encoder, device=device, options=opts)
        return _WORKER_ENCODER[key]


def embed_one(
    slide_path: PathLike,
    *,
    cache_dir: PathLike,
    tiling_params: TilingParams | None = None,
    encoder: str = "builtin-he",
    encoder_options: Mapping[str, object] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    mpp: float | None = None,
    torch_threads: int | None = None,
    dtype: str = "auto",
    tissue: TissueSource | None = None,
) -> SlideSummary:
    """Embed one slide to completion on a cluster worker; every error becomes a failed summary.

    Parameters
    ----------
    slide_path
        The slide.
    cache_dir, tiling_params, encoder, encoder_options, batch_size, device, num_readers, mpp, dtype, tissue
        As for :func:`~napari_regional_mil.embedding.pipeline.embed_slide`.
    torch_threads
        ``torch.set_num_threads`` on the worker.
    """
    import dask  # both imported on the worker only
    import torch

    t0 = time.perf_counter()
    name = Path(slide_path).stem
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    try:
        # dask arrays used inside (e.g. tissue detection on the display pyramid) must be
        # computed here, not shipped to the cluster this task runs on
        with dask.config.set(scheduler="threads"):
            loaded = worker_encoder(encoder, device=device, options=encoder_options)  # once per worker
            result = run_job(embed_slide(
                slide_path, cache_dir=cache_dir, tiling_params=tiling_params, encoder=loaded,
                batch_size=batch_size, device=device, num_readers=num_readers, mpp=mpp, dtype=dtype, tissue=tissue,
            ))
    except RegionalMilError as exc:
        return SlideSummary(name, False, str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        line = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
        return SlideSummary(name, False, line, seconds=time.perf_counter() - t0)
    return _summary(result)


def embed_on_cluster(
    slide_paths: Sequence[PathLike],
    *,
    cache_dir: PathLike,
    scheduler: str = "local",
    workers: int = 2,
    processes: bool = True,
    tiling_params: TilingParams | None = None,
    encoder: str = "builtin-he",
    encoder_options: Mapping[str, object] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    mpp: float | None = None,
    torch_threads: int | None = 1,
    dtype: str = "auto",
    tissue: TissueSource | None = None,
) -> Generator[Progress, None, list[SlideSummary]]:
    """Embed slides on a dask cluster, one slide per task (a job generator).

    Parameters
    ----------
    slide_paths
        The slides.
    cache_dir
        Cache directory, the same path on every worker.
    scheduler, workers, processes
        As for :func:`~napari_regional_mil.embedding.cluster.run_on_cluster`.
    tiling_params, encoder, encoder_options
        Tiling, encoder name or path (loaded on each worker) and its options.
    batch_size, device, num_readers, mpp, dtype, tissue
        As for :func:`~napari_regional_mil.embedding.pipeline.embed_slide`.
    torch_threads
        ``torch.set_num_threads`` on the workers.

    Returns
    -------
    list of SlideSummary
        In the order of ``slide_paths``.
    """
    check_writable(cache_dir)
    paths = [str(Path(p).resolve()) for p in slide_paths]
    return (yield from run_on_cluster(
        embed_one, paths, scheduler=scheduler, workers=workers, processes=processes, describe=SlideSummary.describe,
        cache_dir=str(Path(cache_dir).resolve()), tiling_params=tiling_params, encoder=encoder,
        encoder_options=dict(encoder_options) if encoder_options else None, batch_size=batch_size, device=device,
        num_readers=num_readers, mpp=mpp, torch_threads=torch_threads, dtype=dtype, tissue=tissue,
    ))


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
            summary = _summary(result)
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


def checkpoint_tiling(checkpoint: Checkpoint, *, tissue_threshold: float | None = None) -> TilingParams | None:
    """The tiling a model was trained on, as :class:`TilingParams` (None when the checkpoint lacks it).

    The tissue threshold is not part of a model's tiling: ``tissue_threshold`` (e.g. what
    the user tiled the slide with), else the default.
    """
    tiling = checkpoint.tiling or {}
    if any(tiling.get(key) is None for key in ("patch_size", "target_mpp", "region_size")):
        return None
    threshold = TilingParams().tissue_threshold if tissue_threshold is None else float(tissue_threshold)
    return TilingParams(patch_size=int(tiling["patch_size"]), target_mpp=float(tiling["target_mpp"]),
                        region_size=int(tiling["region_size"]), tissue_threshold=threshold)


def embeddings_for(
    checkpoint: Checkpoint,
    slide_path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    tiling_params: TilingParams | None = None,
    mpp: float | None = None,
    tissue_mask: TissueMask | np.ndarray | None = None,
    device: str = "cpu",
    encoder_weights: PathLike | None = None,
    from_hub: bool = False,
) -> Generator[Progress, None, SlideEmbeddings]:
    """The slide's embeddings for a trained model: its cache, or embed the slide first (a job).

    The model's stored encoder record never starts a download or loads code by itself: the
    slide is embedded only with what needs nothing from outside (the built-in encoders) or
    what the user chose (``encoder_weights``, ``from_hub``); see
    :func:`~napari_regional_mil.encoders.encoder_for_stored`.

    Parameters
    ----------
    checkpoint
        The loaded model; its encoder and tiling pick the cache.
    slide_path
        The slide file.
    cache_dir
        Where the caches are (default: :func:`default_cache_dir` of the slide).
    tiling_params
        The tiling to look for and embed with (default: :func:`checkpoint_tiling`).
    mpp
        Level-0 um/px to embed with when the slide lacks it.
    tissue_mask
        The user's tissue mask to embed with, if any.
    device
        Where the encoder runs when the slide must be embedded.
    encoder_weights
        A file the user picked for the model's encoder: the weights of a published encoder
        (``pytorch_model.bin``), or the encoder file itself.
    from_hub
        The user allows downloading the model's published encoder's weights.

    Raises
    ------
    CacheError
        No matching cache, and the model does not say which encoder and tiling to embed with.
    EncoderError
        The slide must be embedded and the model's encoder needs weights or a file the
        user did not give (one line saying which), or the given ones are not the model's.
    SlideError, TilingError
        From embedding the slide.
    """
    folder = Path(cache_dir) if cache_dir else default_cache_dir(slide_path)
    params = tiling_params or checkpoint_tiling(checkpoint)
    record = checkpoint.encoder or {}
    encoder = record.get("name")
    name = Path(slide_path).name
    yield Progress("load", 0, 0, f"looking for the embeddings of {name} in {folder}")
    try:  # the model's own weights (hash), whatever the encoder's name was then
        key = record.get("weights_hash") or encoder
        found = find_slide_cache(folder, slide_path, encoder=key, tiling_params=params)
    except CacheError:  # none, or several (weights of the same name): the model's own is found or made
        if not encoder or params is None:
            raise CacheError(
                f"{name}: no matching embedding cache in {folder}, and the model does not say which "
                "encoder and tiling to embed with"
            ) from None
        from ..encoders import (
            encoder_for_stored,  # imports torch: only when a slide is embedded
        )

        model = checkpoint.path.name if checkpoint.path is not None else "the model"
        loaded = encoder_for_stored(record, weights=encoder_weights, from_hub=from_hub, device=device, what=model)
        result = yield from embed_slide(slide_path, cache_dir=folder, tiling_params=params, encoder=loaded,
                                        mpp=mpp, tissue_mask=tissue_mask, device=device)
        found = result.cache_path
    yield Progress("load", 0, 0, f"loading {Path(found).name}")
    return load_slide_embeddings(found)
