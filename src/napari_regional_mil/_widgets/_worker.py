"""The adapter from a long job to a napari worker thread, progress bar and Cancel.

Every dock widget runs its long steps through :func:`start_job`; this module is the only
place that knows about threads. A job is a *factory*: a callable that is run in the worker
thread and returns either

* a generator that yields :class:`~napari_regional_mil.jobs.Progress` events and returns
  its result (the project's long jobs, see :mod:`napari_regional_mil.jobs`), or
* a plain result (a short step such as tissue detection).

What the adapter does for every job:

* runs it in a napari ``thread_worker`` (the viewer never freezes);
* shows a napari progress bar (activity dock) driven by the yielded ``Progress`` events,
  with napari's own Cancel button wired to :meth:`JobHandle.cancel`;
* forwards every yielded event to ``on_progress`` in the main thread (live plots, labels);
* Cancel closes the job's generator *in the worker thread* at its next yield, so the job's
  ``finally`` blocks leave files consistent; the result of a cancelled job is dropped;
* errors become one-line notifications: a :class:`~napari_regional_mil.errors.RegionalMilError`
  shows its message, any other exception shows ``Type: message`` and is logged with its
  traceback; no traceback dialog;
* refuses a second job of the same ``kind`` while one runs, with a warning notification
  (or, with ``on_busy="replace"``, cancels the running one for quick previews);
* registers with the viewer window so that closing napari cancels the job and waits for
  its thread (no orphan thread, no traceback, no callback into a dead viewer).

Examples
--------
>>> handle = start_job(lambda: embed_slide(path, ...), kind="embed",   # doctest: +SKIP
...                    description="Embedding slide.svs", on_result=show_pca,
...                    on_progress=plot, on_finish=lambda status: reset_buttons(),
...                    viewer=viewer, owner=self)
>>> if handle is not None: cancel_button.clicked.connect(handle.cancel)  # doctest: +SKIP
"""
from __future__ import annotations

import atexit
import contextlib
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from napari.utils import notifications
from napari.utils.task_status import Status
from qtpy.QtCore import QEvent, QObject, QThreadPool

from napari_regional_mil._widgets._job_handle import (
    CLOSE_WAIT_S,
    JobHandle,
    _JobWorker,
    _Progress,
    notify_error,
)

# the job handle's old import path (these names lived here before _job_handle split off)
from napari_regional_mil._widgets._job_handle import WORKER_NICE as WORKER_NICE
from napari_regional_mil._widgets._job_handle import _be_nice as _be_nice
from napari_regional_mil._widgets._job_handle import _drive as _drive
from napari_regional_mil._widgets._job_handle import _Outcome as _Outcome
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:

    from napari.components import ViewerModel

    from napari_regional_mil._widgets._progress_bar import JobProgressBar

__all__ = ["JobHandle", "cancel_all", "notify_error", "running_job", "start_job"]

logger = logging.getLogger(__name__)

#: The running job of each kind (a job removes itself when its result is delivered).
_RUNNING: dict[str, JobHandle] = {}


def running_job(kind: str) -> JobHandle | None:
    """The job of ``kind`` that is running or whose result is not delivered yet, or ``None``.

    A job counts as running until its result callbacks have run on the GUI thread (its
    thread may have returned a moment earlier), so "no job running" means its layers and
    files are in place.
    """
    handle = _RUNNING.get(kind)
    if handle is None or handle.running:
        return handle
    # the thread returned: pending until its result is delivered, unless nobody waits for it
    return None if handle.cancel_requested or handle._detached else handle


def cancel_all(*, wait: bool = True, timeout: float = CLOSE_WAIT_S) -> None:
    """Cancel every running job (and wait for their threads when ``wait``)."""
    for handle in list(_RUNNING.values()):
        handle.cancel()
    if wait:
        for handle in list(_RUNNING.values()):
            handle.wait(timeout)


def _quit_at_exit() -> None:
    """At interpreter exit: cancel every job and let the worker threads end before Qt's objects go.

    A script that docks a widget and ends without ``napari.run()`` (or closing the viewer)
    would otherwise leave a worker that emits into its deleted signals object when it
    returns, and PyQt aborts the process on that error.
    """
    if not _RUNNING:
        return
    cancel_all(wait=True)
    with contextlib.suppress(RuntimeError):  # Qt already gone: nothing left to wait for
        QThreadPool.globalInstance().waitForDone(int(CLOSE_WAIT_S * 1000))


atexit.register(_quit_at_exit)


