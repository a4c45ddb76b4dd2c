"""The Cohort widget's "Embed missing": embed every listed slide without a complete cache.

:class:`CohortEmbedding` is the part of :class:`~._widgets.cohort_widget.CohortWidget` that
runs :func:`._cohort_tools.embed_missing_job` (the core's embedding workflow, one slide after
the other) in a worker, with the Embed box's options, progress, status and Cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils import notifications

from napari_regional_mil._widgets._cohort_tools import EmbedBox, embed_missing_job
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.errors import CohortError
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    from napari.components import ViewerModel

    from napari_regional_mil.training.cohort_table import CohortTable

__all__ = ["CohortEmbedding"]


class CohortEmbedding:
    """Embed the cohort's missing slides (a mixin of the Cohort widget, a ``QWidget``).

    The widget that mixes it in has ``viewer``, ``table``, ``embed_box``, ``job``,
    :meth:`cache_dir`, :meth:`refresh_embedded`, :meth:`check_status_later` and :meth:`_set_busy`.
    """

    viewer: ViewerModel
    table: CohortTable
    embed_box: EmbedBox
    job: JobHandle | None
    cache_dir: Callable[[], Path | None]
    refresh_embedded: Callable[[], None]
    check_status_later: Callable[[], JobHandle | None]
    _set_busy: Callable[[bool], None]

    def embed_missing(self) -> JobHandle | None:
        """Embed every slide without a complete cache, in the background (progress, Cancel)."""
        cache = self.cache_dir()
        if cache is None:
            notify_error(CohortError("choose a cache folder first"), context="Embed missing")
            return None
        self.refresh_embedded()
        rows = self.table.missing()
        without_file = [self.table.rows[i].name for i in rows if self.table.rows[i].path is None]
        todo = [(self.table.rows[i].name, self.table.rows[i].path) for i in rows if self.table.rows[i].path is not None]
        if without_file:
            notifications.show_warning(
                f"Embed missing: no slide file for {len(without_file)} slide(s) "
                f"({', '.join(without_file[:5])}); skipped"
            )
        if not todo:
            notifications.show_info("Embed missing: every slide with a file is embedded")
            return None
        try:
            kwargs = self.embed_box.embed_options()
        except Exception as exc:
            notify_error(exc, context="Embed missing")
            return None
        self.embed_box.status.setText(f"Embedding {len(todo)} slide(s)...")
        self.job = start_job(
            lambda: embed_missing_job(todo, cache_dir=cache, **kwargs),
            kind="embed",
            description=f"Embedding {len(todo)} slide(s)",
            on_progress=self._on_progress,
            on_result=lambda done: self.embed_box.status.setText(f"Embedded {len(done)} slide(s)."),
            on_finish=self._on_finish,
            viewer=self.viewer,
            owner=self,
            progress_bar=self.embed_box.progress,
        )
        if self.job is not None:
            self._set_busy(True)
        return self.job

    def _on_progress(self, event: object) -> None:
        if not isinstance(event, Progress):
            return
        if event.stage == "embedded":
            self.check_status_later()
        elif event.stage == "embed" and event.total:
            self.embed_box.status.setText(f"{event.message.split(':')[0]}: {event.done:,}/{event.total:,} patches")

    def _on_finish(self, status: str) -> None:
        self._set_busy(False)
        self.refresh_embedded()
        if status == "cancelled":
            self.embed_box.status.setText("Cancelled: partial caches are kept and resumed next time.")
        elif status == "failed":
            self.embed_box.status.setText("Failed (see the notification).")

    def cancel(self) -> None:
        """Cancel the running embedding."""
        if self.job is not None:
            self.job.cancel()
