"""Labelled slides for training: from embedding caches, or from bags of features.

A slide of the cohort whose cache is missing is never silently dropped: it is embedded
first when the caller passes an ``embed`` function, otherwise every missing slide is
listed in one :class:`~napari_regional_mil.errors.CacheError`.

Bags of features without coordinates (CLAM/TRIDENT ``.h5`` with ``features`` and optional
``coords``, or ``.npz`` with a ``features`` array) train the patch-level models; the
regional parts switch off (see :func:`~.train.adapt_model_config`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.store import find_slide_cache, load_slide_embeddings
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError, ClinicalError, MissingCacheError, TrainingError
from ..jobs import Progress
from ..model.checkpoint import provenance
from ..model.clinical import ClinicalRecord
from .cohort import Cohort, CohortRow

__all__ = [
    "LabelledSlide",
    "clinical_records",
    "common_provenance",
    "find_cache",
    "find_feature_bag",
    "load_cohort_embeddings",
    "load_feature_bags",
    "read_feature_bag",
]

EmbedFunction = Callable[[CohortRow], Generator[Progress, None, Any]]


@dataclass(frozen=True, eq=False)
class LabelledSlide:
    """One slide's embeddings with its class.

    Parameters
    ----------
    embeddings
        Patch (and regional) embeddings.
    label
        Class index into the cohort's class names.
    patient
        Patient id (grouping for splits).
    split
        ``"train"``/``"val"``/``"test"`` from the CSV, or ``None``.
    source
        The cache or feature file it came from.
    clinical
        The slide's clinical values (its cohort row's other columns), or ``None``.
    """

    embeddings: SlideEmbeddings
    label: int
    patient: str
    split: str | None = None
    source: Path | None = None
    clinical: ClinicalRecord | None = None

    @property
    def name(self) -> str:
        return self.embeddings.slide_name


def clinical_records(slides: Sequence[LabelledSlide]) -> list[ClinicalRecord]:
    """The clinical values of every slide.

    Raises
    ------
    ClinicalError
        A slide has none (naming it).
    """
    out = []
    for slide in slides:
        if slide.clinical is None:
            raise ClinicalError(
                f"slide {slide.name!r}: no clinical values (its cohort row has no other columns)"
            )
        out.append(slide.clinical)
    return out


def find_cache(cache_dir: str | os.PathLike, row: CohortRow, *, encoder: str | None = None) -> Path | None:
    """The complete embedding cache of ``row``'s slide in ``cache_dir``, or ``None``."""
    for slide in dict.fromkeys((row.name, row.slide)):
        try:
            return find_slide_cache(cache_dir, slide, encoder=encoder)
        except MissingCacheError:
            continue
        except CacheError as exc:
            raise CacheError(f"line {row.line}: {exc}") from None  # e.g. several encoders: choose one
    return None


