"""Embedding: patch reader, pipeline (generator), zarr cache, CLAM/TRIDENT h5, dask cluster.

The API other parts use::

    from ..embedding import embed_slide, find_slide_cache, load_slide_embeddings
    result = run_job(embed_slide("slide.svs", cache_dir="cache"))       # or drive / thread_worker
    emb = load_slide_embeddings(find_slide_cache("cache", "slide"))      # SlideEmbeddings
"""

from ..embedding.cache import FORMAT_VERSION, cache_key, pool_regions
from ..embedding.lookup import (
    CacheInfo,
    cache_status,
    find_slide_cache,
    list_caches,
    load_slide_embeddings,
    write_slide_embeddings,
)
from ..embedding.pipeline import EmbedResult, embed_slide
from ..embedding.types import SlideEmbeddings

__all__ = [
    "FORMAT_VERSION",
    "CacheInfo",
    "EmbedResult",
    "SlideEmbeddings",
    "cache_key",
    "cache_status",
    "embed_slide",
    "find_slide_cache",
    "list_caches",
    "load_slide_embeddings",
    "pool_regions",
    "write_slide_embeddings",
]
