"""Reading parts of a store: single patch rows, one array, a whole slide in chunks.

Training streams from the caches: each step reads the selected patches' rows of
``features`` and the slide's small arrays, never the whole slide. zarr's own reader
costs tens of milliseconds for a few hundred scattered rows, so :class:`StoreReader`
reads the chunk files of the arrays this package writes directly: ``features`` is stored
without a compressor (see :class:`~.writer.CacheWriter`), so a row is one contiguous span
of a chunk file (``(row % chunk_rows) * D * itemsize`` bytes in); the small arrays are
zstd-compressed single chunks decoded with numcodecs. Arrays of any other layout (other
codecs, sharding, stores of other tools) are read through zarr.

Unlike zarr, which returns the fill value for a chunk file that is missing, every read
here fails loudly: a missing or truncated chunk, a store deleted, moved or replaced
while it is read (:meth:`StoreReader.check` compares the store's identity with the one
it had when opened) raise one :class:`~napari_regional_mil.errors.CacheError` line
naming the slide and the store.

:class:`~.lazy.StoredEmbeddings` (module :mod:`.lazy`) is the lazy
:class:`~napari_regional_mil.embedding.types.SlideEmbeddings` look-alike over a reader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Zstd

from ...errors import CacheError
from ..types import SlideEmbeddings
from .keys import FORMAT_VERSION, PARTIAL_SUFFIX, PathLike
from .reader import CONTEXT_PREFIX, META_KEYS, read_attrs

__all__ = [
    "ArrayLayout", "StoreReader", "check_store", "load_slide_embeddings", "open_store", "read_context_embeddings",
    "store_array",
]

_REGIONAL = ("mean", "max")


def check_store(path: Path, attrs: Mapping[str, object] | None) -> Mapping[str, object]:
    """The attributes of a complete store of this format; :class:`CacheError` otherwise."""
    if attrs is None:
        raise CacheError(f"{path}: not an embedding cache")
    if path.name.endswith(PARTIAL_SUFFIX) or not attrs.get("complete"):
        raise CacheError(
            f"{path}: the cache is incomplete ({attrs.get('n_done', 0)}/{attrs.get('n_patches', '?')} patches); "
            "run embed again to resume"
        )
    version = attrs.get("format_version")
    try:
        same = isinstance(version, (int, float, str)) and int(version) == FORMAT_VERSION
    except ValueError:
        same = False
    if not same:
        raise CacheError(f"{path}: cache format {version} is not {FORMAT_VERSION}; embed again")
    return attrs


@dataclass(frozen=True)
class ArrayLayout:
    """One array of a store as this package writes it: regular chunks, little-endian bytes, maybe zstd.

    Parameters
    ----------
    folder
        The array's folder in the store.
    shape, dtype, chunk_shape
        From its ``zarr.json``.
    compressed
        Whether chunks are zstd frames (else raw bytes).
    separator
        The chunk key separator (``"/"``: ``c/0/0``; ``"."``: ``c.0.0``).
    """

    folder: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_shape: tuple[int, ...]
    compressed: bool
    separator: str

    @classmethod
    def read(cls, folder: Path) -> ArrayLayout | None:
        """The layout of the array in ``folder``, or None when it is not one this module reads directly."""
        try:
            meta = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
            if meta.get("node_type") != "array" or meta.get("storage_transformers"):
                return None
            grid, keys = meta["chunk_grid"], meta["chunk_key_encoding"]
            if grid.get("name") != "regular" or keys.get("name") != "default":
                return None
            codecs = [c.get("name") for c in meta["codecs"]]
            if codecs[:1] != ["bytes"] or codecs[1:] not in ([], ["zstd"]):
                return None
            endian = meta["codecs"][0].get("configuration", {}).get("endian", "little")
            dtype = np.dtype(meta["data_type"])
            if dtype.itemsize > 1 and endian != "little":
                return None
            return cls(
                folder=folder, shape=tuple(int(v) for v in meta["shape"]), dtype=dtype.newbyteorder("<"),
                chunk_shape=tuple(int(v) for v in grid["configuration"]["chunk_shape"]),
                compressed=codecs[1:] == ["zstd"], separator=str(keys.get("configuration", {}).get("separator", "/")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def chunk_file(self, index: tuple[int, ...]) -> Path:
        """The file of the chunk at grid ``index``."""
        return self.folder / self.separator.join(["c", *map(str, index)])

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one (decoded) chunk: edge chunks are stored whole, like the others."""
        return int(np.prod(self.chunk_shape)) * self.dtype.itemsize