def load_cohort_embeddings(
    cohort: Cohort,
    *,
    cache_dir: str | os.PathLike,
    encoder: str | None = None,
    embed: EmbedFunction | None = None,
) -> Generator[Progress, None, list[LabelledSlide]]:
    """Load the cached embeddings of every slide of ``cohort`` (a job).

    Parameters
    ----------
    cohort
        The validated cohort.
    cache_dir
        The embedding cache folder.
    encoder
        Restrict to caches of this encoder (when several exist).
    embed
        Called with a row whose cache is missing; a job that writes the cache.
        Without it, missing caches raise.

    Raises
    ------
    CacheError
        Listing every slide (with its CSV line) that has no cache.
    """
    labels = cohort.labels
    missing = [row for row in cohort.rows if find_cache(cache_dir, row, encoder=encoder) is None]
    if missing and embed is None:
        listed = ", ".join(f"{r.name!r} (line {r.line})" for r in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CacheError(
            f"{cohort.path.name}: no embedding cache in {cache_dir} for {len(missing)} slide(s): {listed}{more}; "
            "embed them first (napari-regional-mil embed)"
        )
    for i, row in enumerate(missing):
        yield Progress("embed", i, len(missing), f"embedding missing slide {row.name}")
        yield from embed(row)  # type: ignore[misc]
        if find_cache(cache_dir, row, encoder=encoder) is None:
            raise CacheError(f"{cohort.where(row)}: embedding {row.slide!r} wrote no cache in {cache_dir}")
    out: list[LabelledSlide] = []
    for i, (row, label) in enumerate(zip(cohort.rows, labels)):
        path = find_cache(cache_dir, row, encoder=encoder)
        assert path is not None
        embeddings = load_slide_embeddings(path)
        if embeddings.n_patches == 0:
            raise TrainingError(f"{cohort.where(row)}: slide {row.name!r} has an empty bag (no tissue patches)")
        out.append(LabelledSlide(embeddings, int(label), row.patient, row.split, path))
        yield Progress("load", i + 1, len(cohort), f"loaded {row.name}")
    return out


def read_feature_bag(path: str | os.PathLike, *, slide_name: str | None = None) -> SlideEmbeddings:
    """Read a bag of patch features without regions.

    Parameters
    ----------
    path
        A CLAM/TRIDENT ``.h5`` (datasets ``features`` (N, D) or (1, N, D), optional
        ``coords`` (N, 2)) or an ``.npz`` with a ``features`` array (and optional ``coords``).
    slide_name
        Name of the slide (default: the file stem).

    Raises
    ------
    CacheError
        Unreadable file, no ``features``, wrong shape, or an empty bag.
    """
    path = Path(path)
    name = slide_name or path.stem
    meta: dict[str, Any] = {"source": str(path), "format": path.suffix.lower().lstrip(".")}
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "features" not in data:
                    raise CacheError(f"{path}: no 'features' array (found: {', '.join(data.files) or 'none'})")
                features = np.asarray(data["features"])
                coords = np.asarray(data["coords"]) if "coords" in data else None
        else:
            import h5py

            with h5py.File(path, "r") as fh:
                if "features" not in fh:
                    raise CacheError(f"{path}: no 'features' dataset (found: {', '.join(fh.keys()) or 'none'})")
                features = np.asarray(fh["features"][()])
                coords = np.asarray(fh["coords"][()]) if "coords" in fh else None
                for key, value in {**dict(fh.attrs), **dict(fh["features"].attrs)}.items():
                    if isinstance(value, (str, int, float, np.integer, np.floating)):
                        meta[key] = value.item() if hasattr(value, "item") else value
    except CacheError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise CacheError(f"{path}: cannot read the feature bag ({exc})") from None
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2 or features.shape[0] == 0 or not np.issubdtype(features.dtype, np.number):
        raise CacheError(f"{path}: 'features' must be a non-empty (N, D) numeric array, got shape {features.shape}")
    if coords is not None:
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        if coords.shape != (features.shape[0], 2):
            raise CacheError(f"{path}: 'coords' has shape {coords.shape}, expected ({features.shape[0]}, 2)")
        coords = coords.astype(np.int64)
    meta.setdefault("embedding_dim", int(features.shape[1]))
    return SlideEmbeddings(slide_name=name, features=features.astype(np.float32), coords_px=coords, meta=meta)


def find_feature_bag(features_dir: str | os.PathLike, row: CohortRow) -> Path | None:
    """``<features_dir>/<slide>.h5`` or ``.npz`` (also under ``h5_files/``), or ``None``."""
    root = Path(features_dir)
    for folder in (root, root / "h5_files", root / "features"):
        for suffix in (".h5", ".npz"):
            candidate = folder / f"{row.name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def load_feature_bags(cohort: Cohort, *, features_dir: str | os.PathLike) -> Generator[Progress, None, list[LabelledSlide]]:
    """Load the feature bags of every slide of ``cohort`` (a job; regional parts unavailable).

    Raises
    ------
    CacheError
        Listing every slide without a feature file, or naming an unreadable one.
    """
    missing = [row for row in cohort.rows if find_feature_bag(features_dir, row) is None]
    if missing:
        listed = ", ".join(f"{r.name!r} (line {r.line})" for r in missing[:10])
        raise CacheError(
            f"{cohort.path.name}: no feature file (.h5/.npz) in {features_dir} for {len(missing)} slide(s): {listed}"
        )
    out = []
    for i, (row, label) in enumerate(zip(cohort.rows, cohort.labels)):
        path = find_feature_bag(features_dir, row)
        assert path is not None
        out.append(LabelledSlide(read_feature_bag(path, slide_name=row.name), int(label), row.patient, row.split, path))
        yield Progress("load", i + 1, len(cohort), f"loaded {row.name}")
    return out


def common_provenance(slides: Sequence[LabelledSlide]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The encoder and tiling shared by ``slides``.

    Raises
    ------
    TrainingError
        Two slides were embedded with different encoders or tilings (naming both).
    """
    encoder: dict[str, Any] = {}
    tiling: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for slide in slides:
        enc, til = provenance(slide.embeddings.meta)
        enc["dim"] = slide.embeddings.embedding_dim
        for record, values in ((encoder, enc), (tiling, til)):
            for key, value in values.items():
                if value is None:
                    continue
                if key in record and record[key] != value:
                    raise TrainingError(
                        f"slides {origin[key]!r} and {slide.name!r} differ in {key} ({record[key]!r} vs {value!r}); "
                        "train on embeddings from one encoder and tiling"
                    )
                record.setdefault(key, value)
                origin.setdefault(key, slide.name)
    return encoder, tiling

