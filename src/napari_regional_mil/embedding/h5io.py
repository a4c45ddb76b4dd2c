"""Patch features in the CLAM / TRIDENT h5 layout: export ours, import theirs.

The layout both tools write (one file per slide)::

    coords    (N, 2) int   level-0 (x, y) top-left of each patch
              attrs: patch_size, patch_level, downsample (CLAM) or
                     patch_size, patch_size_level0, level0_magnification,
                     target_magnification, overlap, name (TRIDENT)
    features  (N, D) float patch embeddings

:func:`export_h5` writes both sets of ``coords`` attributes (level-0 coordinates, so
``patch_level`` is 0), and our extras (``grid_xy``, ``region_index``, ``region_xy``,
``region_mean``, ``region_max`` and provenance attributes) which other tools ignore.
:func:`import_h5` reads any of them as :class:`SlideEmbeddings`: with coordinates and a
known patch size the patch grid and the regions are rebuilt (grid cell = coordinate /
level-0 patch side, the architecture's convention); without coordinates the result is a
bag without regions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import CacheError
from .store import pool_regions
from .types import SlideEmbeddings

__all__ = ["export_h5", "import_h5", "regions_from_grid"]

# the optional arrays of an h5 bag, read when present
_EXTRAS = ("grid_xy", "region_index", "region_xy", "region_mean", "region_max", "tissue_fraction")


def regions_from_grid(grid_xy: np.ndarray, region_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Region of each patch: ``(region_index (N,), region_xy (R, 2))``, regions row-major."""
    cells = np.asarray(grid_xy, dtype=np.int64) // int(region_size)
    width = int(cells[:, 0].max()) + 1 if len(cells) else 1
    flat = cells[:, 1] * width + cells[:, 0]
    uniq, index = np.unique(flat, return_inverse=True)
    region_xy = np.stack([uniq % width, uniq // width], axis=1).astype(np.int32)
    return index.astype(np.int32), region_xy


def export_h5(emb: SlideEmbeddings, path: str | Path, *, include_regions: bool = True) -> Path:
    """Write ``emb`` as a CLAM/TRIDENT-style h5 file (atomically).

    Parameters
    ----------
    emb
        Embeddings with coordinates (a bag without coordinates gets ``features`` only).
    path
        Output ``.h5`` file.
    include_regions
        Also write our grid/region datasets (ignored by CLAM and TRIDENT).
    """
    path = Path(path)
    meta = emb.meta
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
            feats = fh.create_dataset("features", data=np.asarray(emb.features, np.float32))
            for key in ("encoder", "encoder_hash", "embedding_dim"):
                if key in meta:
                    feats.attrs[key] = meta[key]
            if emb.coords_px is not None:
                coords = fh.create_dataset("coords", data=np.asarray(emb.coords_px, np.int64))
                _coords_attrs(coords.attrs, emb)
            grid_xy, region_index, region_xy = emb.grid_xy, emb.region_index, emb.region_xy
            if include_regions and emb.has_regions and (
                grid_xy is not None and region_index is not None and region_xy is not None
            ):
                fh.create_dataset("grid_xy", data=grid_xy.astype(np.int32))
                fh.create_dataset("region_index", data=region_index.astype(np.int32))
                fh.create_dataset("region_xy", data=region_xy.astype(np.int32))
                for pool, values in emb.regional_embeddings.items():
                    fh.create_dataset(f"region_{pool}", data=np.asarray(values, np.float32))
            if emb.tissue_fraction is not None:
                fh.create_dataset("tissue_fraction", data=np.asarray(emb.tissue_fraction, np.float32))
            fh.attrs["slide_name"] = emb.slide_name
            fh.attrs["written_by"] = "napari-regional-mil"
    except OSError as exc:
        raise CacheError(f"{path}: cannot write h5 ({exc})") from None
    return path


def _coords_attrs(attrs: h5py.AttributeManager, emb: SlideEmbeddings) -> None:
    meta = emb.meta
    side0 = meta.get("patch_size_level0")
    if side0 is not None:
        attrs["patch_size_level0"] = round(float(side0))  # TRIDENT writes an int
        attrs["patch_size_level0_exact"] = float(side0)  # ours: the grid step, not rounded
        attrs["patch_level"] = 0  # CLAM: coordinates and patch_size at level 0
        attrs["downsample"] = np.array([1.0, 1.0])
    if "patch_size" in meta:
        attrs["patch_size"] = int(meta["patch_size"])  # TRIDENT: px at the target magnification
    if "slide_mpp" in meta:
        attrs["level0_magnification"] = round(10.0 / float(meta["slide_mpp"]), 3)
        attrs["slide_mpp"] = float(meta["slide_mpp"])
    if "target_mpp" in meta:
        attrs["target_magnification"] = round(10.0 / float(meta["target_mpp"]), 3)
        attrs["target_mpp"] = float(meta["target_mpp"])
    if "region_size" in meta:
        attrs["region_size"] = int(meta["region_size"])
    attrs["overlap"] = 0
    attrs["name"] = emb.slide_name


def _patch_side_level0(attrs: dict[str, Any], coords: np.ndarray) -> float | None:
    for key in ("patch_size_level0_exact", "patch_size_level0"):
        if key in attrs:
            return float(attrs[key])
    if "patch_size" in attrs and "downsample" in attrs:  # CLAM: patch_size at patch_level
        return float(attrs["patch_size"]) * float(np.ravel(attrs["downsample"])[0])
    if "patch_size" in attrs and "level0_magnification" in attrs and "target_magnification" in attrs:
        return float(attrs["patch_size"]) * float(attrs["level0_magnification"]) / float(attrs["target_magnification"])
    if len(coords) > 1:  # the smallest spacing of the coordinates
        steps = np.concatenate([np.diff(np.unique(coords[:, 0])), np.diff(np.unique(coords[:, 1]))])
        steps = steps[steps > 0]
        if len(steps):
            return float(steps.min())
    return None


def import_h5(
    path: str | Path,
    *,
    slide_name: str | None = None,
    patch_size_level0: float | None = None,
    region_size: int = 8,
    encoder_name: str | None = None,
) -> SlideEmbeddings:
    """Read a CLAM/TRIDENT (or our) h5 file as :class:`SlideEmbeddings`.

    Parameters
    ----------
    path
        The h5 file.
    slide_name
        Defaults to the file stem.
    patch_size_level0
        Patch side in level-0 px when the file does not say (else taken from its
        attributes, or from the spacing of the coordinates).
    region_size
        k for the rebuilt regions (k x k patches), unless the file stores regions.
    encoder_name
        Recorded in ``meta["encoder"]`` (default: the file's, or ``"imported"``).

    Raises
    ------
    CacheError
        Not an h5 file, no ``features``, or ``coords`` that do not match it.
    """
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(f"{path}: not a readable h5 file ({exc})") from None
    with fh:
        if "features" not in fh:
            raise CacheError(f"{path}: no 'features' dataset (found: {', '.join(fh.keys()) or 'nothing'})")
        features = np.asarray(fh["features"][...], np.float32)
        if features.ndim == 3 and features.shape[0] == 1:  # some tools store (1, N, D)
            features = features[0]
        if features.ndim != 2:
            raise CacheError(f"{path}: 'features' has shape {features.shape}, expected (N, D)")
        feat_attrs = dict(fh["features"].attrs)
        meta: dict[str, Any] = {
            "source": str(path.resolve()),
            "encoder": encoder_name or str(feat_attrs.get("encoder", "imported")),
        }
        if "encoder_hash" in feat_attrs:
            meta["encoder_hash"] = str(feat_attrs["encoder_hash"])
        meta["embedding_dim"] = int(features.shape[1])
        name = slide_name or str(fh.attrs.get("slide_name", path.stem))
        if "coords" not in fh:
            return SlideEmbeddings(slide_name=name, features=features, meta=meta)
        coords = np.asarray(fh["coords"][...])
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        if coords.shape != (len(features), 2):
            raise CacheError(f"{path}: 'coords' has shape {coords.shape}, expected ({len(features)}, 2)")
        coords = coords.astype(np.int64)
        attrs = dict(fh["coords"].attrs)
        extras = {k: np.asarray(fh[k][...]) for k in _EXTRAS if k in fh}
    for key in ("patch_size", "slide_mpp", "target_mpp", "region_size"):
        if key in attrs:
            meta[key] = attrs[key].item() if hasattr(attrs[key], "item") else attrs[key]
    side = patch_size_level0 or _patch_side_level0(attrs, coords)
    tissue = extras.get("tissue_fraction")
    order = np.lexsort((coords[:, 0], coords[:, 1]))  # row-major, as the architecture orders patches
    if "grid_xy" in extras and "region_index" in extras and "region_xy" in extras:
        return SlideEmbeddings(
            slide_name=name, features=features, coords_px=coords, grid_xy=extras["grid_xy"].astype(np.int32),
            region_index=extras["region_index"].astype(np.int32), region_xy=extras["region_xy"].astype(np.int32),
            regional_embeddings={
                p: extras[f"region_{p}"].astype(np.float32) for p in ("mean", "max") if f"region_{p}" in extras
            },
            tissue_fraction=tissue, meta={**meta, "patch_size_level0": side},
        )
    features, coords = features[order], coords[order]
    tissue = tissue[order] if tissue is not None else None
    if side is None or side <= 0:
        return SlideEmbeddings(slide_name=name, features=features, coords_px=coords, tissue_fraction=tissue, meta=meta)
    grid_xy = np.round(coords / side).astype(np.int32)
    if len(np.unique(grid_xy[:, 1].astype(np.int64) * (1 << 31) + grid_xy[:, 0])) != len(grid_xy):
        meta["note"] = "patches overlap on the grid: imported as a bag without regions"
        return SlideEmbeddings(slide_name=name, features=features, coords_px=coords, tissue_fraction=tissue, meta=meta)
    k = int(meta.get("region_size", region_size))
    region_index, region_xy = regions_from_grid(grid_xy, k)
    mean, peak = pool_regions(features, region_index, len(region_xy))
    meta.update({"patch_size_level0": side, "region_size": k})
    return SlideEmbeddings(
        slide_name=name, features=features, coords_px=coords, grid_xy=grid_xy, region_index=region_index,
        region_xy=region_xy, regional_embeddings={"mean": mean, "max": peak}, tissue_fraction=tissue, meta=meta,
    )
