"""The job -> thread_worker adapter: results, progress, errors, cancel, refusal, viewer close."""

from __future__ import annotations

import threading
import time

import pytest
from napari.utils.progress import progress

from napari_regional_mil._widgets import _worker
from napari_regional_mil._widgets._worker import running_job, start_job
from napari_regional_mil.errors import SlideError
from napari_regional_mil.jobs import Progress

pytestmark = pytest.mark.gui


class Recorder:
    """Collects the callbacks of one job."""

    def __init__(self) -> None:
        self.results: list = []
        self.events: list = []
        self.errors: list = []
        self.finished: list[str] = []

    def kwargs(self) -> dict:
        return {
            "on_result": self.results.append,
            "on_progress": self.events.append,
            "on_error": self.errors.append,
            "on_finish": self.finished.append,
        }


def _counting_job(n: int, *, gate: threading.Event | None = None, log: list | None = None, delay: float = 0.0):
    """A job of ``n`` steps; optionally waits for ``gate`` after the first step."""
    try:
        for i in range(n):
            yield Progress("count", i, n, message=f"step {i}")
            if gate is not None and i == 0:
                gate.wait(10)
            time.sleep(delay)
        return n * 10
    finally:
        if log is not None:
            log.append(("finally", threading.current_thread() is threading.main_thread()))


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=10)


def test_result_progress_and_progress_bar(qtbot, notes):
    rec = Recorder()
    handle = start_job(lambda: _counting_job(4), kind="t-result", description="Counting", **rec.kwargs())
    assert handle is not None and handle._pbar in progress._all_instances
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert rec.results == [40]
    assert [e.done for e in rec.events] == [0, 1, 2, 3]
    assert all(isinstance(e, Progress) for e in rec.events)
    assert rec.finished == ["done"] and rec.errors == []
    assert handle.status == "done" and not handle.running
    assert handle._pbar is None  # closed and removed from napari's activity list
    assert running_job("t-result") is None
    assert not [n for n in notes if n[0] == "error"]


def test_progress_in_the_widget_bar_instead_of_napari(qtbot, notes, monkeypatch):
    """With a widget's JobProgressBar no napari progress bar is made (its creation stalls the
    GUI thread); the bar shows a new stage at once, further steps at most every BAR_INTERVAL_S,
    and the job's end."""
    from napari_regional_mil._widgets import _job_handle
    from napari_regional_mil._widgets._progress_bar import JobProgressBar

    ticks = iter(range(100))  # each event is half an interval after the previous one
    monkeypatch.setattr(_job_handle, "_clock", lambda: next(ticks) * _job_handle.BAR_INTERVAL_S / 2)
    bar = JobProgressBar()
    qtbot.addWidget(bar)
    shown: list[tuple[int, str]] = []
    original = bar.show_progress
    bar.show_progress = lambda done, total, text: (shown.append((done, text)), original(done, total, text))
    rec = Recorder()
    before = len(progress._all_instances)
    handle = start_job(lambda: _counting_job(5), kind="t-bar", description="Counting", progress_bar=bar,
                       **rec.kwargs())
    assert handle._pbar is None and len(progress._all_instances) == before
    assert bar.text.text() == "Counting..."
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert [e.done for e in rec.events] == [0, 1, 2, 3, 4]
    assert shown == [(0, "Counting: step 0"), (2, "Counting: step 2"), (4, "Counting: step 4")]
    assert bar.text.text() == "Counting: done" and bar.bar.value() == bar.bar.maximum()
    assert rec.results == [50]


def test_plain_function_job(qtbot):
    rec = Recorder()
    start_job(lambda: {"answer": 42}, kind="t-plain", description="Plain", **rec.kwargs())
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert rec.results == [{"answer": 42}] and rec.finished == ["done"]


def test_project_error_is_one_line_notification(qtbot, notes):
    def job():
        yield Progress("open", 0, 1)
        raise SlideError("/data/x.svs: not a slide (truncated TIFF)\nsecond line")

    rec = Recorder()
    start_job(job, kind="t-err", description="Opening", **rec.kwargs())
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert rec.finished == ["failed"] and rec.results == []
    assert isinstance(rec.errors[0], SlideError)
    errors = [text for sev, text in notes if sev == "error"]
    assert errors == ["Opening: /data/x.svs: not a slide (truncated TIFF)"]


