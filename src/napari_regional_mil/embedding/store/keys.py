"""Where a store lives: the cache key (derived here and nowhere else) and the store's paths."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...errors import CacheError
from ...tiling import TilingParams
from ...tissue import TissueMask

__all__ = [
    "AUTO_FLOAT16_ABOVE",
    "DTYPES",
    "FORMAT_VERSION",
    "LOCK_SUFFIX",
    "PARTIAL_SUFFIX",
    "StoreLocation",
    "cache_key",
    "check_dtype",
    "import_key",
    "locate_store",
    "mask_hash",
    "resolve_dtype",
    "slide_identity",
    "store_path",
]

#: Version of the store layout; a store of another version is not read (embed again).
FORMAT_VERSION = 1
#: Suffix of a store being written (``<name>.zarr.partial``).
PARTIAL_SUFFIX = ".partial"
#: Suffix of a store's lock file (``<slide-stem>-<key[:12]>.lock``, beside the store), held while it is written.
LOCK_SUFFIX = ".lock"
_HEAD_BYTES = 64 * 1024
#: The dtypes a store may hold its patch embeddings in (computed in float32 either way).
DTYPES = ("float16", "float32")
#: ``dtype="auto"`` stores float16 for encoders wider than this many dimensions, float32 otherwise.
AUTO_FLOAT16_ABOVE = 512

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class StoreLocation:
    """The store of one (slide, tiling, tissue mask, encoder) combination.

    Parameters
    ----------
    key
        The cache key (sha256 hex, :func:`cache_key`).
    path
        The complete store's path, ``<cache_dir>/<slide-stem>-<key[:12]>.zarr``.
    """

    key: str
    path: Path

    @property
    def partial(self) -> Path:
        """Where the store is while being written (``<path>.partial``)."""
        return self.path.with_name(self.path.name + PARTIAL_SUFFIX)

    @property
    def lock(self) -> Path:
        """The store's lock file (``<slide-stem>-<key[:12]>.lock``; not ``*.zarr*``, so never taken for a store)."""
        return self.path.with_suffix(LOCK_SUFFIX)


def slide_identity(slide_path: PathLike) -> dict[str, str | int]:
    """What identifies a slide file: absolute path, size, mtime_ns, sha256 of its first 64 KiB.

    Raises
    ------
    CacheError
        The file cannot be read.
    """
    path = Path(slide_path).expanduser().resolve()
    try:
        stat = path.stat()
        with open(path, "rb") as fh:
            head = hashlib.sha256(fh.read(_HEAD_BYTES)).hexdigest()
    except OSError as exc:
        raise CacheError(f"{path}: cannot read the slide file ({exc.strerror or exc})") from None
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


def mask_hash(mask: TissueMask | np.ndarray | None) -> str | None:
    """The sha256 of a user's tissue mask (its pixels, shape, dtype and placement), or None."""
    if mask is None:
        return None
    pixels = mask.mask if isinstance(mask, TissueMask) else mask
    arr = np.ascontiguousarray(np.asarray(pixels))
    digest = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    digest.update(arr.tobytes())
    for attr in ("downsample", "mpp", "level"):
        if hasattr(mask, attr):
            digest.update(f"{attr}={getattr(mask, attr)}".encode())
    return digest.hexdigest()


def _sha256_json(record: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cache_key(
    slide_path: PathLike,
    *,
    tiling_params: TilingParams,
    slide_mpp: float,
    encoder_name: str,
    encoder_hash: str,
    mask_hash: str | None = None,
    dtype: str = "float32",
    tissue: Mapping[str, object] | None = None,
) -> str:
    """The cache key (sha256 hex) of a (slide, tiling, tissue mask, encoder, dtype) combination.

    It covers the slide's identity (:func:`slide_identity`), the tiling parameters, the
    slide mpp, a user tissue mask (its :func:`mask_hash`), the encoder's name and
    weights hash, the dtype of the stored patch embeddings (:data:`DTYPES`) and
    :data:`FORMAT_VERSION`. A float32 store keeps the key it had before the dtype was a
    choice (the dtype enters the key only when it is not float32), so existing caches stay valid.
    ``tissue`` describes how a non-default tissue mask was made (detection options, the use
    of annotations: :meth:`~napari_regional_mil.tissue_source.TissueSource.key_record`);
    with the mask's own hash it records the mask used. It enters the key only when given.
    """
    record: dict[str, object] = {
        "slide": slide_identity(slide_path),
        "tiling": asdict(tiling_params),
        "slide_mpp": round(float(slide_mpp), 6),
        "mask": mask_hash,
        "encoder": {"name": encoder_name, "weights_hash": encoder_hash},
        "format_version": FORMAT_VERSION,
    }
    if check_dtype(dtype) != "float32":
        record["dtype"] = dtype
    if tissue is not None:
        record["tissue"] = dict(tissue)
    return _sha256_json(record)


def resolve_dtype(dtype: str, embedding_dim: int) -> str:
    """The stored dtype for ``dtype`` (``"auto"``, ``"float16"`` or ``"float32"``) and an encoder's width.

    ``"auto"`` is float16 for encoders wider than :data:`AUTO_FLOAT16_ABOVE` dimensions
    (UNI, CONCH, Virchow, H-optimus: the caches that get large) and float32 otherwise.

    Raises
    ------
    ValueError
        Another dtype.
    """
    if dtype == "auto":
        return "float16" if int(embedding_dim) > AUTO_FLOAT16_ABOVE else "float32"
    return check_dtype(dtype)


def check_dtype(dtype: str) -> str:
    """``dtype`` when it is one of :data:`DTYPES`; ``ValueError`` naming the choices otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown cache dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return dtype


def import_key(h5_path: PathLike, *, region_size: int, patch_size_level0: float | None, encoder: str | None) -> str:
    """The cache key of features imported from a CLAM/TRIDENT ``.h5`` file (``import-h5``)."""
    return _sha256_json({
        "h5": slide_identity(h5_path),
        "region_size": region_size,
        "side": patch_size_level0,
        "encoder": encoder,
        "format_version": FORMAT_VERSION,
    })


def store_path(cache_dir: PathLike, slide_name: str, key: str) -> Path:
    """Final path of the store: ``<cache_dir>/<slide-stem>-<key[:12]>.zarr``."""
    return Path(cache_dir) / f"{slide_name}-{key[:12]}.zarr"


def locate_store(
    cache_dir: PathLike,
    slide_path: PathLike,
    *,
    tiling_params: TilingParams,
    slide_mpp: float,
    encoder_name: str,
    encoder_hash: str,
    tissue_mask: TissueMask | np.ndarray | None = None,
    dtype: str = "float32",
    tissue: Mapping[str, object] | None = None,
) -> StoreLocation:
    """The key and paths of the store of this slide, tiling, tissue mask (and how it was made), encoder and dtype."""
    key = cache_key(
        slide_path, tiling_params=tiling_params, slide_mpp=slide_mpp, encoder_name=encoder_name,
        encoder_hash=encoder_hash, mask_hash=mask_hash(tissue_mask), dtype=dtype, tissue=tissue,
    )
    return StoreLocation(key, store_path(cache_dir, Path(slide_path).stem, key))
