"""Patch-feature files other tools write, read as :class:`~napari_regional_mil.embedding.types.SlideEmbeddings`.

One file per slide, found by the slide's name (:func:`find_feature_file`):

CLAM / TRIDENT ``.h5``
    ``features`` (N, D) (or (1, N, D)) and optional ``coords`` (N, 2) level-0 pixels with
    the patch size in the attributes (:func:`~napari_regional_mil.embedding.h5io.import_h5`).
STAMP ``.h5``
    ``feats`` (N, D) and ``coords`` (N, 2) in micrometres, attributes ``tile_size_um``,
    ``tile_size_px`` and ``extractor`` (STAMP 2). The patch grid is the coordinates
    divided by ``tile_size_um``; the tiling's resolution is ``tile_size_um /
    tile_size_px`` um/px (recorded as the target mpp, so a model refuses features from
    another tiling). Level-0 pixel coordinates are unknown (STAMP does not store the
    slide's mpp), so such bags train and predict but draw no heatmap.
CLAM ``.pt``
    a tensor (N, D) (``pt_files/``), read with ``torch.load(weights_only=True)``: tensors
    only, nothing unpickled; a dict of tensors with ``features``/``feats`` and optional
    ``coords`` (pixels) is accepted too. When the CLAM ``h5_files/`` twin exists it is
    read instead (it has the coordinates).
``.npz``
    a ``features`` array and optional ``coords`` (level-0 pixels).

With coordinates and a known patch size the patch grid and regions of ``region_size``
x ``region_size`` patches are rebuilt, so the regional model applies; without them the
bag has no regions (the regional parts switch off with a warning when training).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..embedding.h5io import import_h5, regions_from_grid
from ..embedding.store import pool_regions
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError

__all__ = ["FEATURE_SUFFIXES", "find_feature_file", "read_feature_file"]

#: Feature files looked for, in order of preference.
FEATURE_SUFFIXES = (".h5", ".npz", ".pt")
#: Sub-folders looked into besides the folder itself (CLAM's and TRIDENT's layouts).
_SUBFOLDERS = ("", "h5_files", "features", "pt_files")


def find_feature_file(features_dir: str | os.PathLike[str], slide_name: str) -> Path | None:
    """``<dir>/<slide>.h5``, ``.npz`` or ``.pt`` (also under ``h5_files/``, ``features/``, ``pt_files/``)."""
    root = Path(features_dir)
    for suffix in FEATURE_SUFFIXES:
        for folder in _SUBFOLDERS:
            candidate = root / folder / f"{slide_name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_feature_file(
    path: str | os.PathLike[str], *, slide_name: str | None = None, region_size: int = 8
) -> SlideEmbeddings:
    """Read one slide's patch features (see the module docstring for the formats).

    Parameters
    ----------
    path
        The ``.h5``, ``.npz`` or ``.pt`` file.
    slide_name
        The slide's name (default: the file stem).
    region_size
        k of the rebuilt k x k regions (unless the file stores regions).

    Raises
    ------
    CacheError
        Unreadable file, no features, wrong shapes, an empty bag, or a ``.pt`` that holds
        anything but tensors (naming the file).
    """
    path = Path(path)
    name = slide_name or path.stem
    suffix = path.suffix.lower()
    if suffix == ".pt":
        twin = path.parent.parent / "h5_files" / f"{path.stem}.h5" if path.parent.name == "pt_files" else None
        if twin is not None and twin.is_file():
            return read_feature_file(twin, slide_name=name, region_size=region_size)
        features, coords, meta = _read_pt(path)
        return _bag(path, name, features, coords, meta, side=None, region_size=region_size)
    if suffix == ".npz":
        features, coords, meta = _read_npz(path)
        return _bag(path, name, features, coords, meta, side=None, region_size=region_size)
    return _read_h5(path, name, region_size)


def _read_h5(path: Path, name: str, region_size: int) -> SlideEmbeddings:
    try:
        with h5py.File(path, "r") as fh:
            stamp = "feats" in fh and "features" not in fh
            if stamp:
                features = np.asarray(fh["feats"][()])
                coords = np.asarray(fh["coords"][()]) if "coords" in fh else None
                attrs = {k: _scalar(v) for k, v in fh.attrs.items()}
    except OSError as exc:
        raise CacheError(f"{path}: cannot read the feature file ({exc})") from None
    if not stamp:
        bag = import_h5(path, slide_name=name, region_size=region_size)
        _check_features(path, bag.features, "features")
        return bag
    return _stamp_bag(path, name, features, coords, attrs, region_size)


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") and np.ndim(value) == 0 else value


def _stamp_bag(path: Path, name: str, features: np.ndarray, coords_um: np.ndarray | None, attrs: dict[str, Any],
               region_size: int) -> SlideEmbeddings:
    features = _check_features(path, features, "feats")
    meta: dict[str, Any] = {"source": str(path), "format": "stamp", "embedding_dim": int(features.shape[1])}
    if "extractor" in attrs:
        meta["encoder"] = str(attrs["extractor"])
    tile_um = _positive(attrs.get("tile_size_um"))
    tile_px = _positive(attrs.get("tile_size_px"))
    if tile_um is not None and tile_px is not None:
        meta.update(patch_size=round(tile_px), target_mpp=tile_um / tile_px, patch_size_um=tile_um)
    if coords_um is None:
        return SlideEmbeddings(slide_name=name, features=features, meta=meta)
    coords_um = _check_coords(path, coords_um, features.shape[0]).astype(np.float64)
    unit = str(attrs.get("unit", "um"))
    if unit not in ("um", "µm", "micron", "microns"):
        raise CacheError(f"{path}: STAMP coordinates in {unit!r}; only micrometres ('um') are understood")
    side = tile_um if tile_um is not None else _spacing(coords_um)
    meta["coords_um"] = "x, y of each tile's top-left corner in micrometres (STAMP)"
    if side is None:
        return SlideEmbeddings(slide_name=name, features=features, meta=meta)
    return _with_grid(path, name, features, None, np.round(coords_um / side), meta, region_size)


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _spacing(coords: np.ndarray) -> float | None:
    """The smallest positive spacing of the coordinates (the patch side on a regular grid)."""
    steps = np.concatenate([np.diff(np.unique(coords[:, 0])), np.diff(np.unique(coords[:, 1]))])
    steps = steps[steps > 0]
    return float(steps.min()) if steps.size else None


def _with_grid(path: Path, name: str, features: np.ndarray, coords_px: np.ndarray | None, grid: np.ndarray,
               meta: dict[str, Any], region_size: int) -> SlideEmbeddings:
    grid_xy = grid.astype(np.int32)
    grid_xy -= np.minimum(grid_xy.min(axis=0), 0)  # never negative cells
    keys = grid_xy[:, 1].astype(np.int64) * (1 << 31) + grid_xy[:, 0]
    if np.unique(keys).size != keys.size:
        meta["note"] = "patches overlap on the grid: read as a bag without regions"
        return SlideEmbeddings(slide_name=name, features=features, coords_px=coords_px, meta=meta)
    order = np.lexsort((grid_xy[:, 0], grid_xy[:, 1]))  # row-major, as the architecture orders patches
    features, grid_xy = features[order], grid_xy[order]
    coords_px = None if coords_px is None else coords_px[order]
    region_index, region_xy = regions_from_grid(grid_xy, region_size)
    mean, peak = pool_regions(features, region_index, len(region_xy))
    meta["region_size"] = int(region_size)
    return SlideEmbeddings(
        slide_name=name, features=features, coords_px=coords_px, grid_xy=grid_xy, region_index=region_index,
        region_xy=region_xy, regional_embeddings={"mean": mean, "max": peak}, meta=meta,
    )


def _check_features(path: Path, features: np.ndarray, key: str) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2 or features.shape[0] == 0 or not np.issubdtype(features.dtype, np.number):
        raise CacheError(f"{path}: {key!r} must be a non-empty (N, D) numeric array, got shape {features.shape}")
    return features.astype(np.float32)


def _check_coords(path: Path, coords: np.ndarray, n: int) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if coords.shape != (n, 2) or not np.issubdtype(coords.dtype, np.number):
        raise CacheError(f"{path}: 'coords' has shape {coords.shape}, expected ({n}, 2)")
    return coords


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "features" not in data:
                raise CacheError(f"{path}: no 'features' array (found: {', '.join(data.files) or 'none'})")
            features = np.asarray(data["features"])
            coords = np.asarray(data["coords"]) if "coords" in data else None
    except CacheError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise CacheError(f"{path}: cannot read the feature file ({exc})") from None
    return features, coords, {"format": "npz"}


def _read_pt(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    import torch  # lazy: torch (only CLAM .pt files need it; the Train widget's form imports this module)

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CacheError(
            f"{path}: not a tensor file (only tensors are loaded, nothing is unpickled): {first}"
        ) from None
    coords = None
    if isinstance(data, dict):
        key = "features" if "features" in data else "feats" if "feats" in data else None
        if key is None:
            raise CacheError(f"{path}: no 'features' tensor (found: {', '.join(map(str, data)) or 'none'})")
        features, coords = data[key], data.get("coords")
    else:
        features = data
    if not isinstance(features, torch.Tensor) or (coords is not None and not isinstance(coords, torch.Tensor)):
        raise CacheError(f"{path}: expected a tensor of features, found {type(features).__name__}")
    return (
        features.detach().float().numpy(),
        None if coords is None else coords.detach().numpy(),
        {"format": "pt"},
    )


def _bag(path: Path, name: str, features: np.ndarray, coords: np.ndarray | None, meta: dict[str, Any], *,
         side: float | None, region_size: int) -> SlideEmbeddings:
    features = _check_features(path, features, "features")
    meta = {"source": str(path), **meta, "embedding_dim": int(features.shape[1])}
    if coords is None:
        return SlideEmbeddings(slide_name=name, features=features, meta=meta)
    coords = _check_coords(path, coords, features.shape[0]).astype(np.int64)
    side = side or _spacing(coords)
    if side is None:
        return SlideEmbeddings(slide_name=name, features=features, coords_px=coords, meta=meta)
    meta["patch_size_level0"] = side
    return _with_grid(path, name, features, coords, np.round(coords / side), meta, region_size)