def start_job(
    job: Callable[[], Generator[Progress, None, Any] | Any],
    *,
    kind: str,
    description: str,
    on_result: Callable[[Any], Any] | None = None,
    on_progress: Callable[[Progress], Any] | None = None,
    on_error: Callable[[BaseException], Any] | None = None,
    on_finish: Callable[[str], Any] | None = None,
    viewer: ViewerModel | None = None,
    owner: QObject | None = None,
    show_progress: bool = True,
    progress_bar: JobProgressBar | None = None,
    on_busy: str = "refuse",
) -> JobHandle | None:
    """Run a job in a worker thread with a progress bar and Cancel.

    Parameters
    ----------
    job
        Called with no argument *in the worker thread*; returns a job generator
        (yields :class:`Progress`, returns the result) or a plain result.
    kind
        Job kind; a second job of the same kind while one runs is refused with a
        warning notification (``None`` is returned).
    description
        Text of the progress bar and of notifications (e.g. ``"Embedding CMU-1"``).
    on_result
        Called in the main thread with the job's result when it finished normally.
    on_progress
        Called in the main thread with every yielded event.
    on_error
        Called in the main thread with the exception after the error notification.
    on_finish
        Always called last in the main thread with the final status (``"done"``,
        ``"failed"`` or ``"cancelled"``); use it to re-enable buttons.
    viewer
        The napari viewer: closing its window cancels the job and waits for it.
    owner
        A QWidget: when it is destroyed the job is cancelled and its callbacks dropped.
    show_progress
        Whether to show a napari progress bar (in its activity dock) when no
        ``progress_bar`` is given.
    progress_bar
        A :class:`._progress_bar.JobProgressBar` in the calling widget to show the job's
        progress in, instead of napari's activity dock (whose bar costs a 50-100 ms stall at
        each job's start); the widget's own Cancel button cancels the job.
    on_busy
        When a job of the same ``kind`` runs: ``"refuse"`` this one with a warning
        notification, or ``"replace"``: cancel that one silently (its callbacks are
        dropped) and start this one; for quick previews such as thumbnails.

    Returns
    -------
    JobHandle or None
        The running job, or ``None`` when refused.
    """
    if on_busy not in ("refuse", "replace"):
        raise ValueError(f"on_busy must be 'refuse' or 'replace', got {on_busy!r}")
    other = running_job(kind)
    if other is not None and on_busy == "replace":
        _detach(other)
    elif other is not None:
        notifications.show_warning(
            f"{description}: refused, '{other.description}' is still running; "
            "wait for it or cancel it first"
        )
        return None
    handle = JobHandle(kind, description)
    handle._unregister = lambda: _RUNNING.pop(kind) if _RUNNING.get(kind) is handle else None
    worker = _JobWorker(job, handle._cancel, handle._done)
    handle.worker = worker
    worker.yielded.connect(lambda event: handle._in_order(lambda: handle._on_yield(event, on_progress)))
    worker.returned.connect(
        lambda outcome: handle._in_order(lambda: handle._on_returned(outcome, on_result, on_error, on_finish))
    )
    if progress_bar is not None:
        handle._bar = progress_bar
        progress_bar.start(description)
    elif show_progress:
        handle._pbar = _Progress(handle, desc=description, total=0)
    _RUNNING[kind] = handle
    _bind_viewer(handle, viewer)
    if owner is not None:
        with contextlib.suppress(AttributeError, RuntimeError):
            owner.destroyed.connect(lambda *_: _detach(handle))
    worker.start()
    return handle


def _detach(handle: JobHandle) -> None:
    handle._detached = True
    handle.cancel()
    handle._close_pbar()


def _bind_viewer(handle: JobHandle, viewer: ViewerModel | None) -> None:
    """Make closing ``viewer``'s window cancel ``handle`` and wait for its thread."""
    window = getattr(viewer, "window", None)
    if window is None:
        return
    register = getattr(window, "_register_task_status", None)
    if register is not None:  # napari >= 0.5: asked on close, cancelled by closeEvent
        try:
            handle._task_id = register("napari-regional-mil", Status.BUSY, handle.description, handle._shutdown)
            handle._window = window
            return
        except Exception:
            logger.debug("task status registration failed", exc_info=True)
    qt_window = getattr(window, "_qt_window", None)
    if qt_window is not None and not hasattr(qt_window, "_regional_mil_close_filter"):
        qt_window._regional_mil_close_filter = _CloseFilter(qt_window)
        qt_window.installEventFilter(qt_window._regional_mil_close_filter)


class _CloseFilter(QObject):
    """Fallback when napari lacks task registration: a window Close shuts down all jobs."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            for handle in list(_RUNNING.values()):
                handle._shutdown()
        return False
