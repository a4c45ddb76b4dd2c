"""Embedding jobs of many slides: the one path the CLI, the cluster, the widgets and the demo share.

This module gathers the public names of the embedding workflows, each defined by concept:

- :mod:`.many_slides`: :func:`embed_slides` embeds slides one after the other in this
  process, or one per task on a dask cluster (``scheduler=``), then adds context
  embeddings (several scales) to every cached slide; a slide that fails becomes a failed
  :class:`SlideSummary` and the others go on (or, with ``on_error="raise"``, stops the job
  with its error); :func:`embed_with_contexts` for one slide.
- :mod:`.cluster`: the cluster side (:func:`embed_on_cluster`, :func:`embed_one` on a worker).
- :mod:`.lookup`: :func:`embeddings_for` finds the cached embeddings of a slide for a trained
  model, or embeds the slide first with the model's encoder and tiling ("find the cache or
  embed").
- :mod:`.folders`: :func:`default_cache_dir` is where a slide's cache goes when the user
  chose none (no zarr: the widgets ask for it on the GUI thread).
- :mod:`.summaries`: :class:`SlideSummary` and :func:`summary_line`.
"""

from __future__ import annotations

from .cluster import embed_on_cluster, embed_one, worker_encoder
from .folders import CACHE_FOLDER, default_cache_dir, user_cache_dir
from .lookup import checkpoint_tiling, embeddings_for
from .many_slides import ContextRequest, embed_slides, embed_with_contexts
from .summaries import SlideSummary, summarise, summary_line

__all__ = [
    "CACHE_FOLDER",
    "ContextRequest",
    "SlideSummary",
    "checkpoint_tiling",
    "default_cache_dir",
    "embed_on_cluster",
    "embed_one",
    "embed_slides",
    "embed_with_contexts",
    "embeddings_for",
    "summarise",
    "summary_line",
    "user_cache_dir",
    "worker_encoder",
]
