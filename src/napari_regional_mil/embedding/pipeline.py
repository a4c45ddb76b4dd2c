"""Embedding one slide: the second model's job, as a resumable, cancellable generator.

:func:`embed_slide` opens the slide, finds its tissue (or takes a given mask), tiles it,
reads the kept patches in a thread pool (:mod:`.reader`), runs the frozen encoder on
batches under ``torch.inference_mode()`` while the next batches are being read, writes
the patch embeddings chunk by chunk into the cache (:mod:`.cache`), pools regional
embeddings (mean, max) and marks the cache complete. A complete cache is returned at
once; a partial one is resumed from its last whole chunk.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.cache import (
    CHUNK_ROWS,
    FORMAT_VERSION,
    CacheWriter,
    cache_key,
    check_writable,
    store_path,
)
from ..embedding.reader import PatchReader, plan_reads
from ..errors import TilingError
from ..jobs import Progress
from ..tiling import TilingParams

__all__ = ["EmbedResult", "embed_slide", "resolve_store"]


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


def _mask_hash(mask: Any) -> str | None:
    if mask is None:
        return None
    arr = np.ascontiguousarray(np.asarray(getattr(mask, "mask", mask)))
    digest = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    digest.update(arr.tobytes())
    for attr in ("downsample", "mpp", "level"):
        if hasattr(mask, attr):
            digest.update(f"{attr}={getattr(mask, attr)}".encode())
    return digest.hexdigest()


def _resolve_encoder(encoder: Any, device: str, options: dict[str, Any] | None) -> Any:
    from ..encoders import FrozenEncoder, load_encoder

    if isinstance(encoder, FrozenEncoder):
        return encoder
    return load_encoder(encoder, device=device, **(options or {}))


def resolve_store(
    cache_dir: str | Path,
    slide_path: str | Path,
    *,
    tiling_params: TilingParams | None = None,
    encoder: Any = "builtin-he",
    mpp: float | None = None,
    tissue_mask: Any = None,
    device: str = "cpu",
    encoder_options: dict[str, Any] | None = None,
) -> tuple[Path, str, Any]:
    """The final store path, cache key and encoder of a (slide, tiling, encoder)."""
    from ..slide import open_slide

    params = tiling_params or TilingParams()
    enc = _resolve_encoder(encoder, device, encoder_options)
    with open_slide(slide_path, mpp=mpp) as slide:
        slide_mpp = slide.mpp
    key = cache_key(
        slide_path, tiling_params=params, slide_mpp=slide_mpp, encoder_name=enc.spec.name,
        encoder_hash=enc.spec.weights_hash, mask_hash=_mask_hash(tissue_mask),
    )
    return store_path(cache_dir, Path(slide_path).stem, key), key, enc


def _versions() -> dict[str, str]:
    import torch
    import zarr

    from .. import __version__

    return {"napari_regional_mil": __version__, "torch": torch.__version__, "zarr": zarr.__version__, "numpy": np.__version__}


def embed_slide(
    slide_path: str | Path,
    *,
    cache_dir: str | Path,
    tiling_params: TilingParams | None = None,
    encoder: Any = "builtin-he",
    batch_size: int = 64,
    device: str = "cpu",
    num_readers: int = 2,
    prefetch_batches: int = 4,
    mpp: float | None = None,
    tissue_mask: Any = None,
    encoder_options: dict[str, Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
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
    from ..slide import open_slide

    t_start = time.perf_counter()
    params = tiling_params or TilingParams()
    enc = _resolve_encoder(encoder, device, encoder_options)
    spec = enc.spec
    slide_path = Path(slide_path)
    name = slide_path.stem
    with open_slide(slide_path, mpp=mpp) as slide:
        key = cache_key(
            slide_path, tiling_params=params, slide_mpp=slide.mpp, encoder_name=spec.name,
            encoder_hash=spec.weights_hash, mask_hash=_mask_hash(tissue_mask),
        )
        final = store_path(cache_dir, name, key)
        if (final / "zarr.json").exists():
            from ..embedding.lookup import _info

            info = _info(final)
            if info is not None and info.complete:
                return EmbedResult(
                    name, final, info.n_patches, _n_regions(final), info.embedding_dim, spec.name, computed=False,
                    seconds=time.perf_counter() - t_start,
                )
        check_writable(cache_dir)
        yield Progress("embed", 0, 0, message=f"{name}: finding tissue")
        tiling = _tile(slide, params, tissue_mask, slide_path)
        n = tiling.n_patches
        check_writable(cache_dir, min_free_bytes=int(n * spec.embedding_dim * 4 * 2.2) + (8 << 20))
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
            "format_version": FORMAT_VERSION, "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        patch_arrays = {
            "coords_px": tiling.coords_px.astype(np.int64), "grid_xy": tiling.grid_xy.astype(np.int32),
            "region_index": tiling.region_index.astype(np.int32),
            "tissue_fraction": tiling.tissue_fraction.astype(np.float32),
        }
        writer = CacheWriter.open(
            final, key=key, patch_arrays=patch_arrays, region_xy=tiling.region_xy.astype(np.int32),
            embedding_dim=spec.embedding_dim, attrs=attrs, chunk_rows=chunk_rows,
        )
        resumed = writer.n_done
        reader = PatchReader(
            slide, tiling.coords_px, plan, num_threads=num_readers, batch_size=batch_size, prefetch_batches=prefetch_batches
        )
        what = f"{name}: {spec.name} at {plan.input_mpp:.2f} um/px, level {plan.level}"
        yield Progress("embed", resumed, n, message=what + (f" (resuming at {resumed})" if resumed else ""))
        t0 = time.perf_counter()
        batches = reader.batches(start=writer.n_done)
        try:
            for first, patches in batches:
                writer.append(enc.embed(patches).cpu().numpy())
                done = first + len(patches)
                yield Progress("embed", done, n, message=what, rate=(done - resumed) / max(time.perf_counter() - t0, 1e-9))
        finally:
            batches.close()
        seconds = time.perf_counter() - t0
        yield Progress("embed", n, n, message=f"{name}: pooling {tiling.n_regions} regional embeddings")
        path = writer.finish(extra_attrs={"seconds": round(seconds, 3)})
    return EmbedResult(
        name, path, n, tiling.n_regions, spec.embedding_dim, spec.name, computed=True, resumed_from=resumed,
        seconds=time.perf_counter() - t_start, rate=(n - resumed) / max(seconds, 1e-9),
    )


def _tile(slide: Any, params: TilingParams, tissue_mask: Any, slide_path: Path) -> Any:
    from ..tiling import tile_slide

    width, height = slide.dimensions
    side = params.patch_size * params.target_mpp / slide.mpp
    if width < side or height < side:
        raise TilingError(
            f"{slide_path}: the slide ({width} x {height} px) is smaller than one patch "
            f"({side:.0f} px at level 0 for {params.patch_size} px at {params.target_mpp} um/px)"
        )
    if tissue_mask is None:
        from ..tissue import detect_tissue

        tissue_mask = detect_tissue(slide)
    tiling = tile_slide(slide, tissue_mask, params)
    if tiling.n_patches == 0:
        raise TilingError(
            f"{slide_path}: no tissue patches (no patch reaches tissue fraction {params.tissue_threshold}); "
            "check the slide, lower the tissue threshold, or paint a tissue mask"
        )
    return tiling


def _n_regions(path: Path) -> int:
    from ..embedding.lookup import _attrs

    return int((_attrs(path) or {}).get("n_regions", 0))
