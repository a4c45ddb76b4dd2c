"""Embedding: patch reader, pipeline (generator), the store (zarr cache), CLAM/TRIDENT h5, dask cluster.

The API other parts use::

    from napari_regional_mil.embedding import embed_slide, find_slide_cache, load_slide_embeddings
    result = run_job(embed_slide("slide.svs", cache_dir="cache"))       # or drive / thread_worker
    emb = load_slide_embeddings(find_slide_cache("cache", "slide"))      # SlideEmbeddings

Many slides (locally or on a dask cluster, with context encoders), "find the cache or
embed" for a trained model, and the default cache folder are in :mod:`.workflow`.
Everything about stores (key, lock, writer, finder) is in :mod:`.store`.

The names are resolved on first use (PEP 562): importing a light submodule (the PCA
colours, the embedding types) does not import zarr, so a widget that needs only those
opens without it.
"""

from typing import TYPE_CHECKING, Any

from ..lazy import resolve as _resolve

if TYPE_CHECKING:  # the names below, for type checkers and IDEs
    from .pipeline import EmbedResult, cache_status, embed_slide, slide_store
    from .store import (
        FORMAT_VERSION,
        CacheInfo,
        cache_key,
        find_slide_cache,
        list_caches,
        load_slide_embeddings,
        pool_regions,
        write_slide_embeddings,
    )
    from .types import SlideEmbeddings
    from .workflow import SlideSummary, default_cache_dir, embed_slides, embeddings_for

#: Public name -> submodule, imported on first use.
_LAZY = {
    "EmbedResult": "pipeline",
    "cache_status": "pipeline",
    "embed_slide": "pipeline",
    "slide_store": "pipeline",
    "FORMAT_VERSION": "store",
    "CacheInfo": "store",
    "cache_key": "store",
    "find_slide_cache": "store",
    "list_caches": "store",
    "load_slide_embeddings": "store",
    "pool_regions": "store",
    "write_slide_embeddings": "store",
    "SlideEmbeddings": "types",
    "SlideSummary": "workflow",
    "default_cache_dir": "workflow",
    "embed_slides": "workflow",
    "embeddings_for": "workflow",
}

__all__ = [
    "FORMAT_VERSION",
    "CacheInfo",
    "EmbedResult",
    "SlideEmbeddings",
    "SlideSummary",
    "cache_key",
    "cache_status",
    "default_cache_dir",
    "embed_slide",
    "embed_slides",
    "embeddings_for",
    "find_slide_cache",
    "list_caches",
    "load_slide_embeddings",
    "pool_regions",
    "slide_store",
    "write_slide_embeddings",
]


def __getattr__(name: str) -> Any:
    return _resolve(__name__, _LAZY, globals(), name)
