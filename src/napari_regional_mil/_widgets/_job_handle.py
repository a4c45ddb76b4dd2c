"""A running job of the worker adapter: its thread driver, progress bar and handle.

:func:`._worker.start_job` makes a :class:`JobHandle` per job; this module holds what runs
*in* the worker thread (:func:`_drive`: the job generator, cancelled at its next yield) and
what the main thread calls on it (cancel, wait, the ordered ``yielded``/``returned``
callbacks, error notifications). The registry of running jobs and the viewer close hook
are in :mod:`._worker`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils import notifications
from napari.utils.progress import cancelable_progress
from napari.utils.task_status import Status

from napari_regional_mil.errors import JobCancelled, RegionalMilError
from napari_regional_mil.jobs import Progress

__all__ = ["CLOSE_WAIT_S", "WORKER_NICE", "JobHandle", "notify_error"]

logger = logging.getLogger("napari_regional_mil._widgets._worker")

#: Seconds between two updates of a job's progress bar in its widget (each one repaints).
BAR_INTERVAL_S = 0.1
_clock = time.monotonic

#: Seconds a closing viewer waits for a cancelled job to reach its next yield.
CLOSE_WAIT_S = 60.0


@dataclass
class _Outcome:
    status: str  # "done" | "failed" | "cancelled"
    result: Any = None
    error: BaseException | None = None


def notify_error(exc: BaseException, *, context: str = "") -> None:
    """Show an exception as a one-line napari error notification (never a traceback dialog).

    Parameters
    ----------
    exc
        The exception. A :class:`RegionalMilError` shows its own message; anything else
        shows ``Type: message`` and is logged with its traceback.
    context
        Optional prefix, e.g. ``"Tiling failed"``.
    """
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, RegionalMilError):
        text = first or type(exc).__name__
    else:
        logger.error("unexpected error%s", f" ({context})" if context else "", exc_info=exc)
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    notifications.show_error(f"{context}: {text}" if context else text)


#: Nice value of worker threads (Linux): the GUI thread wins the CPU when both are runnable.
WORKER_NICE = 10


def _be_nice() -> None:
    """Lower this worker thread's scheduling priority (Linux; threads it starts inherit it).

    On a busy 2-core machine the GUI thread otherwise waits behind the job's threads
    (encoder, patch readers, torch) for hundreds of ms; niced, it gets the CPU first.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < WORKER_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, WORKER_NICE)
    except (OSError, AttributeError):  # not permitted, or no per-thread priority
        pass


def _drive(factory: Callable[[], Any], cancel: threading.Event, done: threading.Event):
    """Run ``factory`` in the worker thread; yield its events; return an :class:`_Outcome`.

    Every exception is caught here, so the worker never sees one (superqt would turn a
    ``RuntimeError`` into a warning and drop it).
    """
    job = None
    _be_nice()
    try:
        try:
            job = factory()
            if not isinstance(job, Generator):
                return _Outcome("cancelled") if cancel.is_set() else _Outcome("done", job)
            while True:
                if cancel.is_set():
                    job.close()
                    return _Outcome("cancelled")
                try:
                    event = next(job)
                except StopIteration as stop:
                    return _Outcome("cancelled") if cancel.is_set() else _Outcome("done", stop.value)
                yield event
        except JobCancelled:
            return _Outcome("cancelled")
        except Exception as exc:
            return _Outcome("cancelled") if cancel.is_set() else _Outcome("failed", error=exc)
        finally:
            if isinstance(job, Generator):
                try:
                    job.close()
                except Exception:
                    logger.exception("closing a job failed")
    finally:
        done.set()


class _JobWorker(GeneratorWorker):
    """A generator worker whose ``quit()`` cancels the job the adapter's way.

    superqt's own ``quit()`` stops driving the generator without closing it, so the job's
    ``finally`` would run late, in whatever thread collects it. Here ``quit()`` (called
    by anyone, napari included) sets the job's cancel flag instead: the generator is closed
    in the worker thread at its next yield.
    """

    def __init__(self, factory: Callable[[], Any], cancel: threading.Event, done: threading.Event) -> None:
        super().__init__(_drive, factory, cancel, done)
        self._job_cancel = cancel

    def quit(self) -> None:
        self._job_cancel.set()


class _Progress(cancelable_progress):
    """A napari progress bar whose Cancel button cancels a :class:`JobHandle`."""

    def __init__(self, handle: JobHandle, **kwargs: Any) -> None:
        self._handle = handle
        super().__init__(**kwargs)

    def cancel(self) -> None:  # napari's activity-dock Cancel button
        super().cancel()
        self._handle.cancel()


