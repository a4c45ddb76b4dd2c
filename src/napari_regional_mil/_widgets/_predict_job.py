"""The Predict widget's steps, without Qt: find the slide layer, load a model, predict a slide.

Kept apart from :mod:`.predict_widget` so it can be tested and reused without a viewer;
everything here is a thin composition of core calls.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_regional_mil._widgets._heatmap_layers import HeatmapSpec, heatmap_specs
from napari_regional_mil._widgets._warm_up import warm_up
from napari_regional_mil.errors import SlideError
from napari_regional_mil.heatmap import AttentionMaps
from napari_regional_mil.jobs import Progress
from napari_regional_mil.tiling import TilingParams

if TYPE_CHECKING:
    from napari_regional_mil.model.checkpoint import Checkpoint
    from napari_regional_mil.tissue import TissueMask

__all__ = ["describe_model", "export", "load_model", "model_tiling", "predict_job", "with_layers"]

def load_model(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint (``CheckpointError`` for a missing, corrupt or foreign file)."""
    from napari_regional_mil.model.checkpoint import load_checkpoint  # lazy: torch (in the worker)

    return load_checkpoint(path)


def describe_model(checkpoint: Checkpoint) -> str:
    """One line about a loaded checkpoint: file, type, classes, encoder."""
    where = checkpoint.path.name if getattr(checkpoint, "path", None) else "trained model"
    model_type = getattr(checkpoint.config, "model_type", "?")
    encoder = (checkpoint.encoder or {}).get("name") or "?"
    classes = ", ".join(checkpoint.class_names)
    return f"{where}: {model_type} model, classes {classes}; encoder {encoder}"


def model_tiling(checkpoint: Checkpoint, layer_params: TilingParams | None = None) -> TilingParams | None:
    """The tiling a model was trained on, as :class:`TilingParams` (``None`` when unknown).

    The tissue threshold (not part of a model's tiling) comes from ``layer_params`` (what
    the Slide widget used) when given.
    """
    from napari_regional_mil.embedding.workflow import checkpoint_tiling  # lazy: startup (zarr, in the worker)

    threshold = layer_params.tissue_threshold if layer_params is not None else None
    return checkpoint_tiling(checkpoint, tissue_threshold=threshold)


def predict_job(
    checkpoint: Checkpoint,
    slide_path: str | None,
    *,
    cache_dir: str | os.PathLike | None = None,
    mpp: tuple[float, float] | None = None,
    slide_mpp: float | None = None,
    layer_params: TilingParams | None = None,
    tissue_mask: TissueMask | None = None,
    clinical: Any = None,
    encoder_weights: str | os.PathLike | None = None,
    from_hub: bool = False,
) -> Generator[Progress, None, AttentionMaps]:
    """Predict one slide with a loaded model and lay the attention out on its grids.

    Parameters
    ----------
    checkpoint
        A loaded :class:`~napari_regional_mil.model.checkpoint.Checkpoint`.
    slide_path
        The slide file.
    cache_dir
        Where its embedding cache is (default: the Embed widget's default folder). When
        it holds none for the model's encoder and tiling, the slide is embedded first with
        them, as the Embed widget would.
    mpp
        ``(mpp_y, mpp_x)`` of the slide layer, so the maps follow it.
    slide_mpp
        Level-0 mpp to embed with when the slide lacks it (the user's value).
    layer_params
        The tiling the Slide widget used (its tissue threshold is reused).
    tissue_mask
        The user's edited tissue mask, if any (used when embedding).
    clinical
        The slide's clinical values (a ``ClinicalRecord``), for a model that takes them.
    encoder_weights, from_hub
        What the user chose for the model's encoder when the slide must be embedded (its
        weights file or encoder file; downloading its published weights). The model's
        stored encoder name alone never downloads or loads a file.

    Raises
    ------
    SlideError, CacheError, CheckpointError
        No slide path, no usable cache, a model that does not match the cache.
    """
    from napari_regional_mil.embedding.workflow import embeddings_for  # lazy: startup (zarr, in the worker)
    from napari_regional_mil.training.predict import predict_slide  # lazy: torch (in the worker)

    if not slide_path:
        raise SlideError("the slide layer does not say which file it shows")
    embeddings = yield from embeddings_for(
        checkpoint, slide_path, cache_dir=cache_dir, tiling_params=model_tiling(checkpoint, layer_params),
        mpp=slide_mpp, tissue_mask=tissue_mask, encoder_weights=encoder_weights, from_hub=from_hub,
    )
    checkpoint.check_compatible(embeddings)
    yield Progress("predict", 0, 1, f"predicting {embeddings.slide_name}")
    prediction = predict_slide(checkpoint, embeddings, clinical=clinical)
    yield Progress("predict", 1, 1, "heatmaps")
    return AttentionMaps.from_prediction(embeddings, prediction, mpp=mpp)


def with_layers(
    job: Generator[Progress, None, AttentionMaps], settings: dict[str, Any]
) -> Generator[Progress, None, tuple[AttentionMaps, list[HeatmapSpec]]]:
    """Run a prediction ``job``, then make its heatmap layers' data in the same worker.

    The data is ``heatmap_specs(**settings)``, so the GUI thread only adds the layers.
    """
    maps = yield from job
    yield Progress("predict", 1, 1, "heatmap layers")
    warm_up()
    return maps, heatmap_specs(maps, **settings)


def export(kind: str, path: str | os.PathLike, maps: AttentionMaps, *, normalisation: str = "rank") -> Path:
    """Write ``maps`` as ``kind``: ``"geojson"``, ``"tiff"`` or ``"csv"``; return the path.

    The same function the CLI's ``export`` calls for each slide of a batch.
    """
    from napari_regional_mil.batch_export import export_maps  # lazy: torch (in the worker)

    return export_maps(kind, path, maps, normalisation=normalisation)
