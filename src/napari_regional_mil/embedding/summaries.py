"""The outcome of embedding one slide of many: :class:`SlideSummary` and its one summary line."""

from __future__ import annotations

from dataclasses import dataclass

from .pipeline import EmbedResult

__all__ = ["SlideSummary", "summarise", "summary_line"]


@dataclass(frozen=True)
class SlideSummary:
    """Outcome of embedding one slide.

    ``ok`` False means ``message`` says why (one line); otherwise ``message`` is the
    summary line (:func:`summary_line`).
    """

    slide: str
    ok: bool
    message: str
    cache_path: str = ""
    n_patches: int = 0
    n_regions: int = 0
    computed: bool = False
    seconds: float = 0.0

    def describe(self) -> str:
        """``<slide> ok`` or ``<slide> failed``."""
        return self.slide + (" ok" if self.ok else " failed")


def summary_line(result: EmbedResult) -> str:
    """One line about an :class:`~napari_regional_mil.embedding.pipeline.EmbedResult`."""
    how = f"{result.rate:.1f} patches/s" + (f", resumed at {result.resumed_from}" if result.resumed_from else "")
    how = how if result.computed else "already cached"
    skipped = (f" ({result.n_damaged} patches on damaged tiles could not be read and were left out)"
               if result.n_damaged else "")
    return (
        f"{result.slide_name}: {result.n_patches} patches{skipped}, {result.n_regions} regions, "
        f"{result.encoder} ({result.embedding_dim}-d) -> {result.cache_path} [{how}, {result.seconds:.1f} s]"
    )


def summarise(result: EmbedResult) -> SlideSummary:
    """The :class:`SlideSummary` of a slide embedded (or found in the cache) without error."""
    return SlideSummary(
        result.slide_name, True, summary_line(result), cache_path=str(result.cache_path), n_patches=result.n_patches,
        n_regions=result.n_regions, computed=result.computed, seconds=result.seconds,
    )
