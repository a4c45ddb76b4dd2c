"""Slides whose embeddings stay on disk: :class:`~napari_regional_mil.embedding.types.SlideEmbeddings` look-alikes.

A :class:`LazyEmbeddings` answers the questions training asks of a slide (its name, sizes,
provenance, whether it has regions) from its file's header, and reads its arrays only
when asked for, through a *reader* (:class:`RowReader`): ``features`` is a
:class:`StoredFeatures` (``features[rows]`` reads those rows, ``numpy.asarray(features)``
the whole slide, as float32), the regional and context embeddings are
:class:`StoredArray` objects whose ``shape`` costs nothing, and :meth:`LazyEmbeddings.load`
returns the slide in memory. Nothing read is kept, so a cohort of these holds no patch
embeddings in memory: training streams them (``training/streaming.py``).

:class:`StoredEmbeddings` reads a store (:class:`~.rows.StoreReader`); feature files of
other tools have their own reader (``training/feature_rows.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import EllipsisType
from typing import Any, Protocol, TypeAlias

import numpy as np

from ...errors import CacheError
from ..types import SlideEmbeddings
from .keys import PathLike
from .reader import CONTEXT_PREFIX
from .rows import StoreReader

__all__ = ["LazyEmbeddings", "RowReader", "StoredArray", "StoredEmbeddings", "StoredFeatures"]

_REGIONAL = ("mean", "max")

# what a StoredArray can be indexed with (numpy's basic and integer-array indexing)
ArrayIndex: TypeAlias = (
    int | slice | EllipsisType | list[int] | np.ndarray | tuple[int | slice | EllipsisType | np.ndarray, ...]
)


class RowReader(Protocol):
    """What a :class:`LazyEmbeddings` reads through (:class:`~.rows.StoreReader` is one).

    Every read raises :class:`~napari_regional_mil.errors.CacheError` naming the slide
    and the file when the file is gone, changed since it was opened, or damaged.
    """

    path: Path
    slide_name: str
    n_patches: int
    embedding_dim: int
    dtype: np.dtype
    attrs: Mapping[str, object]

    @property
    def meta(self) -> dict[str, Any]:
        """The slide's provenance (encoder, tiling, slide, format), as stored in the header."""

    @property
    def context_names(self) -> tuple[str, ...]:
        """The names of the context embeddings the file holds."""

    def error(self, problem: str) -> CacheError:
        """A :class:`~napari_regional_mil.errors.CacheError` naming the slide, the file and ``problem``."""

    def check(self) -> None:
        """Raise a :class:`~napari_regional_mil.errors.CacheError` if the file is gone or changed."""

    def has(self, name: str) -> bool:
        """Whether the file holds the array ``name``."""

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of the array ``name``, read from the header."""

    def array(self, name: str, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The whole array ``name`` (as ``dtype`` when given)."""

    def optional(self, name: str, dtype: np.dtype | type | None = None) -> np.ndarray | None:
        """The array ``name``, or None when the file does not hold it."""

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The patch embeddings of ``rows`` (in that order), as float32."""

    def features(self, *, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The patch embeddings of rows ``start`` to ``stop``, as float32."""

    def load(self) -> SlideEmbeddings:
        """The whole slide in memory."""


class StoredFeatures:
    """The patch embeddings of a slide on disk, read when indexed (``numpy.asarray`` reads all, as float32).

    ``features[rows]`` (an int array, a list or a slice) reads only those rows.
    """

    def __init__(self, reader: RowReader) -> None:
        self._reader = reader

    @property
    def shape(self) -> tuple[int, int]:
        """The (patches, embedding dimension) shape."""
        return (self._reader.n_patches, self._reader.embedding_dim)

    @property
    def dtype(self) -> np.dtype:
        """float32: the patch embeddings are read as float32."""
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        """2: patches by embedding dimension."""
        return 2

    def __len__(self) -> int:
        return self._reader.n_patches

    def __getitem__(self, index: object) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, stride = index.indices(self._reader.n_patches)
            if stride == 1:
                return self._reader.features(start=start, stop=stop)
            return self._reader.rows(np.arange(start, stop, stride))
        if isinstance(index, (int, np.integer)):
            return self._reader.rows(np.array([index]))[0]
        return self._reader.rows(np.asarray(index))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        values = self._reader.features()
        return values if dtype is None else values.astype(dtype, copy=False)


