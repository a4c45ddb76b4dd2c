"""Embedding one slide: the second model's job, as a resumable, cancellable generator.

:func:`embed_slide` opens the slide, finds its tissue (or takes a given mask), tiles it,
reads the kept patches in a thread pool (:mod:`.reader`), runs the frozen encoder on
batches under ``torch.inference_mode()`` while the next batches are being read, writes
the patch embeddings chunk by chunk into the cache (:mod:`.cache`), pools regional
embeddings (mean, max) and marks the cache complete. A complete cache is returned at
once; a partial one is resumed from its last whole chunk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import zarr

from .. import __version__
from ..errors import TilingError
from ..jobs import Progress
from ..slide import Slide, open_slide
from ..tiling import Tiling, TilingParams, tile_slide
from ..tissue import TissueMask, detect_tissue
from ..tissue_source import TissueSource
from .reader import PatchReader, plan_reads
from .store import (
    CHUNK_ROWS,
    FORMAT_VERSION,
    CacheWriter,
    StoreLocation,
    StoreLock,
    check_writable,
    locate_store,
    resolve_dtype,
    store_info,
    store_state,
)

if TYPE_CHECKING:
    from ..encoders import EncoderLike, FrozenEncoder

__all__ = ["EmbedResult", "cache_status", "embed_slide", "load_encoder_for", "slide_store"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_slide` returns.

    Parameters
    ----------
    slide_name
        File stem of the slide.
    cache_path
        The complete store.
    n_patches, n_regions, embedding_dim
        Sizes of what was cached.
    encoder
        Encoder name.
    computed
        False when a complete cache was found and nothing was computed.
    resumed_from
        Patches already cached by an earlier, interrupted run (0 when fresh).
    seconds
        Wall time of this call.
    rate
        Patches embedded per second in this call (0 when nothing was computed).
    n_damaged
        Tissue patches that could not be read (damaged tiles) and were left out of the
        store (``n_patches`` counts the others).
    """

    slide_name: str
    cache_path: Path
    n_patches: int
    n_regions: int
    embedding_dim: int
    encoder: str
    computed: bool
    resumed_from: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    n_damaged: int = 0


def load_encoder_for(
    encoder: EncoderLike, *, device: str = "cpu", options: Mapping[str, object] | None = None
) -> FrozenEncoder:
    """:func:`~napari_regional_mil.encoders.resolve_encoder`, imported when first needed.

    The import is function-local so that ``import napari_regional_mil.embedding`` (reading
    caches: the CLI's ``--help``, prediction from caches) does not import torch.
    """
    from ..encoders import resolve_encoder  # lazy: torch (embedding is imported without torch; the encoders are torch)

    return resolve_encoder(encoder, device=device, options=options)


def slide_store(
    cache_dir: PathLike,
    slide_path: PathLike,
    *,
    tiling_params: TilingParams | None = None,
    encoder: EncoderLike = "builtin-he",
    mpp: float | None = None,
    tissue_mask: TissueMask | np.ndarray | None = None,
    device: str = "cpu",
    encoder_options: Mapping[str, object] | None = None,
    dtype: str = "auto",
) -> StoreLocation:
    """Where the store of this (slide, tiling, tissue mask, encoder, dtype) is, complete or not."""
    enc = load_encoder_for(encoder, device=device, options=encoder_options)
    with open_slide(slide_path, mpp=mpp) as slide:
        slide_mpp = slide.mpp
    return locate_store(
        cache_dir, slide_path, tiling_params=tiling_params or TilingParams(), slide_mpp=slide_mpp,
        encoder_name=enc.spec.name, encoder_hash=enc.spec.weights_hash, tissue_mask=tissue_mask,
        dtype=resolve_dtype(dtype, enc.spec.embedding_dim),
    )


def cache_status(
    cache_dir: PathLike,
    slide_path: PathLike,
    tiling_params: TilingParams | None,
    encoder: EncoderLike,
    *,
    mpp: float | None = None,
    tissue_mask: TissueMask | np.ndarray | None = None,
    dtype: str = "auto",
) -> Literal["complete", "partial", "missing"]:
    """``"complete"``, ``"partial"`` or ``"missing"``: the state of this (slide, tiling, encoder, dtype) store."""
    location = slide_store(cache_dir, slide_path, tiling_params=tiling_params, encoder=encoder, mpp=mpp,
                           tissue_mask=tissue_mask, dtype=dtype)
    return store_state(location)


def _wait_for_lock(lock: StoreLock, name: str) -> Generator[Progress, None, None]:
    """Take the store's lock, yielding while another writer holds it (so the wait can be cancelled)."""
    while not lock.acquire(timeout=0.5):
        yield Progress("embed", 0, 0, message=f"{name}: waiting for another process writing this cache")


def _versions() -> dict[str, str]:
    import torch  # lazy: torch (loaded already: the encoder that ran is a torch module)

    return {
        "napari_regional_mil": __version__, "torch": torch.__version__,
        "zarr": zarr.__version__, "numpy": np.__version__,
    }