def test_unexpected_error_shows_type_and_is_logged(qtbot, notes, caplog):
    def job():
        raise RuntimeError("CUDA out of memory")  # superqt alone would drop a RuntimeError

    rec = Recorder()
    start_job(job, kind="t-err2", description="Embedding", **rec.kwargs())
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert rec.finished == ["failed"]
    assert ("error", "Embedding: RuntimeError: CUDA out of memory") in notes
    assert any("CUDA out of memory" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_cancel_closes_generator_in_worker_thread(qtbot, notes):
    gate, log, rec = threading.Event(), [], Recorder()
    handle = start_job(
        lambda: _counting_job(1000, gate=gate, log=log), kind="t-cancel", description="Long", **rec.kwargs()
    )
    qtbot.waitUntil(lambda: bool(rec.events), timeout=10000)
    handle.cancel()
    gate.set()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert rec.finished == ["cancelled"] and rec.results == []
    assert log == [("finally", False)]  # the job's finally ran, in the worker thread
    assert len(rec.events) < 1000
    assert ("info", "Long: cancelled") in notes


@pytest.mark.parametrize("how", ["pbar", "worker.quit"])
def test_other_cancel_paths_close_generator_in_worker_thread(qtbot, how):
    """napari's activity-dock Cancel (progress.cancel) and napari's own worker.quit()."""
    gate, log, rec = threading.Event(), [], Recorder()
    handle = start_job(lambda: _counting_job(1000, gate=gate, log=log), kind="t-pbar", description="P", **rec.kwargs())
    qtbot.waitUntil(lambda: bool(rec.events), timeout=10000)
    if how == "pbar":
        handle._pbar.cancel()
    else:
        handle.worker.quit()
    gate.set()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=10000)
    assert rec.finished == ["cancelled"] and log == [("finally", False)]


def test_second_job_of_same_kind_is_refused(qtbot, notes):
    gate, rec = threading.Event(), Recorder()
    first = start_job(lambda: _counting_job(3, gate=gate), kind="t-kind", description="First", **rec.kwargs())
    second = start_job(lambda: _counting_job(1), kind="t-kind", description="Second")
    assert first is not None and second is None
    assert any(sev == "warning" and "Second" in t and "First" in t and "running" in t for sev, t in notes)
    other = Recorder()
    assert start_job(lambda: _counting_job(1), kind="t-other", description="Other", **other.kwargs()) is not None
    gate.set()
    qtbot.waitUntil(lambda: bool(rec.finished and other.finished), timeout=10000)
    assert rec.results == [30] and other.results == [10]
    # once finished, the kind is free again
    again = Recorder()
    assert start_job(lambda: _counting_job(1), kind="t-kind", description="Again", **again.kwargs()) is not None
    qtbot.waitUntil(lambda: bool(again.finished), timeout=10000)


def test_replace_cancels_the_running_job_silently(qtbot, notes):
    gate, log, first = threading.Event(), [], Recorder()
    old = start_job(
        lambda: _counting_job(1000, gate=gate, log=log), kind="t-replace", description="Old", **first.kwargs()
    )
    qtbot.waitUntil(lambda: bool(first.events), timeout=10000)
    second = Recorder()
    new = start_job(lambda: _counting_job(2), kind="t-replace", description="New", on_busy="replace", **second.kwargs())
    assert new is not None and running_job("t-replace") is new
    gate.set()
    qtbot.waitUntil(lambda: bool(second.finished) and not old.running, timeout=10000)
    assert second.results == [20]
    assert first.results == [] and first.finished == []  # the replaced job's callbacks are dropped
    assert log == [("finally", False)]
    assert not [n for n in notes if n[0] == "warning"]


@pytest.mark.parametrize("hook", ["task status", "close filter"])
def test_closing_viewer_cancels_and_waits(make_napari_viewer, qtbot, notes, monkeypatch, hook):
    viewer = make_napari_viewer()
    if hook == "close filter":  # a napari without task registration: the fallback event filter
        monkeypatch.delattr(type(viewer.window), "_register_task_status")
    viewer.add_points([[0, 0]])  # a viewer with layers takes the full close path
    log, rec = [], Recorder()
    handle = start_job(
        lambda: _counting_job(10_000, log=log, delay=0.01),
        kind="t-close",
        description="Running at close",
        viewer=viewer,
        **rec.kwargs(),
    )
    qtbot.waitUntil(lambda: bool(rec.events), timeout=10000)
    viewer.close()
    # by the time close() returns the job's thread is done and its finally has run
    assert not handle.running
    assert log == [("finally", False)]
    qtbot.wait(50)
    assert rec.results == [] and rec.errors == []
    assert not [n for n in notes if n[0] == "error"]
    assert running_job("t-close") is None


def test_owner_destroyed_cancels(qtbot):
    from qtpy.QtWidgets import QWidget

    owner = QWidget()
    log, rec = [], Recorder()
    handle = start_job(
        lambda: _counting_job(10_000, log=log, delay=0.01),
        kind="t-owner",
        description="Owned",
        owner=owner,
        **rec.kwargs(),
    )
    qtbot.waitUntil(lambda: bool(rec.events), timeout=10000)
    owner.deleteLater()
    qtbot.waitUntil(lambda: not handle.running, timeout=10000)
    assert log == [("finally", False)] and rec.results == []


_SCRIPT_ENDS = """
import napari

viewer = napari.Viewer(show=False)
viewer.window.add_plugin_dock_widget("napari-regional-mil", "Train")  # starts the optimiser warm-up worker
print("docked", flush=True)
"""


def test_a_script_that_ends_while_a_worker_runs_exits_cleanly():
    """No ``napari.run()``, no close: the workers are waited for at exit, not left to emit into deleted objects.

    Before, PyQt aborted the process (``wrapped C/C++ object of type GeneratorWorkerSignals
    has been deleted``) when the Train widget's warm-up returned after the interpreter began to exit.
    """
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SCRIPT_ENDS], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.stdout.strip() == "docked"
    assert done.returncode == 0, done.stderr[-2000:]
    assert "has been deleted" not in done.stderr
