"""Finding a slide's embeddings for a trained model, or embedding the slide first.

- :func:`embeddings_for` finds the cached embeddings of a slide for a trained model, or
  embeds the slide first with the model's encoder and tiling ("find the cache or embed").
- :func:`default_cache_dir` (from :mod:`.folders`) is where a slide's cache goes when the user
  chose none.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CacheError
from ..jobs import Progress
from ..tiling import TilingParams
from ..tissue import TissueMask
from .folders import default_cache_dir
from .pipeline import embed_slide
from .store import find_slide_cache, load_slide_embeddings
from .types import SlideEmbeddings

if TYPE_CHECKING:
    from ..model.checkpoint import Checkpoint

__all__ = ["checkpoint_tiling", "embeddings_for"]

PathLike = str | os.PathLike[str]


def checkpoint_tiling(checkpoint: Checkpoint, *, tissue_threshold: float | None = None) -> TilingParams | None:
    """The tiling a model was trained on, as :class:`TilingParams` (None when the checkpoint lacks it).

    The tissue threshold is not part of a model's tiling: ``tissue_threshold`` (e.g. what
    the user tiled the slide with), else the default.
    """
    tiling = checkpoint.tiling or {}
    if any(tiling.get(key) is None for key in ("patch_size", "target_mpp", "region_size")):
        return None
    threshold = TilingParams().tissue_threshold if tissue_threshold is None else float(tissue_threshold)
    return TilingParams(patch_size=int(tiling["patch_size"]), target_mpp=float(tiling["target_mpp"]),
                        region_size=int(tiling["region_size"]), tissue_threshold=threshold)


def embeddings_for(
    checkpoint: Checkpoint,
    slide_path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    tiling_params: TilingParams | None = None,
    mpp: float | None = None,
    tissue_mask: TissueMask | np.ndarray | None = None,
    device: str = "cpu",
    encoder_weights: PathLike | None = None,
    from_hub: bool = False,
) -> Generator[Progress, None, SlideEmbeddings]:
    """The slide's embeddings for a trained model: its cache, or embed the slide first (a job).

    The model's stored encoder record never starts a download or loads code by itself: the
    slide is embedded only with what needs nothing from outside (the built-in encoders) or
    what the user chose (``encoder_weights``, ``from_hub``); see
    :func:`~napari_regional_mil.encoders.encoder_for_stored`.

    Parameters
    ----------
    checkpoint
        The loaded model; its encoder and tiling pick the cache.
    slide_path
        The slide file.
    cache_dir
        Where the caches are (default: :func:`default_cache_dir` of the slide).
    tiling_params
        The tiling to look for and embed with (default: :func:`checkpoint_tiling`).
    mpp
        Level-0 um/px to embed with when the slide lacks it.
    tissue_mask
        The user's tissue mask to embed with, if any.
    device
        Where the encoder runs when the slide must be embedded.
    encoder_weights
        A file the user picked for the model's encoder: the weights of a published encoder
        (``pytorch_model.bin``), or the encoder file itself.
    from_hub
        The user allows downloading the model's published encoder's weights.

    Raises
    ------
    CacheError
        No matching cache, and the model does not say which encoder and tiling to embed with.
    EncoderError
        The slide must be embedded and the model's encoder needs weights or a file the
        user did not give (one line saying which), or the given ones are not the model's.
    SlideError, TilingError
        From embedding the slide.
    """
    folder = Path(cache_dir) if cache_dir else default_cache_dir(slide_path)
    params = tiling_params or checkpoint_tiling(checkpoint)
    record = checkpoint.encoder or {}
    encoder = record.get("name")
    name = Path(slide_path).name
    yield Progress("load", 0, 0, f"looking for the embeddings of {name} in {folder}")
    try:  # the model's own weights (hash), whatever the encoder's name was then
        key = record.get("weights_hash") or encoder
        found = find_slide_cache(folder, slide_path, encoder=key, tiling_params=params)
    except CacheError:  # none, or several (weights of the same name): the model's own is found or made
        if not encoder or params is None:
            raise CacheError(
                f"{name}: no matching embedding cache in {folder}, and the model does not say which "
                "encoder and tiling to embed with"
            ) from None
        from ..encoders import encoder_for_stored  # lazy: torch (only when a slide must be embedded)

        model = checkpoint.path.name if checkpoint.path is not None else "the model"
        loaded = encoder_for_stored(record, weights=encoder_weights, from_hub=from_hub, device=device, what=model)
        result = yield from embed_slide(slide_path, cache_dir=folder, tiling_params=params, encoder=loaded,
                                        mpp=mpp, tissue_mask=tissue_mask, device=device)
        found = result.cache_path
    yield Progress("load", 0, 0, f"loading {Path(found).name}")
    return load_slide_embeddings(found)
