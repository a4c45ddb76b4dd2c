"""Many slides on a dask.distributed cluster: one slide per task, a summary back.

Each task runs :func:`~napari_regional_mil.embedding.pipeline.embed_slide` on a worker,
which writes that slide's cache itself (the cache directory must be reachable from the
workers under the same path); only a small :class:`SlideSummary` travels back. A slide
that fails does not stop the others.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jobs import Progress
from ..tiling import TilingParams

__all__ = ["SlideSummary", "embed_one", "embed_on_cluster"]


@dataclass(frozen=True)
class SlideSummary:
    """Outcome of embedding one slide.

    ``ok`` False means ``message`` says why (one line); otherwise ``message`` is the
    summary line.
    """

    slide: str
    ok: bool
    message: str
    cache_path: str = ""
    n_patches: int = 0
    n_regions: int = 0
    computed: bool = False
    seconds: float = 0.0


def embed_one(slide_path: str | Path, *, torch_threads: int | None = None, **embed_kwargs: Any) -> SlideSummary:
    """Embed one slide to completion and summarise; errors become a failed summary."""
    from ..embedding.pipeline import embed_slide
    from ..errors import RegionalMilError
    from ..jobs import run_job

    t0 = time.perf_counter()
    name = Path(slide_path).stem
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    import dask

    try:
        # dask arrays used inside (e.g. tissue detection on the display pyramid) must be
        # computed here, not shipped to the cluster this task runs on
        with dask.config.set(scheduler="threads"):
            result = run_job(embed_slide(slide_path, **embed_kwargs))
    except RegionalMilError as exc:
        return SlideSummary(name, False, str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the other slides; keep its trace
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return SlideSummary(name, False, f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})",
                            seconds=time.perf_counter() - t0)
    return SlideSummary(
        name, True, summary_line(result), cache_path=str(result.cache_path), n_patches=result.n_patches,
        n_regions=result.n_regions, computed=result.computed, seconds=result.seconds,
    )


def summary_line(result: Any) -> str:
    """One line about an :class:`~napari_regional_mil.embedding.pipeline.EmbedResult`."""
    how = f"{result.rate:.1f} patches/s" + (f", resumed at {result.resumed_from}" if result.resumed_from else "")
    how = how if result.computed else "already cached"
    return (
        f"{result.slide_name}: {result.n_patches} patches, {result.n_regions} regions, "
        f"{result.encoder} ({result.embedding_dim}-d) -> {result.cache_path} [{how}, {result.seconds:.1f} s]"
    )


def embed_on_cluster(
    slide_paths: Sequence[str | Path],
    *,
    cache_dir: str | Path,
    scheduler: str = "local",
    workers: int = 2,
    processes: bool = True,
    tiling_params: TilingParams | None = None,
    encoder: str = "builtin-he",
    encoder_options: dict[str, Any] | None = None,
    torch_threads: int | None = 1,
    **embed_kwargs: Any,
) -> Generator[Progress, None, list[SlideSummary]]:
    """Embed slides on a dask cluster, one slide per task (a job generator).

    Parameters
    ----------
    slide_paths
        The slides.
    cache_dir
        Cache directory, the same path on every worker.
    scheduler
        ``"local"`` (a ``LocalCluster`` of ``workers`` single-threaded workers) or the
        address of a running scheduler (``"tcp://host:8786"``).
    workers
        Workers of the local cluster.
    processes
        Local workers as processes (True) or threads in this process (False).
    encoder, encoder_options
        Encoder name or path (loaded on each worker) and its options.
    torch_threads
        ``torch.set_num_threads`` on the workers.
    **embed_kwargs
        Passed to :func:`~napari_regional_mil.embedding.pipeline.embed_slide`
        (``batch_size``, ``num_readers``, ``mpp``, ``device``...).

    Yields
    ------
    Progress
        ``stage="embed-slides"``, slides done / total.

    Returns
    -------
    list of SlideSummary
        In the order of ``slide_paths``.
    """
    from distributed import Client, LocalCluster, as_completed

    from ..embedding.cache import check_writable

    check_writable(cache_dir)
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None, silence_logs=40
        )
        client = Client(cluster)
    else:
        client = Client(scheduler, timeout="20s")
    paths = [str(Path(p).resolve()) for p in slide_paths]
    kwargs = {
        "cache_dir": str(Path(cache_dir).resolve()), "tiling_params": tiling_params, "encoder": encoder,
        "encoder_options": encoder_options, "torch_threads": torch_threads, **embed_kwargs,
    }
    futures = []
    try:
        futures = [client.submit(embed_one, p, key=f"embed-{i}-{Path(p).stem}", pure=False, **kwargs) for i, p in enumerate(paths)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[SlideSummary | None] = [None] * len(paths)
        yield Progress("embed-slides", 0, len(paths), message=f"{len(paths)} slides on {client.scheduler.address}")
        for done, future in enumerate(as_completed(futures), start=1):
            summary = future.result()
            results[index[future.key]] = summary
            yield Progress("embed-slides", done, len(paths), message=summary.slide + (" ok" if summary.ok else " failed"))
        return [r for r in results if r is not None]
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()
