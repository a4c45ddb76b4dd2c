"""Reading the embedding cache: find a slide's store, load it, list and check stores."""

from __future__ import annotations

import glob
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..embedding.cache import FORMAT_VERSION, PARTIAL_SUFFIX, CacheWriter, check_writable, store_path
from ..embedding.context import read_context_embeddings
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError
from ..slide.formats import SLIDE_SUFFIXES

__all__ = ["CacheInfo", "list_caches", "find_slide_cache", "load_slide_embeddings", "write_slide_embeddings", "cache_status"]

_META_KEYS = (
    "slide_path", "slide_mpp", "target_mpp", "patch_size", "patch_size_level0", "region_size", "tissue_threshold",
    "encoder", "encoder_hash", "embedding_dim", "format_version", "cache_key", "input_size", "input_mpp", "read_level",
    "grid_shape", "slide_dimensions", "created", "versions", "source",
)


@dataclass(frozen=True)
class CacheInfo:
    """One store in a cache directory (complete or partial)."""

    path: Path
    slide_name: str
    slide_path: str
    encoder: str
    encoder_hash: str
    embedding_dim: int
    n_patches: int
    n_done: int
    complete: bool
    patch_size: int | None
    target_mpp: float | None
    region_size: int | None
    created: str


def _attrs(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None


def _info(path: Path) -> CacheInfo | None:
    a = _attrs(path)
    if a is None or "cache_key" not in a:
        return None
    complete = bool(a.get("complete")) and not path.name.endswith(PARTIAL_SUFFIX)
    return CacheInfo(
        path=path, slide_name=str(a.get("slide_name", "")), slide_path=str(a.get("slide_path", "")),
        encoder=str(a.get("encoder", "")), encoder_hash=str(a.get("encoder_hash", "")),
        embedding_dim=int(a.get("embedding_dim", 0)), n_patches=int(a.get("n_patches", 0)),
        n_done=int(a.get("n_done", 0)), complete=complete, patch_size=a.get("patch_size"),
        target_mpp=a.get("target_mpp"), region_size=a.get("region_size"), created=str(a.get("created", "")),
    )


def list_caches(cache_dir: str | Path, *, pattern: str = "*") -> list[CacheInfo]:
    """Every store (complete and partial) in ``cache_dir``, sorted by slide name then creation."""
    cache_dir = Path(cache_dir)
    paths = [*cache_dir.glob(f"{pattern}.zarr"), *cache_dir.glob(f"{pattern}.zarr{PARTIAL_SUFFIX}")]
    infos = [i for i in map(_info, sorted(paths)) if i is not None]
    return sorted(infos, key=lambda i: (i.slide_name, i.created))


def _encoder_matches(info: CacheInfo, encoder: Any) -> bool:
    if encoder is None:
        return True
    spec = getattr(encoder, "spec", encoder)
    if isinstance(encoder, str):
        return encoder in (info.encoder, info.encoder_hash) or (len(encoder) >= 8 and info.encoder_hash.startswith(encoder))
    return info.encoder == spec.name and info.encoder_hash == spec.weights_hash


def find_slide_cache(
    cache_dir: str | Path, slide: str | Path, *, encoder: Any = None, tiling_params: Any = None
) -> Path:
    """The complete store of one slide.

    Parameters
    ----------
    cache_dir
        The cache directory.
    slide
        The slide's path, file name or stem (as the cohort CSV names it).
    encoder
        Only stores of this encoder: a name, a weights-hash prefix, a
        :class:`~napari_regional_mil.encoders.FrozenEncoder` or its spec.
    tiling_params
        Only stores with this patch size, target mpp and region size.

    Raises
    ------
    CacheError
        When no complete store matches (partial ones are mentioned), or several do
        with different encoders or tilings (the message lists them).
    """
    cache_dir = Path(cache_dir)
    name = Path(str(slide)).name
    stem = Path(name).stem if Path(name).suffix.lower() in _SLIDE_SUFFIXES or Path(str(slide)).exists() else name
    infos = [i for i in list_caches(cache_dir, pattern=f"{glob.escape(stem)}-*") if i.slide_name == stem]
    infos = [i for i in infos if _encoder_matches(i, encoder)]
    if tiling_params is not None:
        infos = [
            i for i in infos
            if (i.patch_size, i.region_size) == (tiling_params.patch_size, tiling_params.region_size)
            and i.target_mpp is not None and abs(i.target_mpp - tiling_params.target_mpp) < 1e-9
        ]
    complete = [i for i in infos if i.complete]
    if Path(str(slide)).exists():  # prefer the stores of this very file
        here = str(Path(str(slide)).resolve())
        complete = [i for i in complete if i.slide_path == here] or complete
    if not complete:
        partial = len(infos)
        hint = f" ({partial} incomplete: run embed again to resume)" if partial else ""
        what = f" with encoder {getattr(getattr(encoder, 'spec', encoder), 'name', encoder)}" if encoder is not None else ""
        raise CacheError(f"{cache_dir}: no complete embedding cache for slide {stem}{what}{hint}")
    kinds = {(i.encoder, i.encoder_hash, i.patch_size, i.target_mpp, i.region_size) for i in complete}
    if len(kinds) > 1:
        listed = "; ".join(sorted({f"{i.encoder} patch {i.patch_size}@{i.target_mpp} k={i.region_size}" for i in complete}))
        raise CacheError(f"{cache_dir}: {len(complete)} caches for slide {stem} ({listed}): choose with encoder=/tiling_params=")
    return max(complete, key=lambda i: i.created).path  # the newest (older ones: earlier file versions)


_SLIDE_SUFFIXES = frozenset(SLIDE_SUFFIXES) | {".h5"}  # the one slide list and TRIDENT/CLAM h5 files


def load_slide_embeddings(path: str | Path) -> SlideEmbeddings:
    """Load a complete store as :class:`SlideEmbeddings` (``meta`` filled from its attributes).

    Raises
    ------
    CacheError
        When the store is missing, partial, of another format version, or unreadable.
    """
    path = Path(path)
    attrs = _attrs(path)
    if attrs is None:
        raise CacheError(f"{path}: not an embedding cache")
    if path.name.endswith(PARTIAL_SUFFIX) or not attrs.get("complete"):
        raise CacheError(f"{path}: the cache is incomplete ({attrs.get('n_done', 0)}/{attrs.get('n_patches', '?')} patches); run embed again to resume")
    if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
        raise CacheError(f"{path}: cache format {attrs.get('format_version')} is not {FORMAT_VERSION}; embed again")
    try:
        group = zarr.open_group(path, mode="r", zarr_format=3)
        names = set(group.array_keys())

        def get(name: str) -> np.ndarray | None:
            return group[name][...] if name in names else None

        regional = {p: get(f"region_{p}") for p in ("mean", "max")}
        meta = {k: attrs[k] for k in _META_KEYS if k in attrs}
        meta["cache_path"] = str(path)
        return SlideEmbeddings(
            slide_name=str(attrs.get("slide_name", path.name.rsplit("-", 1)[0])),
            features=group["features"][...],
            coords_px=get("coords_px") if attrs.get("has_coords", True) else None,
            grid_xy=get("grid_xy"),
            region_index=get("region_index"),
            region_xy=get("region_xy"),
            regional_embeddings={k: v for k, v in regional.items() if v is not None},
            tissue_fraction=get("tissue_fraction"),
            context_embeddings=read_context_embeddings(group, attrs),
            meta=meta,
        )
    except (OSError, KeyError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable embedding cache ({type(exc).__name__}: {exc})") from None


def write_slide_embeddings(cache_dir: str | Path, emb: SlideEmbeddings, *, key: str, attrs: dict[str, Any] | None = None) -> Path:
    """Write ``emb`` (e.g. imported from h5) as a complete store; returns its path.

    The store is built under ``.partial`` and renamed into place; regional embeddings are
    pooled (mean, max) when the bag has regions.
    """
    check_writable(cache_dir)
    n = emb.n_patches
    arrays: dict[str, np.ndarray] = {"coords_px": np.zeros((n, 2), np.int64) if emb.coords_px is None else emb.coords_px.astype(np.int64)}
    if emb.has_regions:
        arrays["grid_xy"] = emb.grid_xy.astype(np.int32)
        arrays["region_index"] = emb.region_index.astype(np.int32)
    if emb.tissue_fraction is not None:
        arrays["tissue_fraction"] = emb.tissue_fraction.astype(np.float32)
    region_xy = emb.region_xy.astype(np.int32) if emb.has_regions else None
    meta = {k: v for k, v in emb.meta.items() if k in _META_KEYS and k != "cache_key"}
    base = {
        **meta, "slide_name": emb.slide_name, "n_patches": n, "embedding_dim": emb.embedding_dim,
        "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "has_coords": emb.coords_px is not None, **(attrs or {}),
    }
    final = store_path(cache_dir, emb.slide_name, key)
    writer = CacheWriter.open(final, key=key, patch_arrays=arrays, region_xy=region_xy, embedding_dim=emb.embedding_dim, attrs=base)
    if n:
        writer.append(emb.features)
    return writer.finish()


def cache_status(
    cache_dir: str | Path, slide_path: str | Path, tiling_params: Any, encoder: Any, *, mpp: float | None = None,
    tissue_mask: Any = None,
) -> str:
    """``"complete"``, ``"partial"`` or ``"missing"``: the state of this (slide, tiling, encoder) store."""
    from ..embedding.pipeline import resolve_store

    final = resolve_store(cache_dir, slide_path, tiling_params=tiling_params, encoder=encoder, mpp=mpp, tissue_mask=tissue_mask)[0]
    if final.exists() and (_attrs(final) or {}).get("complete"):
        return "complete"
    if final.with_name(final.name + PARTIAL_SUFFIX).exists():
        return "partial"
    return "missing"
