"""A worker process that opens and reads (fuzzed) slides, for ``test_fuzz.py`` (issue 7).

A hang or a crash of the slide code is reported as an outcome, not suffered by the test
process: the worker is killed and restarted.
"""

from __future__ import annotations

import contextlib


def open_and_read(path: str) -> tuple[str, str, str]:
    """Open ``path``, read two regions, a thumbnail, detect tissue; ``("ok"|"error"|"leak", type name, message)``.

    ``"error"``: one of the project's own errors (what a bad file must give); ``"leak"``:
    any other exception (a bug), with its traceback as the message.
    """
    import traceback

    from napari_regional_mil.errors import RegionalMilError
    from napari_regional_mil.slide import open_slide

    try:
        with open_slide(path) as slide:
            w, h = slide.dimensions
            slide.read_region((0, 0), 0, (min(w, 48), min(h, 40)))
            last = slide.info.level_count - 1
            lw, lh = slide.info.level_dimensions[last]
            slide.read_region((max(0, w - 40), max(0, h - 30)), last, (min(lw, 24), min(lh, 20)))
            slide.thumbnail(64)
            if slide.info.mpp is not None:
                from napari_regional_mil.tissue import detect_tissue

                detect_tissue(slide)
        return ("ok", "", "")
    except RegionalMilError as exc:
        return ("error", type(exc).__name__, str(exc))
    except BaseException as exc:
        return ("leak", type(exc).__name__, "".join(traceback.format_exception(exc))[-3000:])


def fuzz_worker(conn, memory_limit_bytes: int = 4 << 30) -> None:
    """Child process loop: receive a path, send :func:`open_and_read`'s answer; ``None`` stops it.

    The address space is capped, so a file claiming a gigantic image gives a ``MemoryError``
    (a leak: a bug) instead of taking the machine down.
    """
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    while True:
        path = conn.recv()
        if path is None:
            return
        conn.send(open_and_read(path))


class SlideFuzzer:
    """A persistent worker process that opens slides; a hang or a crash is reported, not suffered."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._start()

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=fuzz_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def check(self, path: str) -> tuple[str, str, str]:
        """``open_and_read(path)`` in the worker; ``("hang", ...)`` or ``("crash", ...)`` when it does."""
        try:
            self.conn.send(path)
            if self.conn.poll(self.timeout_s):
                return self.conn.recv()
            outcome = ("hang", "", f"no answer within {self.timeout_s:.0f} s")
        except (EOFError, BrokenPipeError, ConnectionResetError):
            outcome = ("crash", "", f"the worker died (exit code {self.proc.exitcode})")
        self.proc.kill()
        self.proc.join(10)
        if outcome[0] == "crash" or not self.proc.is_alive():
            outcome = (outcome[0], "", f"{outcome[2]}; exit code {self.proc.exitcode}")
        self._start()
        return outcome

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(10)
        except (OSError, EOFError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
