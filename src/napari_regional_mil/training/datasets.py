"""Labelled slides for training: from embedding caches, or from bags of features.

A slide of the cohort whose cache is missing is never silently dropped: it is embedded
first when the caller passes an ``embed`` function, otherwise every missing slide is
listed in one :class:`~napari_regional_mil.errors.CacheError`.

Feature files of other tools (CLAM/TRIDENT and STAMP ``.h5``, CLAM ``.pt``, ``.npz``; see
:mod:`.feature_files`) are read with their coordinates and patch size where present, so
the regions are rebuilt; bags without coordinates train the patch-level models (the
regional parts switch off, see :func:`~.train.adapt_model_config`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clinical import ClinicalRecord
from ..embedding.store import LazyEmbeddings, StoredEmbeddings, find_slide_cache
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError, ClinicalError, MissingCacheError, TrainingError
from ..jobs import Progress
from .clinical_values import clinical_record_of
from .cohort import Cohort, CohortRow
from .feature_files import find_feature_file, read_feature_file
from .feature_rows import FeatureFileEmbeddings

__all__ = [
    "LabelledSlide",
    "clinical_records",
    "common_provenance",
    "find_cache",
    "find_feature_bag",
    "load_cohort_embeddings",
    "load_feature_bags",
]

EmbedFunction = Callable[[CohortRow], Generator[Progress, None, Any]]


@dataclass(frozen=True, eq=False)
class LabelledSlide:
    """One slide's embeddings with its class.

    Parameters
    ----------
    embeddings
        Patch (and regional) embeddings: in memory, or a view of the slide's cache whose
        arrays are read when needed (:class:`~napari_regional_mil.embedding.store.LazyEmbeddings`:
        a store, or a feature file;
        training holds or streams them, see :mod:`.memory`).
    label
        Class index into the cohort's class names.
    patient
        Patient id (grouping for splits).
    split
        ``"train"``/``"val"``/``"test"`` from the CSV, or ``None``.
    source
        The cache or feature file it came from.
    clinical
        The slide's clinical values: its cohort row's other columns (the loaders of this
        module set them), or ``None``.
    """

    embeddings: SlideEmbeddings | LazyEmbeddings
    label: int
    patient: str
    split: str | None = None
    source: Path | None = None
    clinical: ClinicalRecord | None = None

    @property
    def name(self) -> str:
        """The slide's name (that of its embeddings)."""
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
    """Open the embedding cache of every slide of ``cohort`` (a job).

    Only the caches' attributes are read: each slide's embeddings are a
    :class:`~napari_regional_mil.embedding.store.StoredEmbeddings` view of its cache, so a
    cohort of any size opens at once; training holds them in memory or streams them
    (:func:`~.memory.prepare_slides`); ``.embeddings.load()`` reads one slide.

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
    if embed is not None:  # (none missing otherwise)
        for i, row in enumerate(missing):
            yield Progress("embed", i, len(missing), f"embedding missing slide {row.name}")
            yield from embed(row)
            if find_cache(cache_dir, row, encoder=encoder) is None:
                raise CacheError(f"{cohort.where(row)}: embedding {row.slide!r} wrote no cache in {cache_dir}")
    out: list[LabelledSlide] = []
    for i, (row, label) in enumerate(zip(cohort.rows, labels)):
        path = find_cache(cache_dir, row, encoder=encoder)
        assert path is not None
        embeddings = StoredEmbeddings(path)
        if embeddings.n_patches == 0:
            raise TrainingError(f"{cohort.where(row)}: slide {row.name!r} has an empty bag (no tissue patches)")
        clinical = clinical_record_of(cohort, row)
        out.append(LabelledSlide(embeddings, int(label), row.patient, row.split, path, clinical))
        yield Progress("load", i + 1, len(cohort), f"opened {row.name}")
    return out


def find_feature_bag(features_dir: str | os.PathLike, row: CohortRow) -> Path | None:
    """The feature file of ``row``'s slide in ``features_dir`` (see :func:`~.feature_files.find_feature_file`)."""
    for name in dict.fromkeys((row.name, Path(row.slide).stem)):
        found = find_feature_file(features_dir, name)
        if found is not None:
            return found
    return None


def load_feature_bags(
    cohort: Cohort, *, features_dir: str | os.PathLike, region_size: int = 8
) -> Generator[Progress, None, list[LabelledSlide]]:
    """Open (``.h5``) or load (``.npz``, ``.pt``) the feature files of every slide of ``cohort`` (a job).

    See :mod:`.feature_files` for the formats; with coordinates and a patch size the
    regions (``region_size`` x ``region_size`` patches) are rebuilt. An ``.h5`` file is
    opened without reading its features (:class:`~.feature_rows.FeatureFileEmbeddings`:
    training holds or streams it, reading the selected rows only, like a cache).

    Raises
    ------
    CacheError
        Listing every slide without a feature file, or naming an unreadable one.
    """
    missing = [row for row in cohort.rows if find_feature_bag(features_dir, row) is None]
    if missing:
        listed = ", ".join(f"{r.name!r} (line {r.line})" for r in missing[:10])
        raise CacheError(
            f"{cohort.path.name}: no feature file (.h5/.npz/.pt) in {features_dir} "
            f"for {len(missing)} slide(s): {listed}"
        )
    out = []
    for i, (row, label) in enumerate(zip(cohort.rows, cohort.labels)):
        path = find_feature_bag(features_dir, row)
        assert path is not None
        bag: SlideEmbeddings | LazyEmbeddings
        if path.suffix.lower() == ".h5":
            bag = FeatureFileEmbeddings(path, slide_name=row.name, region_size=region_size)
        else:
            bag = read_feature_file(path, slide_name=row.name, region_size=region_size)
        clinical = clinical_record_of(cohort, row)
        out.append(LabelledSlide(bag, int(label), row.patient, row.split, path, clinical))
        yield Progress("load", i + 1, len(cohort),
                       f"{'opened' if path.suffix.lower() == '.h5' else 'loaded'} {row.name}")
    return out


def common_provenance(slides: Sequence[LabelledSlide]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The encoder and tiling shared by ``slides``.

    Raises
    ------
    TrainingError
        Two slides were embedded with different encoders or tilings (naming both).
    """
    from ..model.checkpoint import provenance  # lazy: torch (the Train widget's form imports this module)

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

