"""Headless exports of many predictions: what the Predict widget writes for one slide, for a batch.

``predict`` stores each slide's prediction beside its embeddings
(``<store>.attention.npz``, :func:`~napari_regional_mil.training.predict.write_attention`).
:func:`export_predictions` reads every such file of a folder with the embeddings it sits
beside, lays it out on the slide's grids (:class:`~napari_regional_mil.heatmap.AttentionMaps`,
at the slide's own mpp) and writes the exports of :mod:`napari_regional_mil.export`
under the names the Predict widget proposes: ``<slide>.geojson``, ``<slide>_heatmap.tif``,
``<slide>_scores.csv``. The files are identical to the widget's (the same functions on the
same data; ``tests/test_batch_export.py`` compares them byte for byte).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path

from .embedding.store import load_slide_embeddings
from .embedding.types import SlideEmbeddings
from .errors import CacheError
from .export import ExportError, export_csv, export_geojson, export_heatmap_tiff
from .heatmap import NORMALISATIONS, AttentionMaps
from .jobs import Progress
from .training.feature_files import read_feature_file
from .training.predict import read_attention

__all__ = ["EXPORT_FORMATS", "export_file_name", "export_maps", "export_predictions", "find_predictions"]

#: Export formats and the file-name suffix the Predict widget proposes for each.
EXPORT_FORMATS = {"geojson": ".geojson", "tiff": "_heatmap.tif", "csv": "_scores.csv"}
_ATTENTION_SUFFIX = ".attention.npz"


def export_file_name(slide_name: str, fmt: str) -> str:
    """``<slide>.geojson``, ``<slide>_heatmap.tif`` or ``<slide>_scores.csv``."""
    return slide_name + EXPORT_FORMATS[fmt]


def export_maps(fmt: str, path: str | os.PathLike[str], maps: AttentionMaps, *, normalisation: str = "rank") -> Path:
    """Write one slide's maps as ``fmt`` (``geojson``, ``tiff`` or ``csv``) to ``path`` (atomically)."""
    if fmt == "geojson":
        return export_geojson(path, maps)
    if fmt == "tiff":
        return export_heatmap_tiff(path, maps, normalisation=normalisation)
    if fmt == "csv":
        return export_csv(path, maps)
    raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")


def find_predictions(folder: str | os.PathLike[str], slides: Sequence[str] = ()) -> list[Path]:
    """The ``*.attention.npz`` files of ``folder`` (sorted), restricted to ``slides`` when given.

    Raises
    ------
    CacheError
        No such folder, no prediction in it, or a named slide without one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CacheError(f"{folder}: no such folder")
    found = sorted(p for p in folder.iterdir() if p.name.endswith(_ATTENTION_SUFFIX) and not p.name.startswith("."))
    if not found:
        raise CacheError(f"{folder}: no predictions (*{_ATTENTION_SUFFIX}); run napari-regional-mil predict first")
    if not slides:
        return found
    by_slide = {read_attention(p).slide_name: p for p in found}
    missing = [s for s in slides if s not in by_slide]
    if missing:
        raise CacheError(f"{folder}: no prediction of slide(s) {', '.join(map(repr, missing))}")
    return [by_slide[s] for s in slides]


def _embeddings_beside(prediction_path: Path, slide_name: str) -> SlideEmbeddings:
    """The embeddings a prediction was made on: the store or feature file it sits beside."""
    source = prediction_path.with_name(prediction_path.name[: -len(_ATTENTION_SUFFIX)])
    if source.suffix == ".zarr" and source.is_dir():
        return load_slide_embeddings(source)
    if source.is_file():
        return read_feature_file(source, slide_name=slide_name)
    raise CacheError(f"{prediction_path.name}: the embeddings it was made on ({source.name}) are gone")


def export_predictions(
    predictions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("geojson", "tiff", "csv"),
    normalisation: str = "rank",
    slides: Sequence[str] = (),
) -> Generator[Progress, None, list[Path]]:
    """Export every prediction of a folder (a job; see the module docstring).

    Parameters
    ----------
    predictions
        The folder holding the ``*.attention.npz`` files (``predict``'s cache or
        features folder).
    out
        The folder for the exports (must exist).
    formats
        Any of ``geojson``, ``tiff``, ``csv``.
    normalisation
        Of the heatmap TIFF: ``rank`` (default, as the Predict widget), ``minmax``,
        ``log`` or ``raw``.
    slides
        Only these slides (default: every prediction in the folder).

    Raises
    ------
    ExportError, CacheError
        Naming the folder, file or slide: a missing output folder, no predictions, a
        stale prediction (its patches differ from the embeddings'), embeddings without a
        grid or coordinates.
    """
    out = Path(out)
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ExportError(f"--format {', '.join(unknown) or '(none)'}: choose from {', '.join(EXPORT_FORMATS)}")
    if normalisation not in NORMALISATIONS:
        raise ExportError(f"--normalisation {normalisation!r}: choose from {', '.join(NORMALISATIONS)}")
    if not out.is_dir():
        raise ExportError(f"{out}: no such folder")
    files = find_predictions(predictions, slides)
    written: list[Path] = []
    for i, path in enumerate(files):
        prediction = read_attention(path)
        name = prediction.slide_name
        yield Progress("export", i, len(files), name)
        maps = AttentionMaps.from_prediction(_embeddings_beside(path, name), prediction)
        for fmt in formats:
            written.append(export_maps(fmt, out / export_file_name(name, fmt), maps, normalisation=normalisation))
    yield Progress("export", len(files), len(files), f"{len(written)} files")
    return written
