"""Reading stores: attributes, the one cache finder, listing, and a store's state (loading: :mod:`.rows`).

Everything here reads a store's JSON attributes and its folder names, never its arrays, so
this module does not import zarr (the Cohort widget lists caches on the GUI thread).
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from ...errors import CacheError, MissingCacheError
from ...slide.formats import SLIDE_SUFFIXES
from ...tiling import TilingParams
from .keys import PARTIAL_SUFFIX, PathLike, StoreLocation

if TYPE_CHECKING:
    from ...encoders import EncoderSpec, FrozenEncoder

__all__ = [
    "CONTEXT_PREFIX",
    "META_KEYS",
    "CacheInfo",
    "cached_contexts",
    "find_slide_cache",
    "is_complete",
    "list_caches",
    "read_attrs",
    "store_info",
    "store_state",
]

#: Prefix of the context-embedding arrays in a store (``context_<name>``).
CONTEXT_PREFIX = "context_"

#: The store attributes copied into :attr:`SlideEmbeddings.meta`.
META_KEYS = (
    "slide_path", "slide_mpp", "target_mpp", "patch_size", "patch_size_level0", "region_size", "tissue_threshold",
    "encoder", "encoder_hash", "embedding_dim", "format_version", "cache_key", "input_size", "input_mpp", "read_level",
    "grid_shape", "slide_dimensions", "created", "versions", "source", "dtype", "n_damaged", "damaged_coords_px",
)

_SLIDE_SUFFIXES = frozenset(SLIDE_SUFFIXES) | {".h5"}  # the one slide list and TRIDENT/CLAM h5 files


@dataclass(frozen=True)
class CacheInfo:
    """One store in a cache directory (complete or partial), from its attributes only."""

    path: Path
    slide_name: str
    slide_path: str
    encoder: str
    encoder_hash: str
    embedding_dim: int
    n_patches: int
    n_regions: int
    n_done: int
    complete: bool
    patch_size: int | None
    target_mpp: float | None
    region_size: int | None
    created: str
    dtype: str = "float32"


def read_attrs(path: PathLike) -> dict[str, object] | None:
    """A store's attributes (its ``zarr.json``), or None when it has none or they are unreadable."""
    try:
        attrs = json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) else None


def is_complete(path: PathLike) -> bool:
    """Whether ``path`` is a complete store (under its final name, marked complete)."""
    return not str(path).endswith(PARTIAL_SUFFIX) and bool((read_attrs(path) or {}).get("complete"))


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value) if isinstance(value, (int, float, str)) else default
    except ValueError:
        return default


def store_info(path: PathLike) -> CacheInfo | None:
    """The :class:`CacheInfo` of a store, or None when ``path`` is not one."""
    path = Path(path)
    a = read_attrs(path)
    if a is None or "cache_key" not in a:
        return None
    patch_size, target_mpp, region_size = a.get("patch_size"), a.get("target_mpp"), a.get("region_size")
    return CacheInfo(
        path=path, slide_name=str(a.get("slide_name", "")), slide_path=str(a.get("slide_path", "")),
        encoder=str(a.get("encoder", "")), encoder_hash=str(a.get("encoder_hash", "")),
        embedding_dim=_int(a.get("embedding_dim")), n_patches=_int(a.get("n_patches")),
        n_regions=_int(a.get("n_regions")), n_done=_int(a.get("n_done")),
        complete=bool(a.get("complete")) and not path.name.endswith(PARTIAL_SUFFIX),
        patch_size=int(patch_size) if isinstance(patch_size, (int, float)) else None,
        target_mpp=float(target_mpp) if isinstance(target_mpp, (int, float)) else None,
        region_size=int(region_size) if isinstance(region_size, (int, float)) else None,
        created=str(a.get("created", "")), dtype=str(a.get("dtype", "float32")),
    )