class StoreReader:
    """A complete store opened for reading rows and arrays (see the module docstring).

    Parameters
    ----------
    path
        The store (``<slide>-<key>.zarr``).

    Raises
    ------
    CacheError
        Not a store, incomplete, or of another format version.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.attrs: Mapping[str, object] = check_store(self.path, read_attrs(self.path))
        self.slide_name = str(self.attrs.get("slide_name", self.path.name.rsplit("-", 1)[0]))
        self._identity = self._identity_of(self.attrs)
        self._layouts: dict[str, ArrayLayout | None] = {}
        try:
            self._arrays = {p.name for p in self.path.iterdir() if (p / "zarr.json").is_file()}
        except OSError as exc:
            raise self.error(f"cannot be read ({exc.strerror or exc})") from None
        if "features" not in self._arrays:
            raise self.error("has no 'features' array")
        features = self.layout("features")
        shape = features.shape if features is not None else tuple(self._zarr_array("features").shape)
        self.n_patches, self.embedding_dim = int(shape[0]), int(shape[1])
        dtype = features.dtype if features is not None else np.dtype(self._zarr_array("features").dtype)
        #: The dtype the patch embeddings are stored in (read as float32).
        self.dtype = np.dtype(dtype).newbyteorder("=")

    # -- identity and errors ----------------------------------------------------------------
    @staticmethod
    def _identity_of(attrs: Mapping[str, object]) -> tuple[object, ...]:
        return tuple(attrs.get(k) for k in ("cache_key", "created", "completed", "n_patches", "dtype", "complete"))

    def error(self, problem: str) -> CacheError:
        """A one-line :class:`CacheError` naming the slide and the store."""
        return CacheError(f"slide {self.slide_name!r}: embedding cache {self.path} {problem}")

    def check(self) -> None:
        """Raise when the store is gone (deleted or moved) or was replaced since it was opened."""
        attrs = read_attrs(self.path)
        if attrs is None:
            raise self.error("is gone (deleted or moved while in use)")
        if self._identity_of(attrs) != self._identity:
            found = f"{attrs.get('dtype', 'float32')} written {attrs.get('created', '?')}"
            expected = f"{self.attrs.get('dtype', 'float32')} written {self.attrs.get('created', '?')}"
            raise self.error(f"was replaced while in use (now {found}, was {expected}); restart on the new cache")

    # -- arrays -----------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether the store has the array ``name``."""
        return name in self._arrays

    @property
    def array_names(self) -> frozenset[str]:
        """The names of the store's arrays."""
        return frozenset(self._arrays)

    def layout(self, name: str) -> ArrayLayout | None:
        """The direct-read layout of array ``name`` (None: read through zarr)."""
        if name not in self._layouts:
            self._layouts[name] = ArrayLayout.read(self.path / name)
        return self._layouts[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of array ``name``."""
        layout = self.layout(name)
        return layout.shape if layout is not None else tuple(self._zarr_array(name).shape)

    def _zarr_array(self, name: str) -> zarr.Array:
        try:
            array = zarr.open_array(self.path / name, mode="r", zarr_format=3)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise self.error(f"has an unreadable array {name!r} ({type(exc).__name__}: {exc})") from None
        return array

    def _chunk(self, layout: ArrayLayout, index: tuple[int, ...], name: str) -> np.ndarray:
        """One whole chunk, decoded, as an array of ``layout.chunk_shape``."""
        path = layout.chunk_file(index)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if not self.path.is_dir():
                raise self.error("is gone (deleted or moved while in use)") from None
            raise self.error(f"lacks chunk {path.relative_to(self.path)} of {name!r}") from None
        except OSError as exc:
            raise self.error(f"cannot be read ({path.name}: {exc.strerror or exc})") from None
        if layout.compressed:
            try:
                data = Zstd().decode(data)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise self.error(f"has a damaged chunk {path.relative_to(self.path)} of {name!r} ({exc})") from None
        if len(data) != layout.chunk_bytes:
            raise self.error(
                f"has a truncated chunk {path.relative_to(self.path)} of {name!r} "
                f"({len(data)} of {layout.chunk_bytes} bytes)"
            )
        return np.frombuffer(data, dtype=layout.dtype).reshape(layout.chunk_shape)

    def array(self, name: str, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The whole array ``name`` (in ``dtype`` when given).

        Raises
        ------
        CacheError
            The array is missing, or a chunk is missing, truncated or damaged.
        """
        if name not in self._arrays:
            raise self.error(f"has no {name!r} array")
        layout = self.layout(name)
        if layout is None:
            try:
                values = np.asarray(self._zarr_array(name)[...])
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise self.error(f"has an unreadable array {name!r} ({type(exc).__name__}: {exc})") from None
            return values if dtype is None else values.astype(dtype, copy=False)
        out = np.zeros(layout.shape, dtype=layout.dtype.newbyteorder("=") if dtype is None else dtype)
        counts = [-(-s // c) if s else 0 for s, c in zip(layout.shape, layout.chunk_shape)]
        for index in np.ndindex(*counts):
            where = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, layout.chunk_shape, layout.shape))
            chunk = self._chunk(layout, tuple(index), name)
            out[where] = chunk[tuple(slice(0, w.stop - w.start) for w in where)]
        return out

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The float32 patch embeddings of ``rows`` (int indices, any order; repeats allowed).

        Only the bytes of those rows are read when ``features`` is stored uncompressed.

        Raises
        ------
        CacheError
            A row out of range, a missing/truncated chunk, or rows that were never written (NaN).
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_patches):
            raise self.error(f"has no patch {int(rows.max() if rows.max() >= self.n_patches else rows.min())}")
        out = np.zeros((rows.size, self.embedding_dim), dtype=np.float32)
        if rows.size == 0:
            return out
        layout = self.layout("features")
        if layout is None:
            try:
                out[:] = self._zarr_array("features").oindex[rows]
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise self.error(f"has unreadable features ({type(exc).__name__}: {exc})") from None
        elif layout.compressed or len(layout.chunk_shape) != 2 or layout.chunk_shape[1] != self.embedding_dim:
            self._rows_by_chunk(layout, rows, out)
        else:
            self._rows_direct(layout, rows, out)
        if not np.isfinite(out).all():
            bad = int(rows[np.flatnonzero(~np.isfinite(out).all(axis=1))[0]])
            raise self.error(f"holds no finite embedding for patch {bad} (never written, or damaged)")
        return out

    def _rows_by_chunk(self, layout: ArrayLayout, rows: np.ndarray, out: np.ndarray) -> None:
        step = layout.chunk_shape[0]
        chunk_of = rows // step
        for c in np.unique(chunk_of):
            members = np.flatnonzero(chunk_of == c)
            for j in range(-(-self.embedding_dim // layout.chunk_shape[1])):
                block = self._chunk(layout, (int(c), j), "features")
                lo = j * layout.chunk_shape[1]
                hi = min(lo + layout.chunk_shape[1], self.embedding_dim)
                out[members, lo:hi] = block[rows[members] - c * step, : hi - lo]

    def _rows_direct(self, layout: ArrayLayout, rows: np.ndarray, out: np.ndarray) -> None:
        """Read each run of consecutive rows (within one chunk file) with one seek and one read."""
        step = layout.chunk_shape[0]
        row_bytes = self.embedding_dim * layout.dtype.itemsize
        unique, inverse = np.unique(rows, return_inverse=True)
        values = np.zeros((unique.size, self.embedding_dim), dtype=layout.dtype)
        chunk_of = unique // step
        breaks = np.flatnonzero((np.diff(unique) != 1) | (np.diff(chunk_of) != 0)) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        stops = np.concatenate((breaks, [unique.size])).tolist()
        offsets = ((unique - chunk_of * step) * row_bytes).tolist()
        chunks = chunk_of.tolist()
        buffer = values.reshape(-1).view(np.uint8).data
        handle, current = None, -1
        try:
            for a, b in zip(starts, stops):
                chunk = chunks[a]
                if chunk != current or handle is None:
                    if handle is not None:
                        handle.close()
                    path = layout.chunk_file((chunk, 0))
                    handle, current = open(path, "rb"), chunk  # noqa: SIM115 - kept open across this chunk's runs
                handle.seek(offsets[a])
                view = buffer[a * row_bytes : b * row_bytes]
                if handle.readinto(view) != len(view):
                    raise self.error(
                        f"has a truncated chunk {path.relative_to(self.path)} of 'features' "
                        f"(rows {int(unique[a])}..{int(unique[b - 1])} missing)"
                    )
        except FileNotFoundError:
            if not self.path.is_dir():
                raise self.error("is gone (deleted or moved while in use)") from None
            raise self.error(f"lacks chunk {path.relative_to(self.path)} of 'features'") from None
        except OSError as exc:
            raise self.error(f"cannot be read ({path.name}: {exc.strerror or exc})") from None
        finally:
            if handle is not None:
                handle.close()
        out[:] = values[inverse]

    def features(self, *, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Patch embeddings ``start:stop`` as float32, read chunk by chunk into one array.

        Raises
        ------
        CacheError
            A missing/truncated chunk, or rows that were never written (NaN).
        """
        stop = self.n_patches if stop is None else min(int(stop), self.n_patches)
        start = max(0, int(start))
        out = np.zeros((max(0, stop - start), self.embedding_dim), dtype=np.float32)
        if out.shape[0] == 0:
            return out
        layout = self.layout("features")
        if layout is None or len(layout.chunk_shape) != 2 or layout.chunk_shape[1] != self.embedding_dim:
            return self.rows(np.arange(start, stop))
        step = layout.chunk_shape[0]
        for c in range(start // step, -(-stop // step)):
            lo, hi = max(start, c * step), min(stop, (c + 1) * step)
            out[lo - start : hi - start] = self._chunk(layout, (c, 0), "features")[lo - c * step : hi - c * step]
        if not np.isfinite(out).all():
            bad = start + int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise self.error(f"holds no finite embedding for patch {bad} (never written, or damaged)")
        return out

    # -- the whole slide ------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """Provenance for :attr:`SlideEmbeddings.meta` (the attributes in ``META_KEYS``, plus ``cache_path``)."""
        meta: dict[str, Any] = {k: self.attrs[k] for k in META_KEYS if k in self.attrs}
        meta["cache_path"] = str(self.path)
        return meta

    def optional(self, name: str, dtype: np.dtype | type | None = None) -> np.ndarray | None:
        """Array ``name``, or None when the store has none (``coords_px`` of a bag without coordinates: None)."""
        if name == "coords_px" and not self.attrs.get("has_coords", True):
            return None
        return self.array(name, dtype) if name in self._arrays else None

    @property
    def context_names(self) -> tuple[str, ...]:
        """The context embeddings the store lists and holds."""
        listed = self.attrs.get("context", {})
        names = listed if isinstance(listed, dict) else {}
        return tuple(k for k in names if CONTEXT_PREFIX + k in self._arrays)

    def load(self) -> SlideEmbeddings:
        """The whole slide in memory (patch embeddings in the stored dtype, as :func:`load_slide_embeddings`)."""
        raw = self.features() if self.dtype == np.float32 else self.array("features")
        if not np.isfinite(raw).all():
            bad = int(np.flatnonzero(~np.isfinite(raw).all(axis=1))[0])
            raise self.error(f"holds no finite embedding for patch {bad} (never written, or damaged)")
        regional = {p: self.optional(f"region_{p}") for p in _REGIONAL}
        return SlideEmbeddings(
            slide_name=self.slide_name,
            features=raw,
            coords_px=self.optional("coords_px"),
            grid_xy=self.optional("grid_xy"),
            region_index=self.optional("region_index"),
            region_xy=self.optional("region_xy"),
            regional_embeddings={k: v for k, v in regional.items() if v is not None},
            tissue_fraction=self.optional("tissue_fraction"),
            context_embeddings={k: self.array(CONTEXT_PREFIX + k, np.float32) for k in self.context_names},
            meta=self.meta,
        )


def open_store(path: PathLike) -> StoreReader:
    """Open a complete store for reading parts of it (:class:`StoreReader`)."""
    return StoreReader(path)


def load_slide_embeddings(path: PathLike) -> SlideEmbeddings:
    """Load a complete store as :class:`SlideEmbeddings` (``meta`` filled from its attributes).

    The patch embeddings keep the store's dtype (float16 or float32); the first model
    casts them to float32.

    Raises
    ------
    CacheError
        When the store is missing, partial, of another format version, or unreadable
        (a missing, truncated or damaged chunk included).
    """
    return StoreReader(path).load()


def store_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of an open store.

    Raises
    ------
    KeyError
        The store has no array called ``name``.
    """
    arr = group[name]
    if not isinstance(arr, zarr.Array):
        raise KeyError(f"{name!r} is a group, not an array")
    return arr


def read_context_embeddings(group: zarr.Group, attrs: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The listed context arrays of an open store, by name (missing arrays are skipped)."""
    names = set(group.array_keys())
    listed = attrs.get("context", {})
    return {
        key: np.asarray(store_array(group, CONTEXT_PREFIX + key)[...], dtype=np.float32)
        for key in (listed if isinstance(listed, dict) else {})
        if CONTEXT_PREFIX + key in names
    }
