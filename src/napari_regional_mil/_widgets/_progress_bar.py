"""A job's progress shown inside its dock widget.

napari's own progress bars live in its activity dock: creating one builds its widgets, shows
the status-bar spinner (an animated GIF, repainting the window on every frame) and calls
``QApplication.processEvents()``, which repaints the whole window (through OpenGL, as the
canvas is an OpenGL widget) inside the job's start: a 50 to 100 ms stall of the GUI thread
at every job's start on a software-rendered display. A :class:`JobProgressBar` is made once
with its widget and stays in place: a job only changes its value and text, at most ten
times a second (see :mod:`._job_handle`), and the widget's own Cancel button cancels it.

``QProgressBar.setValue`` repaints the bar at once (``repaint``, not ``update``): on a window
with napari's OpenGL canvas that composes and flushes the whole window inside the job's
event, and the text beside it is flushed again in the next paint pass. :meth:`_set_value`
turns the bar's updates off around ``setValue``, so the bar is painted with its text in one
pass after the event (``benchmarks/gui_responsiveness.py``, training phase).
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QSizePolicy, QWidget

__all__ = ["JobProgressBar"]

_STEPS = 1000  # the bar's resolution


class JobProgressBar(QWidget):
    """A progress bar and one line of text for the jobs of one widget (always shown, never resized)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, _STEPS)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(8)
        self.text = QLabel("")
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.text.setMinimumWidth(10)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.text, 2)

    def start(self, description: str) -> None:
        """A job starts: an empty bar and its description."""
        self._set_value(0)
        self._set_text(f"{description}...")

    def show_progress(self, done: int, total: int, text: str) -> None:
        """``done`` of ``total`` (``total`` 0: not known, the bar stays empty) and a line of text."""
        value = int(_STEPS * min(max(done / total, 0.0), 1.0)) if total > 0 else 0
        self._set_value(value)
        self._set_text(text)

    def finish(self, description: str, status: str) -> None:
        """The job ended with ``status`` (``"done"``, ``"failed"`` or ``"cancelled"``)."""
        self._set_value(_STEPS if status == "done" else 0)
        self._set_text(f"{description}: {status}")

    def _set_value(self, value: int) -> None:
        """Set the bar's value; it is painted in the next paint pass, not now (see the module)."""
        if value == self.bar.value():
            return
        self.bar.setUpdatesEnabled(False)  # setValue's own repaint() does nothing
        self.bar.setValue(value)
        self.bar.setUpdatesEnabled(True)  # schedules update(): painted with the text, after the event

    def _set_text(self, text: str) -> None:
        if text != self.text.text():
            self.text.setText(text)
            self.text.setToolTip(text)