class JobHandle:
    """A running job: cancel it, wait for it, ask whether it still runs.

    Made by :func:`start_job`; all methods are called from the main (GUI) thread.

    Attributes
    ----------
    kind
        The job kind (``"tissue"``, ``"tiling"``, ``"embed"``, ``"train"``, ...).
    description
        Human-readable text of the progress bar and notifications.
    status
        ``"running"``, then ``"done"``, ``"failed"`` or ``"cancelled"``.
    worker
        The underlying napari/superqt ``GeneratorWorker``.
    """

    def __init__(self, kind: str, description: str) -> None:
        self.kind = kind
        self.description = description
        self.status = "running"
        self.worker: Any = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._detached = False  # True once the viewer/owner is gone: no more callbacks
        self._pbar: _Progress | None = None
        self._bar: Any = None  # a JobProgressBar in the owner's widget (instead of napari's bar)
        self._bar_shown_at = 0.0
        self._last_stage: str | None = None
        self._task_id: Any = None
        self._window: Any = None
        self._pending: list[Callable[[], Any]] = []
        self._dispatching = False
        self._unregister: Callable[[], Any] | None = None  # set by the registry (start_job)

    @property
    def running(self) -> bool:
        """Whether the job's thread has not finished yet."""
        return not self._done.is_set()

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next yield; its generator is closed in its thread."""
        if self.running and not self._cancel.is_set():
            self._cancel.set()
            if self._pbar is not None:
                self._pbar.set_description(f"{self.description} (cancelling...)")
            if self._bar is not None:
                self._bar.show_progress(0, 0, f"{self.description} (cancelling...)")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job's thread finished; return whether it did within ``timeout`` s."""
        return self._done.wait(timeout)

    # -- internal -------------------------------------------------------------------------
    def _close_pbar(self) -> None:
        if self._pbar is not None:
            pbar, self._pbar = self._pbar, None
            try:
                pbar.close()
            except Exception:
                logger.debug("closing a progress bar failed", exc_info=True)

    def _update_task(self, status_name: str) -> None:
        if self._task_id is None or self._window is None:
            return
        try:
            self._window._update_task_status(self._task_id, Status[status_name], self.description)
        except Exception:
            logger.debug("task status update failed", exc_info=True)

    def _shutdown(self) -> bool:
        """Cancel, wait for the thread, and drop all callbacks (viewer closing)."""
        self._detached = True
        self.cancel()
        finished = self.wait(CLOSE_WAIT_S)
        if not finished:
            logger.warning("job %r did not stop within %.0f s", self.description, CLOSE_WAIT_S)
        self._close_pbar()
        return finished

    def _in_order(self, call: Callable[[], Any]) -> None:
        """Run ``call`` now, or after the one in progress when a callback re-entered the event loop.

        napari's progress bar calls ``QApplication.processEvents()`` on every update, so the
        next ``yielded`` (or the ``returned``) signal may be delivered *inside* the handler
        of the previous one; queuing keeps events and the result in the order they came.
        """
        self._pending.append(call)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                try:
                    self._pending.pop(0)()
                except Exception:
                    logger.exception("a job callback failed")
        finally:
            self._dispatching = False

    def _on_yield(self, event: Any, on_progress: Callable[[Progress], Any] | None) -> None:
        if self._detached:
            return
        if isinstance(event, Progress) and self._bar is not None and not self._cancel.is_set():
            now = _clock()
            if event.stage != self._last_stage or now - self._bar_shown_at >= BAR_INTERVAL_S:
                self._bar.show_progress(event.done, event.total, f"{self.description}: {event.message or event.stage}")
                self._bar_shown_at = now
                self._last_stage = event.stage
        if isinstance(event, Progress) and self._pbar is not None and not self._cancel.is_set():
            pbar = self._pbar
            if pbar.total != event.total:
                pbar.total = event.total
            if event.stage != self._last_stage or event.message:
                text = f"{self.description}: {event.message or event.stage}"
                pbar.set_description(text)
                self._last_stage = event.stage
            pbar.n = event.done
            pbar.update(0)
        if on_progress is not None:
            try:
                on_progress(event)
            except Exception:
                logger.exception("progress callback of %r failed", self.description)

    def _on_returned(
        self,
        outcome: _Outcome,
        on_result: Callable[[Any], Any] | None,
        on_error: Callable[[BaseException], Any] | None,
        on_finish: Callable[[str], Any] | None,
    ) -> None:
        if self._unregister is not None:
            self._unregister()
        self._close_pbar()
        self.status = outcome.status
        self._update_task({"done": "COMPLETED", "failed": "FAILED"}.get(outcome.status, "CANCELLED"))
        if self._detached:
            return
        if self._bar is not None:
            self._bar.finish(self.description, outcome.status)
        try:
            if outcome.status == "done" and on_result is not None:
                on_result(outcome.result)
            elif outcome.status == "failed":
                notify_error(outcome.error, context=self.description)
                if on_error is not None:
                    on_error(outcome.error)
            elif outcome.status == "cancelled":
                notifications.show_info(f"{self.description}: cancelled")
        except Exception as exc:
            self.status = "failed"
            notify_error(exc, context=self.description)
        finally:
            if on_finish is not None:
                try:
                    on_finish(self.status)
                except Exception as exc:
                    notify_error(exc, context=self.description)