def list_caches(cache_dir: PathLike, *, pattern: str = "*") -> list[CacheInfo]:
    """Every store (complete and partial) in ``cache_dir``, sorted by slide name then creation."""
    cache_dir = Path(cache_dir)
    paths = [*cache_dir.glob(f"{pattern}.zarr"), *cache_dir.glob(f"{pattern}.zarr{PARTIAL_SUFFIX}")]
    infos = [i for i in map(store_info, sorted(paths)) if i is not None]
    return sorted(infos, key=lambda i: (i.slide_name, i.created))


def _encoder_matches(info: CacheInfo, encoder: str | FrozenEncoder | EncoderSpec | None) -> bool:
    if encoder is None:
        return True
    if isinstance(encoder, str):
        prefix = len(encoder) >= 8 and info.encoder_hash.startswith(encoder)
        return encoder in (info.encoder, info.encoder_hash) or prefix
    spec = cast("EncoderSpec", getattr(encoder, "spec", encoder))  # a FrozenEncoder's spec, or the spec itself
    return info.encoder == spec.name and info.encoder_hash == spec.weights_hash


def _encoder_label(encoder: str | FrozenEncoder | EncoderSpec) -> str:
    if isinstance(encoder, str):
        return encoder
    return str(getattr(getattr(encoder, "spec", encoder), "name", encoder))


def find_slide_cache(
    cache_dir: PathLike,
    slide: PathLike,
    *,
    encoder: str | FrozenEncoder | EncoderSpec | None = None,
    tiling_params: TilingParams | None = None,
) -> Path:
    """The complete store of one slide: the one cache finder.

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
    MissingCacheError
        When no complete store matches (partial ones are mentioned).
    CacheError
        When several match with different encoders or tilings (the message lists them).
    """
    cache_dir = Path(cache_dir)
    name = Path(str(slide)).name
    here = Path(str(slide)).exists()
    stem = Path(name).stem if Path(name).suffix.lower() in _SLIDE_SUFFIXES or here else name
    infos = [i for i in list_caches(cache_dir, pattern=f"{glob.escape(stem)}-*") if i.slide_name == stem]
    infos = [i for i in infos if _encoder_matches(i, encoder)]
    if tiling_params is not None:
        infos = [
            i for i in infos
            if (i.patch_size, i.region_size) == (tiling_params.patch_size, tiling_params.region_size)
            and i.target_mpp is not None and abs(i.target_mpp - tiling_params.target_mpp) < 1e-9
        ]
    complete = [i for i in infos if i.complete]
    if here:  # prefer the stores of this very file
        resolved = str(Path(str(slide)).resolve())
        complete = [i for i in complete if i.slide_path == resolved] or complete
    if not complete:
        hint = f" ({len(infos)} incomplete: run embed again to resume)" if infos else ""
        what = f" with encoder {_encoder_label(encoder)}" if encoder is not None else ""
        raise MissingCacheError(f"{cache_dir}: no complete embedding cache for slide {stem}{what}{hint}")
    kinds = {(i.encoder, i.encoder_hash, i.patch_size, i.target_mpp, i.region_size) for i in complete}
    if len(kinds) > 1:
        listed = "; ".join(sorted({f"{i.encoder} patch {i.patch_size}@{i.target_mpp} k={i.region_size}"
                                   for i in complete}))
        raise CacheError(
            f"{cache_dir}: {len(complete)} caches for slide {stem} ({listed}): choose with encoder=/tiling_params="
        )
    return max(complete, key=lambda i: i.created).path  # the newest (older ones: earlier file versions)


def cached_contexts(path: PathLike) -> dict[str, dict[str, object]]:
    """The context embeddings a store lists (name -> record: encoder, scale, dimension), from its attributes only."""
    path = Path(path)
    listed = (read_attrs(path) or {}).get("context", {})
    return {
        key: dict(record) for key, record in (listed if isinstance(listed, dict) else {}).items()
        if (path / (CONTEXT_PREFIX + key)).is_dir()
    }


def store_state(location: StoreLocation) -> Literal["complete", "partial", "missing"]:
    """``"complete"``, ``"partial"`` or ``"missing"``: the state of the store at ``location``."""
    if is_complete(location.path):
        return "complete"
    if location.partial.exists():
        return "partial"
    return "missing"
