"""Tissue patches for training the second model, and H&E augmentations.

:func:`sample_patches` finds tissue on each slide, tiles it at the pretraining
resolution (the core's :func:`~napari_regional_mil.tissue.detect_tissue` and
:func:`~napari_regional_mil.tiling.tile_slide`), draws a random subset of the tissue
patches per slide and reads them with the embedding pipeline's threaded
:class:`~napari_regional_mil.embedding.reader.PatchReader`. Memory is bounded by
``max_patches`` (``max_patches * patch_size**2 * 3`` bytes); the same slides and seed
give the same patches.

:func:`augment` turns a batch into float tensors with the augmentations suited to H&E:
flips, 90-degree rotations and a mild jitter of the haematoxylin and eosin
concentrations (colour deconvolution), deterministic given a ``torch.Generator``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..embedding.reader import PatchReader, plan_reads
from ..encoders.builtin import _RGB_FROM_HED
from ..errors import TilingError, TrainingError
from ..jobs import Progress
from ..slide import formats, open_slide
from ..tiling import TilingParams, tile_slide
from ..tissue import detect_tissue

__all__ = ["SLIDE_SUFFIXES", "PatchSample", "augment", "channel_statistics", "list_slides", "sample_patches"]

#: File suffixes taken as slides when a folder is given.
SLIDE_SUFFIXES = formats.SLIDE_SUFFIXES


@dataclass(frozen=True, eq=False)
class PatchSample:
    """Tissue patches drawn from a cohort of slides.

    Parameters
    ----------
    patches
        ``(N, s, s, 3)`` uint8 RGB at ``mpp``.
    slide_index
        ``(N,)`` int32 index into ``slide_paths`` of each patch.
    coords_px
        ``(N, 2)`` int64 level-0 ``(x, y)`` top-left of each patch.
    region_index
        ``(N,)`` int32 region (of ``region_size`` x ``region_size`` patches) of each
        patch within its slide (indices of that slide's tiling).
    slide_paths
        The slides that gave patches, in order.
    skipped
        ``(slide, reason)`` for slides without any tissue patch.
    mpp, patch_size
        Resolution and side of the patches.
    """

    patches: np.ndarray
    slide_index: np.ndarray
    coords_px: np.ndarray
    region_index: np.ndarray
    slide_paths: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...]
    mpp: float
    patch_size: int

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def of_slide(self, index: int) -> np.ndarray:
        """Indices of the patches of slide ``index``."""
        return np.flatnonzero(self.slide_index == index)


def list_slides(slides: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Slide files from a folder (its files with a slide suffix, sorted) or a list of files.

    Raises
    ------
    TrainingError
        No slide found, or a listed file does not exist.
    """
    if isinstance(slides, (str, os.PathLike)):
        folder = Path(slides)
        if folder.is_dir():
            found = formats.find_slides(folder)
            if not found:
                raise TrainingError(f"{folder}: no slide files ({', '.join(SLIDE_SUFFIXES)})")
            return found
        slides = [folder]
    paths = [Path(p) for p in slides]
    if not paths:
        raise TrainingError("no slides given")
    for path in paths:
        if path.is_dir():
            return [p for folder in paths for p in list_slides(folder)]
        if not path.is_file():
            raise TrainingError(f"{path}: slide file not found")
    return paths


def sample_patches(
    slides: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    patch_size: int = 64,
    mpp: float = 2.0,
    max_patches: int = 4096,
    min_patches: int = 64,
    region_size: int = 8,
    tissue_threshold: float = 0.5,
    seed: int = 0,
    num_readers: int = 2,
    slide_mpp: float | None = None,
) -> Generator[Progress, None, PatchSample]:
    """Draw up to ``max_patches`` tissue patches, evenly over the slides (a job).

    Parameters
    ----------
    slides
        A folder of slides or a list of slide files.
    patch_size, mpp
        Patch side in pixels and its microns per pixel.
    max_patches
        Patches kept in all (bounds memory); split evenly over the slides, the share of a
        slide with fewer tissue patches goes to the others.
    min_patches
        Fewer tissue patches than this in all raises :class:`TrainingError`.
    region_size
        k of the tiling's regions (recorded per patch, for the hand-over).
    tissue_threshold
        Minimum tissue fraction of a patch.
    seed
        Seeds the choice of patches.
    num_readers
        Reader threads per slide.
    slide_mpp
        Level-0 microns per pixel for slides that lack it.

    Raises
    ------
    TrainingError
        Fewer than ``min_patches`` tissue patches (naming the slides without tissue).
    SlideError
        A slide cannot be opened or read.
    """
    paths = list_slides(slides)
    params = TilingParams(patch_size=patch_size, target_mpp=mpp, region_size=region_size,
                          tissue_threshold=tissue_threshold)
    rng = np.random.default_rng(seed)
    tilings, skipped = [], []
    for i, path in enumerate(paths):
        yield Progress("sample", i, len(paths), f"finding tissue in {path.name}")
        with open_slide(path, mpp=slide_mpp) as slide:
            try:
                tilings.append((path, tile_slide(slide, detect_tissue(slide), params)))
            except TilingError as exc:
                skipped.append((path.name, str(exc)))
    counts = np.array([t.n_patches for _, t in tilings], dtype=np.int64)
    if counts.sum() < min_patches:
        where = f"; no tissue patch in {', '.join(name for name, _ in skipped)}" if skipped else ""
        raise TrainingError(
            f"only {int(counts.sum())} tissue patches of {patch_size} px at {mpp:g} um/px in {len(paths)} slide(s) "
            f"(at least {min_patches} needed){where}; add slides, lower --mpp or --patch-size"
        )
    quota = _share(counts, max_patches)
    chosen = [np.sort(rng.choice(n, size=q, replace=False)) for n, q in zip(counts, quota)]
    total = int(quota.sum())
    patches = np.zeros((total, patch_size, patch_size, 3), np.uint8)
    slide_index = np.zeros(total, np.int32)
    coords = np.zeros((total, 2), np.int64)
    regions = np.zeros(total, np.int32)
    start = 0
    for s, ((path, tiling), idx) in enumerate(zip(tilings, chosen)):
        stop = start + idx.size
        slide_index[start:stop] = s
        coords[start:stop] = tiling.coords_px[idx]
        regions[start:stop] = tiling.region_index[idx]
        with open_slide(path, mpp=slide_mpp) as slide:
            plan = plan_reads(
                slide_mpp=slide.mpp, level_downsamples=slide.info.level_downsamples, patch_size=patch_size,
                patch_size_level0=tiling.patch_size_level0, input_size=patch_size, encoder_mpp=mpp,
            )
            reader = PatchReader(slide, tiling.coords_px[idx], plan, num_threads=num_readers, batch_size=64)
            batches = reader.batches()
            try:
                for first, batch in batches:
                    patches[start + first : start + first + len(batch)] = batch
                    yield Progress("sample", start + first + len(batch), total, f"reading patches of {path.name}")
            finally:
                batches.close()
        start = stop
    return PatchSample(
        patches, slide_index, coords, regions, tuple(p for p, _ in tilings), tuple(skipped), float(mpp), int(patch_size)
    )


def _share(counts: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over slides with ``counts`` patches: evenly, capped by each count."""
    quota = np.zeros_like(counts)
    left, open_ = int(budget), counts > 0
    while left > 0 and open_.any():
        each = max(1, left // int(open_.sum()))
        for i in np.flatnonzero(open_):
            take = min(each, int(counts[i] - quota[i]), left)
            quota[i] += take
            left -= take
            if quota[i] >= counts[i]:
                open_[i] = False
            if left == 0:
                break
    return quota


#: Ruifrok & Johnston stain matrix (rows: haematoxylin, eosin, DAB), shared with ``builtin-he``.
def _rgb_from_hed() -> torch.Tensor:
    m = np.asarray(_RGB_FROM_HED, dtype=np.float64)
    return torch.from_numpy((m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32))


def augment(
    batch: np.ndarray | torch.Tensor,
    *,
    generator: torch.Generator,
    flips: bool = True,
    rotations: bool = True,
    stain_jitter: float = 0.05,
) -> torch.Tensor:
    """H&E augmentations of a batch: ``(B, s, s, 3)`` uint8 -> ``(B, 3, s, s)`` float in [0, 1].

    Parameters
    ----------
    batch
        Patches as read (uint8 NHWC).
    generator
        Seeds every random choice (deterministic augmentations).
    flips, rotations
        Random horizontal flip and 90-degree rotation per patch.
    stain_jitter
        Per patch, the haematoxylin, eosin and residual concentrations (optical density
        after colour deconvolution) are scaled by ``1 + U(-j, j)`` and shifted by
        ``U(-j, j)`` (0 switches it off).
    """
    x = torch.as_tensor(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    n = x.shape[0]
    if rotations:
        turns = torch.randint(0, 4, (n,), generator=generator)
        x = torch.stack([torch.rot90(p, int(k), dims=(1, 2)) for p, k in zip(x, turns)])
    if flips:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if stain_jitter > 0:
        rgb_from_hed = _rgb_from_hed()
        hed_from_rgb = torch.linalg.inv(rgb_from_hed)
        od = -torch.log((x * 255.0 + 1.0) / 256.0).permute(0, 2, 3, 1)  # (B, s, s, 3)
        hed = od @ hed_from_rgb
        scale = 1.0 + (torch.rand((n, 1, 1, 3), generator=generator) * 2 - 1) * stain_jitter
        shift = (torch.rand((n, 1, 1, 3), generator=generator) * 2 - 1) * stain_jitter
        background = (od.mean(-1, keepdim=True) < 0.08).float()  # keep glass white
        hed = hed * scale + shift * (1.0 - background)
        od = (hed @ rgb_from_hed).clamp_min(0.0)
        x = ((torch.exp(-od) * 256.0 - 1.0) / 255.0).clamp(0.0, 1.0).permute(0, 3, 1, 2)
    return x.contiguous()


def channel_statistics(
    patches: np.ndarray, *, max_patches: int = 1024
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel (RGB) mean and standard deviation in [0, 1] (the encoder's normalisation)."""
    step = max(1, math.ceil(len(patches) / max_patches))
    x = patches[::step].reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-3)
    return _rgb(mean), _rgb(std)


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    """Three per-channel values, rounded to 6 decimals."""
    r, g, b = (round(float(v), 6) for v in values)
    return r, g, b
