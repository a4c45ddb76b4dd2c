"""A text progress bar that drives a job generator in the CLI."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator
from typing import TextIO, TypeVar

from ..jobs import Progress

__all__ = ["drive"]

T = TypeVar("T")


def _render(event: Progress, width: int = 30) -> str:
    if event.total:
        filled = int(round(width * event.fraction))
        bar = "#" * filled + "-" * (width - filled)
        head = f"{event.stage:>9} [{bar}] {event.done}/{event.total}"
    else:
        head = f"{event.stage:>9} {event.done}"
    if event.rate:
        head += f" {event.rate:.1f}/s"
    if event.message:
        head += f" {event.message}"
    return head


def drive(
    job: Generator[Progress, None, T],
    *,
    stream: TextIO | None = None,
    min_interval_s: float = 0.2,
    report: Callable[[Progress], str | None] | None = None,
) -> T:
    """Run ``job`` to completion, drawing a progress bar; return its result.

    On a terminal the bar redraws in place; otherwise (logs, pipes) one line is
    printed per stage change and at most every few seconds. Ctrl-C closes the
    generator, so the job's clean-up runs, then re-raises ``KeyboardInterrupt``.
    ``report`` is called with every event; a line it returns is printed to stdout
    at once (e.g. each slide's result as it comes), the bar being cleared first.
    """
    stream = stream if stream is not None else sys.stderr
    tty = stream.isatty()
    last_draw = 0.0
    last_stage = None
    interval = min_interval_s if tty else 5.0
    line_len = 0
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                if tty and line_len:
                    stream.write("\n")
                stream.flush()
                return stop.value
            line = report(event) if report is not None else None
            if line is not None:
                if tty and line_len:
                    stream.write("\r" + " " * line_len + "\r")
                    line_len, last_stage = 0, None  # redraw the bar at once
                stream.flush()
                print(line, flush=True)
            now = time.monotonic()
            final = event.total and event.done >= event.total
            if event.stage != last_stage or final or now - last_draw >= interval:
                text = _render(event)
                if tty:
                    pad = max(0, line_len - len(text))
                    stream.write("\r" + text + " " * pad)
                    line_len = len(text)
                else:
                    stream.write(text + "\n")
                stream.flush()
                last_draw, last_stage = now, event.stage
    except BaseException:
        job.close()
        if tty and line_len:
            stream.write("\n")
        raise
