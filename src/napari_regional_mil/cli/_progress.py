"""The CLI's progress adapter: a job generator drawn as a tqdm bar (rate and ETA).

One bar per stage (``embed``, ``train``, ``crossval``...): the stage's ``done``/``total``
drive it, the job's message is its postfix, tqdm measures the rate and the remaining
time. On a terminal the bar redraws in place; otherwise (a log file, a pipe, a batch
job) one line is printed per stage, when a stage ends, and at most every
:data:`LOG_INTERVAL_S` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from typing import TextIO, TypeVar

from tqdm import tqdm

from ..jobs import Progress

__all__ = ["LOG_INTERVAL_S", "drive"]

T = TypeVar("T")

#: Seconds between two progress lines when the output is not a terminal.
LOG_INTERVAL_S = 5.0


class _Lines:
    """A stream for tqdm that writes each redraw as one line (for logs and pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _Bars:
    """One tqdm bar at a time, replaced when the stage changes."""

    def __init__(self, stream: TextIO, *, tty: bool, min_interval_s: float) -> None:
        self.file: TextIO | _Lines = stream if tty else _Lines(stream)
        self.tty = tty
        self.interval = min_interval_s if tty else LOG_INTERVAL_S
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def show(self, event: Progress) -> None:
        total = event.total or None
        if self.bar is None or event.stage != self.stage or (total is not None and self.bar.total != total):
            self.close()
            self.stage = event.stage
            self.bar = tqdm(
                total=total,
                desc=event.stage,
                file=self.file,
                mininterval=self.interval,
                maxinterval=max(self.interval, 10.0),
                dynamic_ncols=self.tty,
                ncols=None if self.tty else 100,
                ascii=not self.tty,
                leave=True,
            )
        bar = self.bar
        bar.set_postfix_str(event.message, refresh=False)
        step = event.done - bar.n
        if step > 0:
            bar.update(step)
        elif step < 0:  # a stage that restarted its count: redraw at the new position
            bar.n = event.done
            bar.refresh()

    def print_line(self, line: str) -> None:
        """Print ``line`` to standard output, clearing the bar first on a terminal."""
        if self.bar is not None and self.tty:
            self.bar.clear()
        print(line, flush=True)
        if self.bar is not None and self.tty:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def drive(
    job: Generator[Progress, None, T],
    *,
    stream: TextIO | None = None,
    min_interval_s: float = 0.1,
    report: Callable[[Progress], str | None] | None = None,
) -> T:
    """Run ``job`` to completion, drawing a tqdm progress bar; return its result.

    Parameters
    ----------
    job
        A job generator (yields :class:`~napari_regional_mil.jobs.Progress`).
    stream
        Where the bar goes (default: standard error).
    min_interval_s
        Least time between two redraws on a terminal.
    report
        Called with every event; a line it returns is printed to standard output at
        once (e.g. each slide's result as it comes), the bar being cleared first.

    Notes
    -----
    Ctrl-C (or any error) closes the generator, so the job's clean-up runs, then
    re-raises.
    """
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    bars = _Bars(stream, tty=bool(isatty and isatty()), min_interval_s=min_interval_s)
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            line = report(event) if report is not None else None
            if line is not None:
                bars.print_line(line)
            bars.show(event)
    except BaseException:
        job.close()
        raise
    finally:
        bars.close()
        stream.flush()
