"""The napari half of the demo: the held-out slide with its prediction and heatmaps.

:func:`show_demo` docks the Cohort, Train and Predict widgets (the cohort loaded, the
training curves of the run drawn), opens the held-out positive slide through the Cohort
widget (tissue, patch and region grids), hands the trained model to the Predict widget and
predicts through it, so the probabilities and both attention heatmaps are shown exactly
as a user would get them. :func:`save_screenshot` writes a real render of the window.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_regional_mil._widgets._worker import running_job

if TYPE_CHECKING:
    from collections.abc import Callable

    from qtpy.QtWidgets import QDockWidget, QWidget

__all__ = ["raise_dock", "save_screenshot", "show_demo", "wait_for_jobs"]


def wait_for_jobs(kinds: tuple[str, ...], *, timeout: float = 300.0) -> bool:
    """Process Qt events until no job of ``kinds`` runs; return whether they all ended in time."""
    deadline = time.monotonic() + timeout
    app = QApplication.instance()
    while any(running_job(kind) is not None for kind in kinds):
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.01)
    for _ in range(5):  # let the result callbacks run
        app.processEvents()
    return True


def _wait_until(condition: Callable[[], object], *, timeout: float = 60.0) -> bool:
    """Process Qt events until ``condition()`` holds; return whether it did in time."""
    deadline = time.monotonic() + timeout
    app = QApplication.instance()
    while not condition():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.01)
    return True


def _dock(viewer: napari.Viewer, widget: QWidget, name: str) -> Any:
    return viewer.window.add_dock_widget(widget, name=name, area="right")


def show_demo(result: Any, *, tiling: Any, settings: Any = None, viewer: napari.Viewer | None = None) -> dict[str, Any]:
    """Open the demo's outcome in napari.

    Parameters
    ----------
    result
        The :class:`~napari_regional_mil.demo.DemoResult`.
    tiling
        The :class:`~napari_regional_mil.tiling.TilingParams` the demo embedded with.
    settings
        The :class:`~napari_regional_mil.demo.DemoSettings` it ran with (shown in the Train widget).
    viewer
        A viewer to use (default: a new one, shown).

    Returns
    -------
    dict
        ``viewer``, ``cohort``, ``train``, ``predict`` (the widgets) and ``slide`` (the layer).
    """
    from napari_regional_mil._widgets.cohort_widget import CohortWidget  # lazy: torch (these widgets import torch)
    from napari_regional_mil._widgets.predict_widget import PredictWidget  # lazy: torch (see above)
    from napari_regional_mil._widgets.train_widget import TrainWidget  # lazy: torch (see above)
    from napari_regional_mil.model.checkpoint import load_checkpoint  # lazy: torch (model.checkpoint imports torch)

    if viewer is None:
        viewer = napari.Viewer(title="napari-regional-mil demo")
    cohort = CohortWidget(viewer)
    train = TrainWidget(viewer)
    predict = PredictWidget(viewer)
    docks = [_dock(viewer, cohort, "Cohort"), _dock(viewer, train, "Train"), _dock(viewer, predict, "Predict")]
    qt_window = getattr(viewer.window, "_qt_window", None)
    if qt_window is not None:
        qt_window.tabifyDockWidget(docks[0], docks[1])
        qt_window.tabifyDockWidget(docks[1], docks[2])
        docks[2].raise_()

    cohort.embed_box.set_cache_dir(result.cache_dir)
    cohort.embed_box.tiling.set_params(tiling)
    cohort.import_csv(result.cohort_csv)
    train.out_path.setText(str(result.model_path))
    if settings is not None:
        _show_settings(train, settings)
    for metrics in result.history:
        train.plot.add(metrics)
    train.plot.flush()
    _wait_until(lambda: not train.plot.drawing, timeout=30)  # drawn in a worker
    train.status.setText(f"Trained {result.model_path.name} ({len(result.history)} epochs) by the demo.")

    row = cohort.table.index_of(result.slide_name)
    cohort.view.selectRow(row)
    cohort.open_row(row)
    predict.cache_dir.setText(str(result.cache_dir))
    predict.set_model(load_checkpoint(result.model_path))
    wait_for_jobs(("cohort-open", "tiling"))
    slide = cohort.state.slide_layer
    for what in ("patch grid", "tissue"):  # keep the picture readable: the region grid stays
        name = f"{what} ({slide.name})"
        if name in viewer.layers:
            viewer.layers[name].visible = False
    predict.predict()
    wait_for_jobs(("predict",))
    _wait_until(lambda: not predict.layers_pending)
    if predict.maps is not None:
        maps = predict.maps
        best = int(np.argmax(maps.prediction.region_attention)) if maps.has_region_attention else 0
        predict.select_at(maps.region_centre_world(best))
        wait_for_jobs(("predict-thumbnails",))
    viewer.reset_view()
    viewer.layers.selection.active = slide
    raise_dock(docks[2])
    return {"viewer": viewer, "cohort": cohort, "train": train, "predict": predict, "slide": slide,
            "docks": docks}


def _show_settings(train: Any, settings: Any) -> None:
    """Put the demo's hyper-parameters in the Train widget (what the shown model was trained with)."""
    m, o = train.model_fields, train.optim_fields
    m.model_type.setCurrentText("regional")
    m.hidden_dim.setValue(settings.hidden_dim)
    m.attention_dim.setValue(settings.attention_dim)
    m.min_patches.setValue(settings.min_patches)
    m.max_patches.setValue(settings.max_patches)
    o.epochs.setValue(settings.epochs)
    o.seed.setValue(settings.seed)
    o.val_fraction.setValue(0.0)


def raise_dock(dock: QDockWidget) -> None:
    """Bring a tabified dock widget to the front (after pending events, which may raise others)."""
    for _ in range(3):
        QApplication.instance().processEvents()
    dock.show()
    dock.raise_()


def _close_toasts(viewer: napari.Viewer) -> None:
    """Dismiss notification pop-ups so they do not cover a screenshot."""
    qt_window = getattr(viewer.window, "_qt_window", None)
    if qt_window is None:
        return
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification  # lazy: optional (a private napari module)
    except ImportError:  # private napari module
        return
    for toast in qt_window.findChildren(NapariQtNotification):
        toast.close()


def save_screenshot(viewer: napari.Viewer, path: str | Path, *, size: tuple[int, int] = (1600, 1000),
                    reset: bool = True) -> Path:
    """Show the window at ``size``, render it and write a PNG of the whole window.

    ``reset``: fit the view to the layers first (``False`` keeps the camera).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    window = viewer.window
    window.show()
    qt_window = getattr(window, "_qt_window", None)
    if qt_window is not None:
        qt_window.resize(*size)
    for _ in range(20):
        QApplication.instance().processEvents()
        time.sleep(0.02)
    if reset:
        viewer.reset_view()
    _close_toasts(viewer)
    for _ in range(5):
        QApplication.instance().processEvents()
        time.sleep(0.02)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def run_event_loop() -> None:
    """Hand control to napari's event loop until the user closes the window."""
    napari.run()
