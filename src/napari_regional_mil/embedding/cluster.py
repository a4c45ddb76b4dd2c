"""Running one task per slide on a dask.distributed cluster (local or remote).

:func:`run_on_cluster` submits ``task(item, **kwargs)`` for every item and yields
progress as the tasks finish; results come back in the order of the items.
:func:`embed_on_cluster` (what :func:`~napari_regional_mil.embedding.workflow.embed_slides`
runs with ``scheduler=``) sends :func:`embed_one`, which writes one slide's cache on the
worker (the cache directory must be reachable from the workers under the same path) and
returns a small :class:`~napari_regional_mil.embedding.summaries.SlideSummary`; each worker
loads the encoder once (:func:`worker_encoder`).

Connecting to a scheduler exchanges pickled Python objects with it: connect only to
schedulers you run (see ``docs/security.md``).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import dask

from ..errors import RegionalMilError
from ..jobs import Progress, run_job
from ..tiling import TilingParams
from ..tissue_source import TissueSource
from .pipeline import embed_slide, load_encoder_for
from .store import check_writable
from .summaries import SlideSummary, summarise

if TYPE_CHECKING:
    from ..encoders import FrozenEncoder

__all__ = ["embed_on_cluster", "embed_one", "run_on_cluster", "worker_encoder"]

PathLike = str | os.PathLike[str]

T = TypeVar("T")


def run_on_cluster(
    task: Callable[..., T],
    items: Sequence[str],
    *,
    scheduler: str = "local",
    workers: int = 2,
    processes: bool = True,
    describe: Callable[[T], str] = str,
    **kwargs: object,
) -> Generator[Progress, None, list[T]]:
    """Run ``task(item, **kwargs)`` for every item on a dask cluster (a job generator).

    Parameters
    ----------
    task
        A module-level function (workers import it by name), returning a small result.
    items
        One task each (slide paths).
    scheduler
        ``"local"`` (a ``LocalCluster`` of ``workers`` single-threaded workers) or the
        address of a running scheduler (``"tcp://host:8786"``).
    workers
        Workers of the local cluster.
    processes
        Local workers as processes (True) or threads in this process (False).
    describe
        One short line about a result, shown as each task finishes.
    **kwargs
        Passed to every task.

    Yields
    ------
    Progress
        ``stage="embed-slides"``, tasks done / total.

    Returns
    -------
    list
        The results, in the order of ``items``.
    """
    from distributed import (  # lazy: optional (the [cluster] extra)
        Client,
        LocalCluster,
        as_completed,
    )

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None, silence_logs=40
        )
        client = Client(cluster)
    else:
        client = Client(scheduler, timeout="20s")
    futures = []
    try:
        futures = [
            client.submit(task, item, key=f"task-{i}-{Path(item).stem}", pure=False, **kwargs)
            for i, item in enumerate(items)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[T | None] = [None] * len(items)
        where = client.scheduler.address if client.scheduler is not None else scheduler
        yield Progress("embed-slides", 0, len(items), message=f"{len(items)} slides on {where}")
        for done, future in enumerate(as_completed(futures), start=1):
            result: T = future.result()
            results[index[future.key]] = result
            yield Progress("embed-slides", done, len(items), message=describe(result))
        return [r for r in results if r is not None]
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()


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
    import torch  # lazy: torch (the embedding package imports without torch; this runs on a worker)

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
    return summarise(result)


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
