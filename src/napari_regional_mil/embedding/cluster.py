"""Running one task per slide on a dask.distributed cluster (local or remote).

:func:`run_on_cluster` submits ``task(item, **kwargs)`` for every item and yields
progress as the tasks finish; results come back in the order of the items. What a
task does is up to the caller: :func:`napari_regional_mil.embedding.workflow.embed_slides`
sends :func:`~napari_regional_mil.embedding.workflow.embed_one`, which writes one slide's
cache on the worker (the cache directory must be reachable from the workers under the
same path) and returns a small summary.

Connecting to a scheduler exchanges pickled Python objects with it: connect only to
schedulers you run (see ``docs/security.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TypeVar

from ..jobs import Progress

__all__ = ["run_on_cluster"]

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
    from distributed import (  # optional: the [cluster] extra
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
