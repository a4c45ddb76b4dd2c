"""Feature files of other tools (``--features``: CLAM/TRIDENT and STAMP ``.h5``) read by row selection.

:func:`~.datasets.load_feature_bags` opens each ``.h5`` file as a
:class:`FeatureFileEmbeddings`: a :class:`~napari_regional_mil.embedding.store.LazyEmbeddings`
whose reader (:class:`FeatureFileReader`) reads the patch rows a training step selected
straight from the file's ``features`` (``feats``) dataset, so such cohorts stream like
caches (:mod:`.streaming`). ``.npz`` and ``.pt`` files cannot be read by rows and are
read whole (:func:`~.feature_files.read_feature_file`).

A feature file's rows are not the bag's: :func:`~.feature_files.read_feature_file` orders
the patches row-major on the grid it rebuilds from the coordinates, and derives the
regions. So that both paths agree to the bit, the reader does not re-implement that: it
runs :func:`~.feature_files.read_feature_file` itself on a copy of the file whose features
are replaced by each row's index (a temporary file of N x 1 numbers beside the
coordinates); the copy's "features" are then the file row of every bag row, and its grid,
regions, coordinates and provenance are the real ones. Regional embeddings pooled from
the features need every row: without stored ones (our own ``export-h5`` stores them) a
regional model's step reads the whole bag (one slide at a time).
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..embedding.store import LazyEmbeddings
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError
from .feature_files import read_feature_file

__all__ = ["FeatureFileEmbeddings", "FeatureFileReader"]

_LAYOUTS: OrderedDict[tuple[str, tuple[int, int], int], SlideEmbeddings] = OrderedDict()
_LAYOUTS_KEPT = 4  # a step asks for several arrays of one slide: its layout is worked out once
_MAX_ROWS = 1 << 24  # row indices stay exact in float32


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


class FeatureFileReader:
    """Reads one slide's ``.h5`` feature file by rows (see the module docstring).

    Parameters
    ----------
    path
        The ``.h5`` file (CLAM/TRIDENT ``features`` or STAMP ``feats``).
    slide_name
        The slide's name (default: the file stem).
    region_size
        k of the rebuilt regions, as for :func:`~.feature_files.read_feature_file`.

    Raises
    ------
    CacheError
        Unreadable file, no ``features``/``feats``, or not an (N, D) array.
    """

    def __init__(self, path: str | os.PathLike[str], *, slide_name: str | None = None, region_size: int = 8) -> None:
        self.path = Path(path)
        self.slide_name = slide_name or self.path.stem
        self.region_size = int(region_size)
        try:
            self._identity = _identity(self.path)
            with h5py.File(self.path, "r") as fh:
                self._key = "features" if "features" in fh else "feats" if "feats" in fh else ""
                if not self._key:
                    raise CacheError(f"{self.path}: no 'features' or 'feats' dataset (found: {', '.join(fh.keys())})")
                shape = tuple(fh[self._key].shape)
                self.dtype = np.dtype(fh[self._key].dtype)
                self._stored = {k for k in ("region_mean", "region_max") if k in fh} if self._key == "features" and all(
                    k in fh for k in ("grid_xy", "region_index", "region_xy")) else set()
        except OSError as exc:
            raise CacheError(f"{self.path}: cannot read the feature file ({exc})") from None
        self._squeeze = len(shape) == 3 and shape[0] == 1
        shape = shape[1:] if self._squeeze else shape
        if len(shape) != 2 or shape[0] == 0 or not np.issubdtype(self.dtype, np.number):
            raise CacheError(f"{self.path}: {self._key!r} must be a non-empty (N, D) numeric array, got shape {shape}")
        if shape[0] >= _MAX_ROWS:
            raise CacheError(f"{self.path}: {shape[0]} patches; at most {_MAX_ROWS - 1} are read by rows")
        self.n_patches, self.embedding_dim = int(shape[0]), int(shape[1])
        #: What identifies this version of the file (for the feature statistics kept per file).
        self.attrs: Mapping[str, object] = {
            "cache_key": str(self.path.resolve()), "created": self._identity[1], "completed": self._identity[0],
            "dtype": self.dtype.name,
        }

    # -- identity and errors ----------------------------------------------------------------
    def error(self, problem: str) -> CacheError:
        """A one-line :class:`CacheError` naming the slide and the file."""
        return CacheError(f"slide {self.slide_name!r}: feature file {self.path} {problem}")

    def check(self) -> None:
        """Raise when the file is gone or changed since it was opened."""
        try:
            now = _identity(self.path)
        except OSError:
            raise self.error("is gone (deleted or moved while in use)") from None
        if now != self._identity:
            raise self.error("was replaced while in use (its size or time changed); restart on the new file")

    # -- the bag's layout -------------------------------------------------------------------
    def _layout(self) -> SlideEmbeddings:
        """The bag as :func:`read_feature_file` makes it, with each row's file row as its only feature."""
        key = (str(self.path), self._identity, self.region_size)
        found = _LAYOUTS.get(key)
        if found is not None:
            _LAYOUTS.move_to_end(key)
            return found
        self.check()
        try:
            with tempfile.TemporaryDirectory(prefix="nrm-layout-") as tmp:
                proxy = Path(tmp) / self.path.name
                with h5py.File(self.path, "r") as src, h5py.File(proxy, "w") as dst:
                    dst.attrs.update(dict(src.attrs))
                    for name in src:
                        if name == self._key:
                            index = np.arange(self.n_patches, dtype=np.float64)[:, None]
                            dst.create_dataset(name, data=index).attrs.update(dict(src[name].attrs))
                        elif name not in ("region_mean", "region_max"):
                            src.copy(src[name], dst, name=name)
                        else:  # stored regional embeddings: their shape only (read by rows of their own)
                            dst.create_dataset(name, shape=src[name].shape, dtype=np.float32, fillvalue=0.0)
                layout = read_feature_file(proxy, slide_name=self.slide_name, region_size=self.region_size)
        except OSError as exc:
            raise self.error(f"cannot be read ({exc})") from None
        _LAYOUTS[key] = layout
        while len(_LAYOUTS) > _LAYOUTS_KEPT:
            _LAYOUTS.popitem(last=False)
        return layout

    def _order(self) -> np.ndarray:
        return np.rint(np.asarray(self._layout().features[:, 0], dtype=np.float64)).astype(np.int64)

    @property
    def meta(self) -> dict[str, Any]:
        """The feature file's metadata (its source resolved, the embedding dimension added)."""
        meta = dict(self._layout().meta)
        if "source" in meta:
            meta["source"] = str(self.path.resolve()) if self._key == "features" else str(self.path)
        meta["embedding_dim"] = self.embedding_dim
        return meta

    @property
    def context_names(self) -> tuple[str, ...]:
        """The context scales of the bag: none (a feature file holds patch embeddings only)."""
        return ()

    def _small(self, name: str) -> np.ndarray | None:
        layout = self._layout()
        return {"coords_px": layout.coords_px, "grid_xy": layout.grid_xy, "region_index": layout.region_index,
                "region_xy": layout.region_xy, "tissue_fraction": layout.tissue_fraction}.get(name)

    def has(self, name: str) -> bool:
        """Whether the bag has ``name`` (regional embeddings: only when the file stores them)."""
        if name in ("region_mean", "region_max"):
            return name in self._stored
        return self._small(name) is not None

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of the bag's array ``name``."""
        return tuple(self.array(name).shape)

    def array(self, name: str, dtype: np.dtype | type | None = None) -> np.ndarray:
        """One of the bag's small arrays (or a regional embedding the file stores)."""
        if name in self._stored:
            try:
                with h5py.File(self.path, "r") as fh:
                    values = np.asarray(fh[name][...], dtype=np.float32)
            except OSError as exc:
                raise self.error(f"cannot be read ({exc})") from None
        else:
            found = self._small(name)
            if found is None:
                raise self.error(f"has no {name!r}")
            values = np.asarray(found)
        return values if dtype is None else values.astype(dtype, copy=False)

    def optional(self, name: str, dtype: np.dtype | type | None = None) -> np.ndarray | None:
        """The bag's array ``name`` (see :meth:`array`), or ``None`` when it has none."""
        return self.array(name, dtype) if self.has(name) else None

    # -- rows -------------------------------------------------------------------------------
    def _read(self, file_rows: np.ndarray | slice) -> np.ndarray:
        try:
            with h5py.File(self.path, "r") as fh:
                data = fh[self._key]
                block = data[0, file_rows] if self._squeeze else data[file_rows]
        except (OSError, ValueError, TypeError) as exc:
            raise self.error(f"cannot be read ({type(exc).__name__}: {exc})") from None
        return np.asarray(block, dtype=np.float32)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The float32 features of the bag's ``rows``: only those rows of the file are read."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_patches):
            raise self.error(f"has no patch {int(rows.max())}")
        self.check()
        file_rows = self._order()[rows]
        unique, inverse = np.unique(file_rows, return_inverse=True)
        values = self._read(unique) if unique.size else np.zeros((0, self.embedding_dim), np.float32)
        return values[inverse]

    def features(self, *, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The bag's float32 features ``start:stop`` (the whole file read, in the bag's order)."""
        self.check()
        values = self._read(slice(None))[self._order()]
        return values[start:stop]

    def load(self) -> SlideEmbeddings:
        """The bag in memory (:func:`~.feature_files.read_feature_file`)."""
        self.check()
        return read_feature_file(self.path, slide_name=self.slide_name, region_size=self.region_size)


class FeatureFileEmbeddings(LazyEmbeddings):
    """A slide read from its ``.h5`` feature file by rows (see the module docstring).

    Parameters
    ----------
    path, slide_name, region_size
        As for :class:`FeatureFileReader`.
    """

    def __init__(self, path: str | os.PathLike[str], *, slide_name: str | None = None, region_size: int = 8) -> None:
        super().__init__(FeatureFileReader(path, slide_name=slide_name, region_size=region_size))

    def reopen(self) -> FeatureFileEmbeddings:
        """The file opened afresh."""
        reader = self.reader
        assert isinstance(reader, FeatureFileReader)
        return FeatureFileEmbeddings(reader.path, slide_name=reader.slide_name, region_size=reader.region_size)