def embed_slide(
    slide_path: PathLike,
    *,
    cache_dir: PathLike,
    tiling_params: TilingParams | None = None,
    encoder: EncoderLike = "builtin-he",
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    prefetch_batches: int = 4,
    mpp: float | None = None,
    tissue_mask: TissueMask | np.ndarray | None = None,
    encoder_options: Mapping[str, object] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    dtype: str = "auto",
    tissue: TissueSource | None = None,
) -> Generator[Progress, None, EmbedResult]:
    """Embed one slide into the cache (a job generator; see :mod:`napari_regional_mil.jobs`).

    Parameters
    ----------
    slide_path
        The slide file.
    cache_dir
        Cache directory (created if needed).
    tiling_params
        Patch size, target mpp, region size, tissue threshold (defaults: 256 px at
        0.5 um/px, 8 x 8 regions, 0.5).
    encoder
        A registered name, a file path, ``timm:...``, or a loaded
        :class:`~napari_regional_mil.encoders.FrozenEncoder`.
    batch_size
        Patches per encoder forward pass.
    device
        ``"cpu"`` or ``"cuda[:i]"`` (when ``encoder`` is a name).
    num_readers
        Reader threads (each with its own slide handle).
    prefetch_batches
        Batches read ahead of the encoder at most (bounds memory).
    mpp
        Level-0 microns per pixel when the slide lacks it (or to override it).
    tissue_mask
        A tissue mask to use instead of tissue detection (e.g. painted by the user);
        it is part of the cache key.
    encoder_options
        Options for :func:`~napari_regional_mil.encoders.load_encoder` (e.g. ``weights``).
    chunk_rows
        Patches per cache chunk: the unit of resumption after a kill.
    dtype
        How the patch embeddings are stored: ``"float16"`` (half the disk and memory),
        ``"float32"``, or ``"auto"``: float16 for encoders wider than 512 dimensions (see
        :func:`~napari_regional_mil.embedding.store.resolve_dtype`). They are computed in
        float32 either way, and the regional embeddings are pooled and stored in float32.
        The dtype is part of the cache key.
    tissue
        How to make the tissue mask when ``tissue_mask`` is not given: detection options,
        a mask file, QuPath annotations (:class:`~napari_regional_mil.tissue_source.TissueSource`).
        A non-default source is resolved before the cache is looked up: the mask it gives
        and how it was made are part of the cache key.

    Yields
    ------
    Progress
        ``stage="embed"``, ``done``/``total`` patches, ``rate`` patches/s.

    Returns
    -------
    EmbedResult
        Where the complete store is, and what was done.

    Raises
    ------
    SlideError, TilingError, EncoderError, CacheError
        Unreadable slide, no tissue patches or a slide smaller than one patch, bad
        encoder, unwritable cache directory. Nothing incomplete is ever marked complete.
    """
    t_start = time.perf_counter()
    params = tiling_params or TilingParams()
    enc = load_encoder_for(encoder, device=device, options=encoder_options)
    stored = resolve_dtype(dtype, enc.spec.embedding_dim)
    slide_path = Path(slide_path)
    name = slide_path.stem
    with open_slide(slide_path, mpp=mpp) as slide:
        recipe = None
        if tissue_mask is None and tissue is not None and not tissue.is_default:
            yield Progress("embed", 0, 0, message=f"{name}: making the tissue mask")
            tissue_mask, recipe = tissue.resolve(slide), tissue
        location = locate_store(
            cache_dir, slide_path, tiling_params=params, slide_mpp=slide.mpp, encoder_name=enc.spec.name,
            encoder_hash=enc.spec.weights_hash, tissue_mask=tissue_mask, dtype=stored,
            tissue=recipe.key_record() if recipe is not None else None,
        )
        found = _complete_result(location, name, enc.spec.name, t_start)
        if found is not None:
            return found
        check_writable(cache_dir)
        yield Progress("embed", 0, 0, message=f"{name}: finding tissue")
        tiling = _tile(slide, params, tissue_mask, slide_path)
        needed = int(tiling.n_patches * enc.spec.embedding_dim * np.dtype(stored).itemsize * 2.2) + (8 << 20)
        check_writable(cache_dir, min_free_bytes=needed)
        lock = StoreLock(location)  # taken once there is something to write (a bad slide leaves no lock file)
        yield from _wait_for_lock(lock, name)
        try:
            found = _complete_result(location, name, enc.spec.name, t_start)  # another writer finished it
            if found is not None:
                return found
            return (yield from _embed_locked(
                slide, enc, location, params, tiling, tissue_mask=tissue_mask, tissue=recipe, batch_size=batch_size,
                num_readers=num_readers, prefetch_batches=prefetch_batches, chunk_rows=chunk_rows, t_start=t_start,
                dtype=stored,
            ))
        finally:
            lock.release()


def _complete_result(location: StoreLocation, name: str, encoder: str, t_start: float) -> EmbedResult | None:
    """The result for a complete store at ``location`` (nothing computed), or None."""
    info = store_info(location.path)
    if info is None or not info.complete:
        return None
    return EmbedResult(
        name, location.path, info.n_patches, info.n_regions, info.embedding_dim, encoder, computed=False,
        seconds=time.perf_counter() - t_start,
    )


