"""The Train widget's plot: drawn with Agg in a worker thread, shown by the GUI thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_regional_mil._widgets import _train_plot, _worker
from napari_regional_mil._widgets._train_plot import TrainingPlot

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=20)


def _epochs(plot: TrainingPlot, n: int) -> None:
    for epoch in range(1, n + 1):
        plot.add({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch,
                  "train_auc": 0.5 + 0.04 * epoch, "val_auc": 0.45 + 0.04 * epoch})


def _has_colour(rgba: np.ndarray, hex_colour: str) -> bool:
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(rgba[..., :3].astype(int) - want).max(-1) <= 12).sum() > 20)


def test_the_plot_is_drawn_in_a_worker_and_shows_both_curves(qtbot, monkeypatch):
    threads: list[threading.Thread] = []
    original = _train_plot.render

    def recording(plot, state):
        threads.append(threading.current_thread())
        return original(plot, state)

    monkeypatch.setattr(_train_plot, "render", recording)
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.resize(360, 240)
    plot.show()
    qtbot.waitExposed(plot)
    _epochs(plot, 6)
    plot.flush()
    qtbot.waitUntil(lambda: plot.n_draws >= 1 and not plot.drawing, timeout=30000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    image = plot.image
    ratio = plot.devicePixelRatioF()
    assert (image.width(), image.height()) == (round(plot.width() * ratio), round(plot.height() * ratio))
    rgba = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8).reshape(
        image.height(), image.bytesPerLine() // 4, 4)[:, :image.width()]
    assert _has_colour(rgba, _train_plot._COLOURS["train"]) and _has_colour(rgba, _train_plot._COLOURS["val"])
    grab = plot.grab().toImage()  # the widget paints the drawing
    assert grab.pixelColor(grab.width() // 2, grab.height() // 2).name() != "#000000"


def test_requests_during_a_drawing_wait_for_it_and_run_once(qtbot, monkeypatch):
    release = threading.Event()
    calls: list[int] = []
    original = _train_plot.render

    def slow(plot, state):
        calls.append(len(state.series["train_loss"]))
        release.wait(20)
        return original(plot, state)

    monkeypatch.setattr(_train_plot, "render", slow)
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    _epochs(plot, 2)
    plot.flush()
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=10000)
    _epochs(plot, 5)  # three more points while the first drawing runs
    plot.flush()
    plot.flush()
    assert plot.drawing and len(calls) == 1
    release.set()
    qtbot.waitUntil(lambda: not plot.drawing, timeout=30000)
    assert calls == [2, 5]  # the second drawing shows every point
    assert plot.n_draws == 2


def test_the_warm_up_figure_is_drawn_on(qtbot):
    figure = _train_plot.build_figure()
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.set_figure(figure)
    plot.set_figure(_train_plot.build_figure())  # only the first is used
    _epochs(plot, 3)
    plot.flush()
    qtbot.waitUntil(lambda: plot.n_draws == 1 and not plot.drawing, timeout=30000)
    xs, _ = figure.lines["train_loss"].get_data()
    assert list(xs) == [1.0, 2.0, 3.0]
