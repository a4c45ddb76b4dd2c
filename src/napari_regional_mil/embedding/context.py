"""Several scales ([0224]-[0225]): context embeddings of each region from further encoders.

For every region of a complete embedding cache, :func:`embed_context` reads one larger
patch centred on the region, at ``scale`` times the tiling's microns per pixel (the same
pixel count, so ``scale`` times the footprint), embeds it with a further frozen encoder
and stores the ``(R, D_k)`` result in the same zarr store as the array
``context_<name>``, listed in the store's ``context`` attribute. The array is written
under a temporary name and renamed into place; it is listed only after it landed, so a
cancelled run leaves the cache as it was.
:func:`~napari_regional_mil.embedding.store.load_slide_embeddings` returns the listed
arrays as :attr:`SlideEmbeddings.context_embeddings`; the first model attention-pools
each and concatenates it to its global embedding (``ModelConfig.context_dims``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from ..atomic import replace
from ..errors import CacheError
from ..jobs import Progress
from ..slide import open_slide
from .pipeline import load_encoder_for
from .reader import PatchReader, plan_reads
from .store import (
    CONTEXT_PREFIX,
    PARTIAL_SUFFIX,
    StoreLocation,
    StoreLock,
    cached_contexts,
    read_attrs,
    store_array,
)

if TYPE_CHECKING:
    from ..encoders import EncoderLike, FrozenEncoder

__all__ = [
    "ContextResult",
    "cached_contexts",
    "context_corners",
    "context_name",
    "context_requests",
    "describe_context",
    "embed_context",
    "embed_contexts",
]

#: Scale of a context encoder given without one (``--context-scale`` / the Embed widget's default).
DEFAULT_CONTEXT_SCALE = 2.0


@dataclass(frozen=True)
class ContextResult:
    """What :func:`embed_context` returns.

    Parameters
    ----------
    name
        Key of the context embeddings (``SlideEmbeddings.context_embeddings[name]``).
    cache_path
        The store.
    n_regions, embedding_dim
        Shape of the array.
    computed
        False when the store already held them for this encoder and scale.
    seconds
        Wall time.
    """

    name: str
    cache_path: Path
    n_regions: int
    embedding_dim: int
    computed: bool
    seconds: float = 0.0


def context_name(encoder_name: str, scale: float) -> str:
    """Default key: ``<encoder>_x<scale>`` with characters other than ``[A-Za-z0-9_-]`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{encoder_name}_x{scale:g}")


def context_corners(
    region_xy: np.ndarray,
    *,
    region_size: int,
    patch_size_level0: float,
    scale: float,
    slide_dimensions: tuple[int, int],
) -> np.ndarray:
    """Level-0 top-left ``(x, y)`` of the context patch of each region.

    The context patch is ``scale * patch_size_level0`` level-0 px wide, centred on the
    region's cell (``region_size`` x ``region_size`` patches), shifted inside the slide.
    """
    side = scale * patch_size_level0
    centre = (np.asarray(region_xy, np.float64) + 0.5) * region_size * patch_size_level0
    corner = np.round(centre - side / 2)
    width, height = slide_dimensions
    corner[:, 0] = np.clip(corner[:, 0], 0, max(0.0, width - side))
    corner[:, 1] = np.clip(corner[:, 1], 0, max(0.0, height - side))
    return corner.astype(np.int64)


def context_requests(
    encoders: Sequence[EncoderLike], scales: Sequence[float] = (), *, device: str = "cpu",
    encoder_options: Sequence[Mapping[str, object] | None] | None = None,
) -> list[tuple[FrozenEncoder, float]]:
    """Load each context encoder once and pair it with its scale.

    Parameters
    ----------
    encoders
        Registered names, files, or loaded ``FrozenEncoder`` objects.
    scales
        One per encoder; a shorter list repeats its last value, an empty one means
        :data:`DEFAULT_CONTEXT_SCALE` (as ``--context-scale``).
    device
        Where the encoders run.
    encoder_options
        Loading options per encoder (e.g. ``{"weights": path}``), or None.

    Raises
    ------
    CacheError
        A scale that is not positive.
    EncoderError
        An encoder that cannot be loaded.
    """
    scales = [float(s) for s in scales] or [DEFAULT_CONTEXT_SCALE]
    bad = [s for s in scales if not s > 0]
    if bad:
        raise CacheError(f"context scale must be positive, got {bad[0]:g}")
    options = list(encoder_options or [None] * len(encoders))
    return [
        (
            load_encoder_for(enc, device=device, options=options[i] if i < len(options) else None),
            scales[min(i, len(scales) - 1)],
        )
        for i, enc in enumerate(encoders)
    ]


def embed_contexts(
    cache_path: str | os.PathLike[str],
    contexts: Sequence[tuple[EncoderLike, float]],
    *,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
) -> Generator[Progress, None, list[ContextResult]]:
    """:func:`embed_context` for each ``(encoder, scale)`` of ``contexts`` in turn (a job).

    ``contexts`` usually comes from :func:`context_requests`. Used by ``napari-regional-mil
    embed --context-encoder`` and by the Embed widget, after the patch embedding.
    """
    results: list[ContextResult] = []
    for encoder, scale in contexts:
        results.append((yield from embed_context(
            cache_path, encoder=encoder, scale=scale, batch_size=batch_size, device=device, num_readers=num_readers,
        )))
    return results


def describe_context(result: ContextResult) -> str:
    """One line: ``context <name> (<R> regions x <D>)``, ``(cached)`` when nothing was computed."""
    return f"context {result.name} ({result.n_regions} regions x {result.embedding_dim})" + (
        "" if result.computed else " (cached)"
    )


def embed_context(
    cache_path: str | os.PathLike[str],
    *,
    encoder: EncoderLike,
    scale: float = DEFAULT_CONTEXT_SCALE,
    name: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    encoder_options: Mapping[str, object] | None = None,
) -> Generator[Progress, None, ContextResult]:
    """Add context embeddings of every region to a complete cache (a job).

    Parameters
    ----------
    cache_path
        A complete store made by :func:`~napari_regional_mil.embedding.embed_slide`.
    encoder
        The further encoder: a registered name, a file, or a loaded ``FrozenEncoder``.
    scale
        The context patch is read at ``scale`` x the tiling's um/px (2 or 4 typically),
        centred on each region.
    name
        Key of the embeddings (default :func:`context_name`).
    batch_size, device, num_readers, encoder_options
        As for ``embed_slide``.

    Raises
    ------
    CacheError
        The store is missing, incomplete, or cannot be written.
    SlideError
        The slide it was made from cannot be read.
    """
    started = time.perf_counter()
    path = Path(cache_path)
    attrs = read_attrs(path)
    if attrs is None or path.name.endswith(PARTIAL_SUFFIX) or not attrs.get("complete"):
        raise CacheError(f"{path}: not a complete embedding cache; embed the slide first")
    if not scale > 0:
        raise CacheError(f"{path}: context scale must be positive, got {scale}")
    enc = load_encoder_for(encoder, device=device, options=encoder_options)
    key = name or context_name(enc.spec.name, scale)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        raise CacheError(f"{path}: context name {key!r} may hold only letters, digits, '_' and '-'")
    record: dict[str, object] = {"encoder": enc.spec.name, "encoder_hash": enc.spec.weights_hash, "scale": float(scale)}
    lock = StoreLock(StoreLocation(str(attrs.get("cache_key", "")), path))
    while not lock.acquire(timeout=0.5):
        yield Progress("context", 0, 0, f"{path.name}: waiting for another process writing this cache")
    try:
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        known = cached_contexts(path)
        same = all(known.get(key, {}).get(k) == v for k, v in record.items())
        if CONTEXT_PREFIX + key in set(group.array_keys()) and same:
            arr = store_array(group, CONTEXT_PREFIX + key)
            return ContextResult(key, path, int(arr.shape[0]), int(arr.shape[1]), computed=False)
        features, input_mpp = yield from _embed_regions(path, attrs, group, enc, key, scale, batch_size, num_readers)
        _write(group, path, key, features, {**record, "embedding_dim": int(features.shape[1]), "input_mpp": input_mpp})
    finally:
        lock.release()
    seconds = time.perf_counter() - started
    return ContextResult(key, path, len(features), int(features.shape[1]), computed=True, seconds=seconds)


def _embed_regions(
    path: Path,
    attrs: Mapping[str, object],
    group: zarr.Group,
    enc: FrozenEncoder,
    key: str,
    scale: float,
    batch_size: int,
    num_readers: int,
) -> Generator[Progress, None, tuple[np.ndarray, float]]:
    """The context embedding of every region (``(R, D)``) and the mpp it was read at."""
    region_xy = np.asarray(store_array(group, "region_xy")[...])
    n = int(region_xy.shape[0])
    slide_path = Path(str(attrs["slide_path"]))
    target_mpp = attrs["target_mpp"]
    yield Progress("context", 0, n, f"{attrs.get('slide_name', path.name)}: {key} at {scale:g} x {target_mpp} um/px")
    features = np.full((n, enc.spec.embedding_dim), np.nan, np.float32)
    slide_mpp = attrs.get("slide_mpp")
    with open_slide(slide_path, mpp=float(slide_mpp) if isinstance(slide_mpp, (int, float)) else None) as slide:
        ps0 = float(str(attrs["patch_size_level0"]))
        corners = context_corners(
            region_xy, region_size=int(str(attrs["region_size"])), patch_size_level0=ps0, scale=scale,
            slide_dimensions=slide.dimensions,
        )
        plan = plan_reads(
            slide_mpp=slide.mpp, level_downsamples=slide.info.level_downsamples,
            patch_size=int(str(attrs["patch_size"])), patch_size_level0=scale * ps0,
            input_size=enc.spec.input_size, encoder_mpp=enc.spec.mpp,
        )
        batches = PatchReader(slide, corners, plan, num_threads=num_readers, batch_size=batch_size).batches()
        t0 = time.perf_counter()
        try:
            for first, patches in batches:
                features[first : first + len(patches)] = enc.embed(patches).cpu().numpy()
                done = first + len(patches)
                yield Progress("context", done, n, f"context {key}", rate=done / max(time.perf_counter() - t0, 1e-9))
        finally:
            batches.close()
    return features, plan.input_mpp


def _write(group: zarr.Group, path: Path, key: str, features: np.ndarray, record: dict[str, Any]) -> None:
    """Write ``context_<key>`` under a temporary name, rename it into place, then list it."""
    tmp_name = f"{CONTEXT_PREFIX}{key}__partial"
    try:
        shutil.rmtree(path / tmp_name, ignore_errors=True)
        chunks = (max(1, len(features)), features.shape[1])
        arr = group.create_array(tmp_name, shape=features.shape, chunks=chunks, dtype=np.float32)
        arr[...] = features
        known = group.attrs.get("context", {})
        listed: dict[str, Any] = dict(known) if isinstance(known, Mapping) else {}
        if key in listed:  # unlist the old array before replacing it
            listed.pop(key)
            group.attrs["context"] = listed
        shutil.rmtree(path / (CONTEXT_PREFIX + key), ignore_errors=True)
        replace(path / tmp_name, path / (CONTEXT_PREFIX + key))
        group.attrs["context"] = {**listed, key: record}
    except OSError as exc:
        shutil.rmtree(path / tmp_name, ignore_errors=True)
        raise CacheError(f"{path}: cannot write context embeddings {key!r} ({exc.strerror or exc})") from None
