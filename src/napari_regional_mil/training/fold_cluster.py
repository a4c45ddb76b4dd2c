"""Cross-validation folds as tasks on a dask.distributed cluster (``crossval --scheduler``).

Each fold is one task (:func:`fold_task`) that runs :func:`~.fold_run.run_fold` on a
worker: the worker opens the slides' caches itself (every worker must reach the cache
folder under the same path: a shared file system), holds or streams them as
:mod:`.memory` decides there, trains, tests, and sends back the fold's result (and
model when asked). Slides already in memory (feature bags) travel with the task.

Same seed, same folds, same results as the serial run: the folds are drawn on the
client, each fold's training is seeded by ``TrainConfig.seed`` as in the serial run, and
the worker uses the client's number of torch threads (``TrainConfig.threads`` when set)
so the arithmetic is the same. Workers must be processes (one task at a time each):
torch's random state is per process.

Before any fold starts, every worker checks that it can read every cache; one that
cannot is named with the first path it failed on (:class:`~napari_regional_mil.errors.CacheError`).
Progress: each fold's epochs are reported by its worker (``log_event`` on the topic of
the run) and yielded here as ``"crossval"`` events carrying ``fold``.

Connecting to a scheduler exchanges pickled Python objects with it: connect only to
schedulers you run (see ``docs/security.md``).
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..clinical import ClinicalSpec
from ..embedding.store import LazyEmbeddings
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError
from ..jobs import Progress, run_job
from ..model.config import ModelConfig
from .datasets import LabelledSlide
from .fold_run import FoldRun, run_fold
from .train import TrainConfig
from .tuning import TuneGrid

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

__all__ = ["SlideRef", "check_workers_read", "fold_task", "run_folds_on_cluster"]

#: Seconds between two progress reports of a fold's training (its epoch ends are always reported).
REPORT_INTERVAL_S = 2.0


@dataclass(frozen=True)
class SlideRef:
    """A labelled slide as a fold task carries it: where its embeddings are on disk, or the embeddings in memory."""

    slide: LabelledSlide
    lazy: LazyEmbeddings | None

    @classmethod
    def of(cls, slide: LabelledSlide) -> SlideRef:
        """The reference a fold task carries for ``slide`` (its cache path when streamed)."""
        if isinstance(slide.embeddings, LazyEmbeddings):
            return cls(replace(slide, embeddings=_placeholder(slide)), slide.embeddings)
        return cls(slide, None)

    @property
    def cache(self) -> str | None:
        """The file the slide is read from (None: in memory)."""
        return None if self.lazy is None else str(self.lazy.path)

    def open(self, worker: str) -> LabelledSlide:
        """The slide on this worker (its cache or feature file opened here)."""
        if self.lazy is None:
            return self.slide
        try:
            return replace(self.slide, embeddings=self.lazy.reopen())
        except CacheError as exc:
            raise CacheError(f"worker {worker}: cannot read the embedding cache of slide {self.slide.name!r}: {exc}; "
                             "every worker needs the cache folder under the same path") from None


def _placeholder(slide: LabelledSlide) -> SlideEmbeddings:
    return SlideEmbeddings(slide.name, np.zeros((0, 0), np.float32))


def _worker_address() -> str:
    from distributed import get_worker  # lazy: optional (dask.distributed: the [cluster] extra)

    try:
        return str(get_worker().address)
    except ValueError:
        return "this process"


def _unreadable(slides: Sequence[LazyEmbeddings]) -> tuple[str, str] | None:
    """Run on a worker: the first cache it cannot open, with why (None when it reads them all)."""
    for lazy in slides:
        try:
            lazy.reopen()
        except CacheError as exc:
            return str(lazy.path), str(exc)
        except OSError as exc:
            return str(lazy.path), f"{lazy.path}: {exc.strerror or exc}"
    return None


def check_workers_read(client: Client, slides: Sequence[LazyEmbeddings]) -> None:
    """Raise when a worker of ``client`` cannot read one of the caches (or feature files) of ``slides``.

    Raises
    ------
    CacheError
        Naming the worker and the cache it cannot read.
    """
    if not slides:
        return
    answers = client.run(_unreadable, list(slides))
    for worker, problem in sorted(answers.items()):
        if problem is not None:
            path, why = problem
            raise CacheError(
                f"worker {worker} cannot read the embedding cache {path} ({why}); every worker needs the cache "
                "folder under the same path (a shared file system)"
            )


def fold_task(
    refs: Sequence[SlideRef],
    test_idx: Sequence[int],
    k: int,
    *,
    class_names: Sequence[str],
    model_config: ModelConfig | None,
    config: TrainConfig,
    tune: TuneGrid | None,
    clinical: ClinicalSpec | None,
    threads: int,
    topic: str,
) -> FoldRun:
    """Fold ``k`` (0-based) on a worker: open the caches, train on the other slides, test on ``test_idx``."""
    from distributed import get_worker  # lazy: optional (dask.distributed: the [cluster] extra)

    worker = _worker_address()
    slides = [ref.open(worker) for ref in refs]
    test_set = {int(i) for i in test_idx}
    train = [s for i, s in enumerate(slides) if i not in test_set]
    test = [slides[int(i)] for i in test_idx]
    torch.set_num_threads(int(threads))
    log = get_worker().log_event
    last = 0.0

    def report(event: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if event.metrics or now - last >= REPORT_INTERVAL_S:
            last = now
            metrics = {key: v for key, v in event.metrics.items() if isinstance(v, (int, float, str))}
            log(topic, {"fold": k + 1, "done": event.done, "total": event.total, "message": event.message,
                        "metrics": metrics})

    return run_job(
        run_fold(train, test, fold=k + 1, class_names=class_names, model_config=model_config, config=config,
                 tune=tune, clinical=clinical),
        report,
    )


def _connect(scheduler: str, workers: int) -> tuple[Client, LocalCluster | None]:
    from distributed import Client, LocalCluster  # lazy: optional (dask.distributed: the [cluster] extra)

    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        return Client(cluster), cluster
    return Client(scheduler, timeout="20s"), None


def run_folds_on_cluster(
    slides: Sequence[LabelledSlide],
    folds: Sequence[np.ndarray],
    *,
    class_names: Sequence[str],
    model_config: ModelConfig | None,
    config: TrainConfig,
    tune: TuneGrid | None = None,
    clinical: ClinicalSpec | None = None,
    scheduler: str = "local",
    workers: int = 2,
    total: int | None = None,
) -> Generator[Progress, None, list[FoldRun]]:
    """Train every fold as a task on a dask cluster (a job); the runs in fold order.

    Parameters
    ----------
    slides
        Every slide (caches opened on the workers; slides in memory are sent along).
    folds
        The test indices of every fold.
    class_names, model_config, config, tune, clinical
        As for :func:`~.crossval.cross_validate` (``clinical`` knowing every slide's values).
    scheduler
        ``"local"``: a ``LocalCluster`` of ``workers`` single-threaded worker processes;
        otherwise the address of a running scheduler (``tcp://host:8786``).
    workers
        Workers of the local cluster.
    total
        The ``total`` of the progress events (default: 1000 per fold).

    Yields
    ------
    Progress
        ``stage="crossval"``: every fold's training events (``metrics`` with ``fold``) as
        its worker reports them, and one event per finished fold with ``fold_auc``.

    Raises
    ------
    CacheError
        A worker that cannot read a cache (named, with the cache).
    RegionalMilError
        A fold's error (e.g. a cache deleted meanwhile), as raised on its worker.
    """
    refs = [SlideRef.of(s) for s in slides]
    threads = int(config.threads) if config.threads is not None else torch.get_num_threads()
    topic = f"napari-regional-mil-crossval-{uuid.uuid4().hex}"
    n = len(folds)
    total = 1000 * n if total is None else int(total)
    client, cluster = _connect(scheduler, workers)
    inbox: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
    futures: list[Future] = []
    try:
        address = client.scheduler.address if client.scheduler is not None else scheduler
        yield Progress("crossval", 0, total, f"{n} folds on {address}: checking that every worker reads the caches")
        check_workers_read(client, [r.lazy for r in refs if r.lazy is not None])
        client.subscribe_topic(topic, inbox.append)
        scattered = client.scatter(refs, broadcast=True)
        futures = [
            client.submit(
                fold_task, scattered, [int(i) for i in folds[k]], k, key=f"crossval-fold-{k + 1}-{topic[-8:]}",
                pure=False, class_names=list(class_names), model_config=model_config, config=config, tune=tune,
                clinical=clinical, threads=threads, topic=topic,
            )
            for k in range(n)
        ]
        fold_of = {f.key: k for k, f in enumerate(futures)}
        progress = [0.0] * n
        runs: list[FoldRun | None] = [None] * n
        pending = set(futures)
        yield Progress("crossval", 0, total, f"{n} folds on {address}")
        while pending:
            done = {f for f in pending if f.done()}
            pending -= done
            if not done:
                time.sleep(0.2)
            events = [inbox.popleft() for _ in range(len(inbox))]  # appended by the client's event loop
            for _, record in events:
                k = int(record["fold"]) - 1
                progress[k] = min(1.0, int(record.get("done") or 0) / max(1, int(record.get("total") or 1)))
                yield Progress("crossval", int(1000 * sum(progress)), total, f"fold {k + 1}/{n}: {record['message']}",
                               metrics=dict(record.get("metrics") or {}))
            for future in done:
                k = fold_of[future.key]
                run: FoldRun = future.result()  # a fold's error is raised here as its worker raised it
                runs[k] = run
                progress[k] = 1.0
                yield Progress("crossval", int(1000 * sum(progress)), total,
                               f"fold {k + 1}/{n} done: AUC {run.result.auc:.3f}",
                               metrics={"fold": k + 1, "fold_auc": run.result.auc,
                                        "fold_bacc": run.result.balanced_accuracy})
        return [r for r in runs if r is not None]
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()
