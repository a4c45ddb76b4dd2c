"""The start-up workers' garbage collection: one full pass after the imports, not one per worker."""

from __future__ import annotations

import gc
import weakref

from napari_regional_mil._widgets import _warm_up


def test_a_full_collection_runs_only_when_the_heap_grew_since_the_last_one(monkeypatch):
    monkeypatch.setattr(_warm_up, "_tracked_after_collection", 0)
    passes = []
    monkeypatch.setattr(gc, "collect", lambda *args: passes.append(args) or 0)

    assert _warm_up.collect_after_imports() is True  # the first start-up worker to end collects
    assert _warm_up.collect_after_imports() is False  # the next, with nothing imported since, does not
    assert len(passes) == 1
    grown = [[] for _ in range(int(len(gc.get_objects()) * (_warm_up.COLLECT_GROWTH + 0.05)) + 1)]
    assert _warm_up.collect_after_imports() is True  # a fifth more tracked objects (lists): collect again
    assert len(passes) == 2
    del grown


def test_the_collection_frees_what_the_imports_left_behind(monkeypatch):
    monkeypatch.setattr(_warm_up, "_tracked_after_collection", 0)

    class Node:
        pass

    gc.disable()  # no automatic pass in between
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector frees
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None
        assert _warm_up.collect_after_imports() is True
        assert gone() is None
    finally:
        gc.enable()


def test_the_start_up_jobs_collect_on_the_gui_thread_when_their_results_arrive(make_napari_viewer, qtbot, monkeypatch):
    """A pass may free Qt objects: it runs where their results are delivered, never in the worker."""
    import threading

    from napari_regional_mil._widgets import _devices, slide_widget, train_widget
    from napari_regional_mil._widgets.slide_widget import SlideWidget
    from napari_regional_mil._widgets.train_widget import TrainWidget

    calls = []

    def record():
        calls.append(threading.current_thread() is threading.main_thread())
        return True

    for module in (_devices, slide_widget, train_widget):
        monkeypatch.setattr(module, "collect_after_imports", record)
    viewer = make_napari_viewer()
    slide, train = SlideWidget(viewer), TrainWidget(viewer)
    box = _devices.DeviceBox(viewer, kind="test-devices")
    qtbot.waitUntil(lambda: len(calls) >= 2 + ("torch" not in __import__("sys").modules), timeout=120_000)
    assert all(calls)
    del slide, train, box
