"""Long jobs as generators.

Every long job (embedding a slide, training, cross-validation, pretraining, ...) is a
generator that yields :class:`Progress` events and *returns* its result
(``StopIteration.value``). Stopping a job is closing its generator
(``gen.close()``; napari's ``thread_worker.quit()`` does this at the next yield): the
job's ``finally`` blocks leave files consistent.

The GUI adapts a job to a ``thread_worker`` with a napari progress bar and Cancel
(:mod:`napari_regional_mil._widgets._worker`); the CLI to a text progress bar
(:mod:`napari_regional_mil.cli._progress`); tests call :func:`run_job`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Job", "Progress", "run_job"]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress event of a long job.

    Parameters
    ----------
    stage
        What is being done, in the method's words (``"embed"``, ``"train"``, ...).
    done, total
        Units of work done so far and in all (patches, epochs, slides, ...);
        ``total`` is 0 when unknown.
    message
        A short human-readable status line.
    rate
        Units per second, when meaningful (e.g. patches/s).
    metrics
        Numbers to plot or log (e.g. ``{"loss": 0.3, "val_auc": 0.9}``).
    """

    stage: str
    done: int
    total: int
    message: str = ""
    rate: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Fraction done in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0


Job = Generator[Progress, None, T]


def run_job(job: Generator[Progress, None, T], on_progress: Callable[[Progress], object] | None = None) -> T:
    """Run a job generator to its end and return its result.

    Parameters
    ----------
    job
        The generator.
    on_progress
        Called with every :class:`Progress` event.
    """
    try:
        while True:
            event = next(job)
            if on_progress is not None:
                on_progress(event)
    except StopIteration as stop:
        return stop.value
