"""The embedding cache: one zarr (v3) store per (slide, tiling, tissue mask, encoder).

Everything about stores lives in this package: the key (:mod:`.keys`, derived in one
place), reading and finding them (:mod:`.reader`, one cache finder), and writing them
(:mod:`.writer`, the per-store lock and the resumable writer), and reading parts of a store
(:mod:`.rows`: single patch rows for streaming, whole slides; :mod:`.lazy`: slides whose
embeddings stay on disk). Other modules import
these public names from ``embedding.store``.

A store is named ``<slide-stem>-<key[:12]>.zarr`` under the cache directory, where the
key (:func:`cache_key`) is the sha256 of the slide's identity (absolute path, size,
mtime and a hash of its first 64 KiB), the tiling parameters, the slide mpp, a user
tissue mask (if any), the encoder's name and weights hash, and :data:`FORMAT_VERSION`.

While being written, a store lives at ``<name>.zarr.partial`` and its writer holds the
lock ``<slide-stem>-<key[:12]>.lock`` (:class:`StoreLock`; a second process embedding the same
slide waits, then reuses the finished store). Patch embeddings are written chunk by
chunk (:data:`CHUNK_ROWS` patches each; zarr writes every chunk and the attributes
through a temp file and a rename) and the attribute ``n_done`` is updated after each
chunk lands, so a run that is cancelled or killed resumes from the last whole chunk. A
partial store that cannot be resumed is reported (one warning line) and rewritten. At the
end the regional embeddings are pooled, ``complete`` is set, and the directory is
renamed to ``<name>.zarr`` with one atomic rename: a store under its final name is
complete, and an incomplete one is never read as complete.

Arrays: ``coords_px`` (N, 2) int64, ``grid_xy`` (N, 2) int32, ``region_index`` (N,)
int32, ``tissue_fraction`` (N,) float32, ``features`` (N, D) float16 or float32 (the
store's ``dtype`` attribute, part of the key; uncompressed so rows can be read alone), ``region_xy``
(R, 2) int32, ``region_mean`` and ``region_max`` (R, D) float32, and per context
encoder ``context_<name>`` (R, D_k) float32, listed in the ``context`` attribute.

The names are resolved on first use (PEP 562): the key, the finder and the listing
(:mod:`.keys`, :mod:`.reader`) read JSON attributes and import no zarr, so listing caches
(the Cohort widget, on the GUI thread) does not import it.
"""

from typing import TYPE_CHECKING, Any

from ...lazy import resolve as _resolve

if TYPE_CHECKING:  # the names below, for type checkers and IDEs
    from .keys import (
        AUTO_FLOAT16_ABOVE,
        DTYPES,
        FORMAT_VERSION,
        LOCK_SUFFIX,
        PARTIAL_SUFFIX,
        StoreLocation,
        cache_key,
        check_dtype,
        import_key,
        locate_store,
        mask_hash,
        resolve_dtype,
        slide_identity,
        store_path,
    )
    from .lazy import (
        LazyEmbeddings,
        RowReader,
        StoredArray,
        StoredEmbeddings,
        StoredFeatures,
    )
    from .reader import (
        CONTEXT_PREFIX,
        META_KEYS,
        CacheInfo,
        cached_contexts,
        find_slide_cache,
        is_complete,
        list_caches,
        read_attrs,
        store_info,
        store_state,
    )
    from .rows import (
        StoreReader,
        load_slide_embeddings,
        open_store,
        read_context_embeddings,
        store_array,
    )
    from .writer import (
        CHUNK_ROWS,
        CacheWriter,
        StoreLock,
        check_writable,
        pool_regions,
        write_slide_embeddings,
    )

#: Public name -> submodule, imported on first use.
_LAZY = {
    "AUTO_FLOAT16_ABOVE": "keys",
    "CHUNK_ROWS": "writer",
    "CONTEXT_PREFIX": "reader",
    "CacheInfo": "reader",
    "CacheWriter": "writer",
    "DTYPES": "keys",
    "FORMAT_VERSION": "keys",
    "LOCK_SUFFIX": "keys",
    "LazyEmbeddings": "lazy",
    "META_KEYS": "reader",
    "PARTIAL_SUFFIX": "keys",
    "RowReader": "lazy",
    "StoreLocation": "keys",
    "StoreLock": "writer",
    "StoreReader": "rows",
    "StoredArray": "lazy",
    "StoredEmbeddings": "lazy",
    "StoredFeatures": "lazy",
    "cache_key": "keys",
    "cached_contexts": "reader",
    "check_dtype": "keys",
    "check_writable": "writer",
    "find_slide_cache": "reader",
    "import_key": "keys",
    "is_complete": "reader",
    "list_caches": "reader",
    "load_slide_embeddings": "rows",
    "locate_store": "keys",
    "mask_hash": "keys",
    "open_store": "rows",
    "pool_regions": "writer",
    "read_attrs": "reader",
    "read_context_embeddings": "rows",
    "resolve_dtype": "keys",
    "slide_identity": "keys",
    "store_array": "rows",
    "store_info": "reader",
    "store_path": "keys",
    "store_state": "reader",
    "write_slide_embeddings": "writer",
}

__all__ = [
    "AUTO_FLOAT16_ABOVE",
    "CHUNK_ROWS",
    "CONTEXT_PREFIX",
    "DTYPES",
    "FORMAT_VERSION",
    "LOCK_SUFFIX",
    "META_KEYS",
    "PARTIAL_SUFFIX",
    "CacheInfo",
    "CacheWriter",
    "LazyEmbeddings",
    "RowReader",
    "StoreLocation",
    "StoreLock",
    "StoreReader",
    "StoredArray",
    "StoredEmbeddings",
    "StoredFeatures",
    "cache_key",
    "cached_contexts",
    "check_dtype",
    "check_writable",
    "find_slide_cache",
    "import_key",
    "is_complete",
    "list_caches",
    "load_slide_embeddings",
    "locate_store",
    "mask_hash",
    "open_store",
    "pool_regions",
    "read_attrs",
    "read_context_embeddings",
    "resolve_dtype",
    "slide_identity",
    "store_array",
    "store_info",
    "store_path",
    "store_state",
    "write_slide_embeddings",
]


def __getattr__(name: str) -> Any:
    return _resolve(__name__, _LAZY, globals(), name)
