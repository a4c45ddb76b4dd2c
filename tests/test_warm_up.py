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


def test_the_start_up_workers_collect_after_their_imports(monkeypatch):
    from napari_regional_mil._widgets import _devices, _train_job

    calls = []
    monkeypatch.setattr(_devices, "collect_after_imports", lambda: calls.append("devices"))
    monkeypatch.setattr(_train_job, "collect_after_imports", lambda: calls.append("training"))
    assert _devices.find_devices()[0] == "cpu"
    figure = _train_job.warm_up_training()
    assert figure is not None and calls == ["devices", "training"]