def _embed_locked(
    slide: Slide,
    enc: FrozenEncoder,
    location: StoreLocation,
    params: TilingParams,
    tiling: Tiling,
    *,
    tissue_mask: TissueMask | np.ndarray | None,
    tissue: TissueSource | None,
    batch_size: int,
    num_readers: int,
    prefetch_batches: int,
    chunk_rows: int,
    t_start: float,
    dtype: str,
) -> Generator[Progress, None, EmbedResult]:
    """Read, embed and write one slide's store, holding its lock."""
    spec = enc.spec
    slide_path = slide.path
    name = slide_path.stem
    n = tiling.n_patches
    plan = plan_reads(
        slide_mpp=slide.mpp, level_downsamples=slide.info.level_downsamples, patch_size=params.patch_size,
        patch_size_level0=tiling.patch_size_level0, input_size=spec.input_size, encoder_mpp=spec.mpp,
    )
    attrs = {
        "slide_name": name, "slide_path": str(slide_path.resolve()), "slide_mpp": float(slide.mpp),
        "slide_dimensions": list(tiling.slide_dimensions), "target_mpp": params.target_mpp,
        "patch_size": params.patch_size, "patch_size_level0": float(tiling.patch_size_level0),
        "region_size": params.region_size, "tissue_threshold": params.tissue_threshold,
        "tiling_params": asdict(params), "grid_shape": list(tiling.grid_shape), "n_patches": n,
        "n_regions": tiling.n_regions, "encoder": spec.name, "encoder_hash": spec.weights_hash,
        "encoder_spec": spec.to_json(), "embedding_dim": spec.embedding_dim, "input_size": plan.out_size,
        "input_mpp": plan.input_mpp, "read_level": plan.level, "user_tissue_mask": tissue_mask is not None,
        "tissue_source": tissue.describe() if tissue is not None else None,
        "format_version": FORMAT_VERSION, "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    patch_arrays: dict[str, np.ndarray] = {
        "coords_px": tiling.coords_px.astype(np.int64), "grid_xy": tiling.grid_xy.astype(np.int32),
        "region_index": tiling.region_index.astype(np.int32),
        "tissue_fraction": tiling.tissue_fraction.astype(np.float32),
    }
    writer = CacheWriter.open(
        location.path, key=location.key, patch_arrays=patch_arrays, region_xy=tiling.region_xy.astype(np.int32),
        embedding_dim=spec.embedding_dim, attrs=attrs, chunk_rows=chunk_rows, dtype=dtype,
    )
    if writer.discarded:
        yield Progress("embed", 0, n, message=writer.discarded)
    resumed = writer.n_done
    reader = PatchReader(
        slide, tiling.coords_px, plan, num_threads=num_readers, batch_size=batch_size, prefetch_batches=prefetch_batches
    )
    what = f"{name}: {spec.name} at {plan.input_mpp:.2f} um/px, level {plan.level}, stored as {dtype}"
    yield Progress("embed", resumed, n, message=what + (f" (resuming at {resumed})" if resumed else ""))
    t0 = time.perf_counter()
    batches = reader.batches(start=writer.n_done)
    try:
        for first, patches in batches:
            features = enc.embed(patches).cpu().numpy()
            damaged = reader.damaged_in(first, first + len(patches))
            if damaged.any():  # unreadable patches: NaN rows, dropped by finish (never a zero embedding)
                features = np.array(features, dtype=np.float32)
                features[damaged] = np.nan
            writer.append(features, damaged=(first + np.flatnonzero(damaged)).tolist())
            done = first + len(patches)
            yield Progress("embed", done, n, message=what, rate=(done - resumed) / max(time.perf_counter() - t0, 1e-9))
    finally:
        batches.close()
    seconds = time.perf_counter() - t0
    yield Progress("embed", n, n, message=f"{name}: pooling {tiling.n_regions} regional embeddings")
    path = writer.finish(extra_attrs={"seconds": round(seconds, 3)})
    info = store_info(path)
    return EmbedResult(
        name, path, info.n_patches if info else n, info.n_regions if info else tiling.n_regions, spec.embedding_dim,
        spec.name, computed=True, resumed_from=resumed, seconds=time.perf_counter() - t_start,
        rate=(n - resumed) / max(seconds, 1e-9), n_damaged=writer.n_damaged,
    )


def _tile(slide: Slide, params: TilingParams, tissue_mask: TissueMask | np.ndarray | None, slide_path: Path) -> Tiling:
    width, height = slide.dimensions
    side = params.patch_size * params.target_mpp / slide.mpp
    if width < side or height < side:
        raise TilingError(
            f"{slide_path}: the slide ({width} x {height} px) is smaller than one patch "
            f"({side:.0f} px at level 0 for {params.patch_size} px at {params.target_mpp} um/px)"
        )
    tiling = tile_slide(slide, detect_tissue(slide) if tissue_mask is None else tissue_mask, params)
    if tiling.n_patches == 0:
        raise TilingError(
            f"{slide_path}: no tissue patches (no patch reaches tissue fraction {params.tissue_threshold}); "
            "check the slide, lower the tissue threshold, or paint a tissue mask"
        )
    return tiling
