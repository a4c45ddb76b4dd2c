"""A job's progress bar is painted after the job's event, in one pass with its text, never inside it."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QEvent, QObject

from napari_regional_mil._widgets._progress_bar import JobProgressBar

pytestmark = pytest.mark.gui


class _Paints(QObject):
    """Counts the paint events a widget receives."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False


@pytest.fixture
def shown_bar(qtbot):
    bar = JobProgressBar()
    qtbot.addWidget(bar)
    bar.resize(300, 20)
    bar.show()
    qtbot.waitExposed(bar)
    paints = _Paints()
    bar.bar.installEventFilter(paints)
    qtbot.wait(20)
    return bar, paints


@pytest.mark.parametrize("call", ["start", "show_progress", "finish"])
def test_the_bar_is_not_painted_inside_the_call(shown_bar, qtbot, call):
    bar, paints = shown_bar
    bar.show_progress(300, 1000, "before")  # a value the calls below change
    qtbot.waitUntil(lambda: paints.count > 0, timeout=2000)
    paints.count = 0
    {"start": lambda: bar.start("Job"), "show_progress": lambda: bar.show_progress(700, 1000, "step 7"),
     "finish": lambda: bar.finish("Job", "done")}[call]()
    # QProgressBar.setValue repaints at once; on napari's window that flushes it through OpenGL
    assert paints.count == 0
    expected = {"start": 0, "show_progress": 700, "finish": 1000}[call]
    assert bar.bar.value() == expected
    qtbot.waitUntil(lambda: paints.count > 0, timeout=2000)  # painted in the next pass
    assert bar.bar.updatesEnabled()


def test_an_unchanged_value_schedules_no_paint(shown_bar, qtbot):
    bar, paints = shown_bar
    bar.show_progress(500, 1000, "same")
    qtbot.waitUntil(lambda: paints.count > 0, timeout=2000)
    qtbot.wait(50)
    paints.count = 0
    bar.show_progress(500, 1000, "same")
    qtbot.wait(100)
    assert paints.count == 0
