"""Several scales ([0224]-[0225]): context embeddings of each region from further encoders.

For every region of a complete embedding cache, :func:`embed_context` reads one larger
patch centred on the region, at ``scale`` times the tiling's microns per pixel (the same
pixel count, so ``scale`` times the footprint), embeds it with a further frozen encoder
and stores the ``(R, D_k)`` result in the same zarr store as the array
``context_<name>``, listed in the store's ``context`` attribute. The array is written
under a temporary name and renamed into place; it is listed only after it landed, so a
cancelled run leaves the cache as it was.
:func:`~napari_regional_mil.embedding.lookup.load_slide_embeddings` returns the listed
arrays as :attr:`SlideEmbeddings.context_embeddings`; the first model attention-pools
each and concatenates it to its global embedding (``ModelConfig.context_dims``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import CacheError
from ..jobs import Progress

__all__ = [
    "ContextResult",
    "context_name",
    "context_requests",
    "describe_context",
    "embed_context",
    "embed_contexts",
    "cached_contexts",
    "read_context_embeddings",
    "context_corners",
]

#: Scale of a context encoder given without one (``--context-scale`` / the Embed widget's default).
DEFAULT_CONTEXT_SCALE = 2.0

_PREFIX = "context_"


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
    region_xy: np.ndarray, *, region_size: int, patch_size_level0: float, scale: float, slide_dimensions: tuple[int, int]
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


def read_context_embeddings(group: Any, attrs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The listed context arrays of an open store, by name (missing arrays are skipped)."""
    names = set(group.array_keys())
    return {
        key: np.asarray(group[_PREFIX + key][...], dtype=np.float32)
        for key in dict(attrs.get("context", {}))
        if _PREFIX + key in names
    }


def cached_contexts(cache_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The context embeddings a store lists (name -> record: encoder, scale, dimension), read from its attributes only."""
    from ..embedding.lookup import _attrs

    path = Path(cache_path)
    listed = dict((_attrs(path) or {}).get("context", {}))
    return {key: dict(record) for key, record in listed.items() if (path / (_PREFIX + key)).is_dir()}


def context_requests(
    encoders: Sequence[Any], scales: Sequence[float] = (), *, device: str = "cpu",
    encoder_options: Sequence[dict[str, Any] | None] | None = None,
) -> list[tuple[Any, float]]:
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
    from ..embedding.pipeline import _resolve_encoder

    scales = [float(s) for s in scales] or [DEFAULT_CONTEXT_SCALE]
    bad = [s for s in scales if not s > 0]
    if bad:
        raise CacheError(f"context scale must be positive, got {bad[0]:g}")
    options = list(encoder_options or [None] * len(encoders))
    return [
        (_resolve_encoder(enc, device, options[i] if i < len(options) else None), scales[min(i, len(scales) - 1)])
        for i, enc in enumerate(encoders)
    ]


def embed_contexts(
    cache_path: str | os.PathLike,
    contexts: Sequence[tuple[Any, float]],
    *,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
) -> Generator[Progress, None, list[ContextResult]]:
    """:func:`embed_context` for each ``(encoder, scale)`` of ``contexts`` in turn (a job).

    ``contexts`` usually comes from :func:`context_requests`. Used by ``napari-regional-mil
    embed --context-encoder`` and by the Embed widget, after the patch embedding.
    """
    results = []
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
    cache_path: str | os.PathLike,
    *,
    encoder: Any,
    scale: float = 2.0,
    name: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    encoder_options: dict[str, Any] | None = None,
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
    from ..embedding.cache import PARTIAL_SUFFIX
    from ..embedding.lookup import _attrs
    from ..embedding.pipeline import _resolve_encoder
    from ..embedding.reader import PatchReader, plan_reads
    from ..slide import open_slide

    started = time.perf_counter()
    path = Path(cache_path)
    attrs = _attrs(path)
    if attrs is None or path.name.endswith(PARTIAL_SUFFIX) or not attrs.get("complete"):
        raise CacheError(f"{path}: not a complete embedding cache; embed the slide first")
    if not scale > 0:
        raise CacheError(f"{path}: context scale must be positive, got {scale}")
    enc = _resolve_encoder(encoder, device, encoder_options)
    key = name or context_name(enc.spec.name, scale)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        raise CacheError(f"{path}: context name {key!r} may hold only letters, digits, '_' and '-'")
    record = {"encoder": enc.spec.name, "encoder_hash": enc.spec.weights_hash, "scale": float(scale)}
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    known = dict(attrs.get("context", {}))
    if _PREFIX + key in set(group.array_keys()) and all(known.get(key, {}).get(k) == v for k, v in record.items()):
        arr = group[_PREFIX + key]
        return ContextResult(key, path, int(arr.shape[0]), int(arr.shape[1]), computed=False)
    region_xy = np.asarray(group["region_xy"][...])
    n = int(region_xy.shape[0])
    slide_path = Path(str(attrs["slide_path"]))
    yield Progress("context", 0, n, f"{attrs.get('slide_name', path.name)}: {key} at {scale:g} x {attrs['target_mpp']} um/px")
    features = np.empty((n, enc.spec.embedding_dim), np.float32)
    with open_slide(slide_path, mpp=attrs.get("slide_mpp")) as slide:
        ps0 = float(attrs["patch_size_level0"])
        corners = context_corners(
            region_xy, region_size=int(attrs["region_size"]), patch_size_level0=ps0, scale=scale,
            slide_dimensions=slide.dimensions,
        )
        plan = plan_reads(
            slide_mpp=slide.mpp, level_downsamples=slide.info.level_downsamples, patch_size=int(attrs["patch_size"]),
            patch_size_level0=scale * ps0, input_size=enc.spec.input_size, encoder_mpp=enc.spec.mpp,
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
    _write(group, path, key, features, {**record, "embedding_dim": int(features.shape[1]), "input_mpp": plan.input_mpp})
    return ContextResult(key, path, n, int(features.shape[1]), computed=True, seconds=time.perf_counter() - started)


def _write(group: Any, path: Path, key: str, features: np.ndarray, record: dict[str, Any]) -> None:
    """Write ``context_<key>`` under a temporary name, rename it into place, then list it."""
    tmp_name = f"{_PREFIX}{key}__partial"
    try:
        shutil.rmtree(path / tmp_name, ignore_errors=True)
        arr = group.create_array(tmp_name, shape=features.shape, chunks=(max(1, len(features)), features.shape[1]), dtype=np.float32)
        arr[...] = features
        listed = dict(group.attrs.get("context", {}))
        if key in listed:  # unlist the old array before replacing it
            listed.pop(key)
            group.attrs["context"] = listed
        shutil.rmtree(path / (_PREFIX + key), ignore_errors=True)
        os.replace(path / tmp_name, path / (_PREFIX + key))
        group.attrs["context"] = {**listed, key: record}
    except OSError as exc:
        shutil.rmtree(path / tmp_name, ignore_errors=True)
        raise CacheError(f"{path}: cannot write context embeddings {key!r} ({exc.strerror or exc})") from None
