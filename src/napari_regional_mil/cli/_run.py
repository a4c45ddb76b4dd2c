"""The CLI's run records: ``run.json`` from the parsed options and the slides a command used."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..runrecord import run_record

if TYPE_CHECKING:
    from ..training.datasets import LabelledSlide

__all__ = ["record_for"]

#: Parsed attributes that are not options.
_NOT_OPTIONS = ("func", "config_values", "command")


def record_for(
    args: argparse.Namespace, command: str, *, slides: Sequence[LabelledSlide] = (), outputs: Iterable[str] = ()
) -> dict[str, Any]:
    """The run record of a command (see :mod:`napari_regional_mil.runrecord`).

    ``slides`` are the :class:`~napari_regional_mil.training.datasets.LabelledSlide` it
    used: their caches' keys (``--cache``) or their feature files (``--features``).
    """
    caches: dict[str, str] = {}
    features: dict[str, Any] = {}
    for slide in slides:
        if getattr(args, "features", None) is not None and slide.source is not None:
            features[slide.name] = slide.source
        else:
            caches[slide.name] = str(slide.embeddings.meta.get("cache_key", ""))
    options = {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS}
    return run_record(
        command,
        options,
        seed=getattr(args, "seed", None),
        config_file=getattr(args, "config", None),
        cohort_table=getattr(args, "labels", None),
        caches=caches or None,
        feature_files=features or None,
        outputs=outputs,
    )
