"""The CLI's progress adapter: a job generator drawn as a tqdm bar."""

from __future__ import annotations

import io
import re

import pytest

from napari_regional_mil.cli._progress import drive
from napari_regional_mil.jobs import Progress


def _job(log: list[str], *, fail_at: int | None = None):
    try:
        for i in range(3):
            yield Progress("load", i + 1, 3, f"loaded s{i}")
        for i in range(10):
            if fail_at == i:
                raise KeyboardInterrupt
            yield Progress("train", i + 1, 10, f"epoch {i + 1}")
        yield Progress("predict", 2, 0, "no total")
        return "result"
    finally:
        log.append("cleaned up")


def test_returns_the_result_with_one_bar_per_stage_and_an_eta():
    stream, log = io.StringIO(), []
    assert drive(_job(log), stream=stream) == "result"
    assert log == ["cleaned up"]
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()  # not a terminal: plain lines for logs
    assert [line.split(":")[0] for line in lines] == ["load", "load", "train", "train", "predict", "predict"]
    # the last line of a stage: 100 %, done/total, elapsed<remaining (the ETA), the job's message
    assert re.match(r"train: 100%\|#+\| 10/10 \[\d\d:\d\d<\d\d:\d\d, .*epoch 10\]", lines[3]), lines[3]
    assert re.match(r"predict: 2it \[", lines[5]), lines[5]


def test_an_interrupt_closes_the_job_and_propagates():
    stream, log = io.StringIO(), []
    job = _job(log, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        drive(job, stream=stream)
    assert log == ["cleaned up"]
    assert "train" in stream.getvalue()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_redraws_in_place():
    stream = _Tty()
    assert drive(_job([]), stream=stream) == "result"
    text = stream.getvalue()
    assert "\r" in text and "10/10" in text
