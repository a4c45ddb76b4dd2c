"""First-use costs napari would pay in the GUI thread when a slide layer appears, paid in a worker.

Adding the first layer of a session makes napari (and the libraries under it) do one-off
work in the GUI thread: dask's first ``compute`` imports ``distributed`` when it is
installed (about 0.5 s), napari's unit registry (pint) parses its definitions at the first
layer with units (0.4 to 0.6 s), and the first Labels layer imports pandas, scipy.ndimage
and scikit-image parts (about 0.4 s). :func:`warm_up` does all of it once (and imports the
slide reader), from the jobs that prepare layers (opening a slide, tiling it, predicting
it) before their layers are added, and from the Slide widget's own start-up worker: these
imports hold the GIL at times, so they are best paid before the user's first open.

The start-up imports (these, and torch, scikit-learn and matplotlib in the other widgets'
start-up workers) also more than double the objects Python's garbage collector tracks
(about 200,000 in a napari viewer, 500,000 after them). Its next full pass, which comes
once the long-lived objects have grown by a quarter since the last one, walks all of them
with the GIL held: 250 to 450 ms on 2 cores, a freeze wherever it lands (measured at the
first slide's open). :func:`collect_after_imports` makes that pass when a start-up worker
has delivered its result instead, so the next one is a quarter of the whole heap away. It
runs on the GUI thread: a pass may free Qt objects, which must be deleted in their own thread
(a pass in a worker crashed a script that ended while the Train widget's warm-up ran).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import threading

import numpy as np

__all__ = ["collect_after_imports", "warm_up"]

#: Libraries napari imports lazily when the first Labels layer is made (its features table,
#: label colours).
NAPARI_LAZY_IMPORTS = ("pandas", "scipy.ndimage", "skimage.color", "skimage.exposure", "skimage.util")
#: The slide reader the first slide's open imports.
READER_IMPORTS = ("tiffslide",)

_lock = threading.Lock()
_done = False
_collect_lock = threading.Lock()
_tracked_after_collection = 0
#: A start-up worker collects when the tracked objects grew by this fraction since the last time.
COLLECT_GROWTH = 0.2


def collect_after_imports() -> bool:
    """One full garbage collection now, if start-up imports grew the heap since the last one (GUI thread).

    Returns whether it collected: only when the objects the collector tracks grew by
    :data:`COLLECT_GROWTH` since the last call that collected, so several start-up workers
    ending one after the other pay for one pass, not one each.
    """
    global _tracked_after_collection
    with _collect_lock:
        tracked = len(gc.get_objects())  # about 30 ms for 500,000 objects, a tenth of a pass
        if tracked < (1 + COLLECT_GROWTH) * _tracked_after_collection:
            return False
        _tracked_after_collection = tracked - gc.collect()  # what the pass left
        return True


def warm_up() -> None:
    """Pay napari's first-layer costs here (call it in a worker thread; only the first call works)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        import dask.array as da  # lazy: startup (paid here, in a worker)

        np.asarray(da.zeros((1,), chunks=1))  # as napari reads a dask level: dask picks its scheduler
        try:
            from napari.utils.transforms._units import (  # lazy: startup (pint's registry, in a worker)
                get_units_from_name,  # private: best effort
            )
        except ImportError:
            pass
        else:
            get_units_from_name(("um", "um"))
        for name in (*NAPARI_LAZY_IMPORTS, *READER_IMPORTS):
            with contextlib.suppress(ImportError):  # napari does without it, or imports it itself
                importlib.import_module(name)