class StoredArray:
    """One array of a slide on disk, read when converted (``numpy.asarray``) or indexed; ``shape`` costs nothing."""

    def __init__(self, reader: RowReader, name: str, dtype: np.dtype | type | None = None) -> None:
        self._reader = reader
        self._name = name
        self._dtype = dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, read from the header."""
        return self._reader.shape(self._name)

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype it is read as."""
        return np.dtype(self._dtype) if self._dtype is not None else np.dtype(self._read().dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self) -> np.ndarray:
        return self._reader.array(self._name, self._dtype)

    def __getitem__(self, index: ArrayIndex) -> np.ndarray:
        return np.asarray(self._read()[index])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        values = self._read()
        return values if dtype is None else values.astype(dtype, copy=False)


class LazyEmbeddings(ABC):
    """A :class:`~napari_regional_mil.embedding.types.SlideEmbeddings` look-alike whose arrays stay on disk.

    Parameters
    ----------
    reader
        Reads the slide's file (see :class:`RowReader`).
    """

    def __init__(self, reader: RowReader) -> None:
        self.reader = reader

    def __repr__(self) -> str:
        size = f"{self.n_patches} x {self.embedding_dim} {self.reader.dtype}"
        return f"{type(self).__name__}({self.reader.path!s}, {size})"

    @abstractmethod
    def reopen(self) -> LazyEmbeddings:
        """The same slide opened afresh (e.g. on another machine of a cluster)."""

    @property
    def path(self) -> Path:
        """The file the slide is read from."""
        return self.reader.path

    @property
    def slide_name(self) -> str:
        """The slide's name."""
        return self.reader.slide_name

    @property
    def meta(self) -> dict[str, Any]:
        """The slide's provenance (encoder, tiling, slide, format)."""
        return self.reader.meta

    @property
    def n_patches(self) -> int:
        """The number of patches."""
        return self.reader.n_patches

    @property
    def embedding_dim(self) -> int:
        """The dimension of a patch embedding."""
        return self.reader.embedding_dim

    @property
    def n_regions(self) -> int:
        """The number of regions (0 when the slide has none)."""
        return int(self.reader.shape("region_xy")[0]) if self.reader.has("region_xy") else 0

    @property
    def has_regions(self) -> bool:
        """Whether the slide has regions (grid positions, region index and at least one region)."""
        return self.reader.has("grid_xy") and self.reader.has("region_index") and self.n_regions > 0

    @property
    def features(self) -> StoredFeatures:
        """The patch embeddings, read when indexed or converted."""
        return StoredFeatures(self.reader)

    @property
    def coords_px(self) -> np.ndarray | None:
        """The patches' top-left corners in level-0 pixels (x, y), or None."""
        return self.reader.optional("coords_px")

    @property
    def grid_xy(self) -> np.ndarray | None:
        """The patches' positions on the patch grid (x, y), or None."""
        return self.reader.optional("grid_xy")

    @property
    def region_index(self) -> np.ndarray | None:
        """Each patch's region (row of ``region_xy``), or None."""
        return self.reader.optional("region_index")

    @property
    def region_xy(self) -> np.ndarray | None:
        """The regions' positions on the region grid (x, y), or None."""
        return self.reader.optional("region_xy")

    @property
    def tissue_fraction(self) -> np.ndarray | None:
        """Each patch's fraction of tissue, or None."""
        return self.reader.optional("tissue_fraction")

    @property
    def regional_embeddings(self) -> dict[str, StoredArray]:
        """The pooled regional embeddings by pooling name, each read when converted."""
        return {p: StoredArray(self.reader, f"region_{p}") for p in _REGIONAL if self.reader.has(f"region_{p}")}

    @property
    def context_embeddings(self) -> dict[str, StoredArray]:
        """The context embeddings by name, each read (as float32) when converted."""
        return {k: StoredArray(self.reader, CONTEXT_PREFIX + k, np.float32) for k in self.reader.context_names}

    def load(self) -> SlideEmbeddings:
        """The whole slide in memory."""
        return self.reader.load()


class StoredEmbeddings(LazyEmbeddings):
    """A slide whose embeddings stay in its store (a :class:`LazyEmbeddings` over :class:`~.rows.StoreReader`).

    Parameters
    ----------
    path
        A complete store.

    Raises
    ------
    CacheError
        Not a store, incomplete, or of another format version.
    """

    def __init__(self, path: PathLike) -> None:
        super().__init__(StoreReader(path))

    def reopen(self) -> StoredEmbeddings:
        """The store opened afresh."""
        return StoredEmbeddings(self.reader.path)
