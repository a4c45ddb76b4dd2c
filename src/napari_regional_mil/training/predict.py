"""Inference with the first model: class probabilities and attention on every patch.

Inference is deterministic (eval mode, no selection) and uses every patch; the
per-patch layers run in chunks, so bags of 100k patches fit in memory. The attention
of a slide is stored next to its cache (``<cache>.attention.npz``) for the heatmaps.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..clinical import ClinicalRecord
from ..embedding.types import SlideEmbeddings
from ..errors import CacheError
from ..model.checkpoint import Checkpoint, load_checkpoint
from ..model.first_model import Bag, FirstModel, make_bag
from .device import autocast, bag_to, resolve_device
from .prediction import SlidePrediction

__all__ = [
    "SlidePrediction",
    "attention_path",
    "predict_bags",
    "predict_slide",
    "read_attention",
    "set_slide_reference",
    "write_attention",
]

ATTENTION_SUFFIX = ".attention.npz"


def predict_slide(
    model: Checkpoint | FirstModel | str | os.PathLike,
    embeddings: SlideEmbeddings,
    *,
    class_names: Sequence[str] | None = None,
    threshold: float | None = None,
    evidence: bool = True,
    chunk_size: int = 16384,
    clinical: ClinicalRecord | None = None,
    device: str | torch.device = "cpu",
) -> SlidePrediction:
    """Run the first model on every patch of one slide.

    Parameters
    ----------
    model
        A :class:`~napari_regional_mil.model.checkpoint.Checkpoint`, a checkpoint file,
        or a bare :class:`FirstModel` (then ``class_names`` default to ``"0", "1", ...``).
    embeddings
        The slide's cached embeddings.
    class_names, threshold
        Override the checkpoint's.
    evidence
        Also compute per-patch class evidence (attention x logit contribution).
    chunk_size
        Patches per chunk in the per-patch layers (memory bound).
    clinical
        The slide's clinical values; required when the model takes clinical variables.
    device
        Where the model runs (``"cpu"``, ``"cuda"``...; see
        :func:`~napari_regional_mil.training.device.resolve_device`); autocast on CUDA.

    Returns
    -------
    SlidePrediction
        Probabilities, patch attention (cache order), region attention (all-regions
        path; for a regional model without it, the selected-path attention summed per
        region), region index and class evidence; for a model with clinical variables
        also the contributions of the slide and of each variable (to the positive class
        of a binary model, else to the predicted class).

    Raises
    ------
    CheckpointError
        The embeddings come from another encoder or tiling than the model's.
    TrainingError
        An empty bag, or a regional model on a bag without regions.
    ClinicalError
        The model takes clinical variables and ``clinical`` is missing or holds a value
        it cannot take (naming the row and column).
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_checkpoint(model)
    if isinstance(model, Checkpoint):
        model.check_compatible(embeddings)
        names = tuple(class_names) if class_names is not None else model.class_names
        t = model.threshold if threshold is None else float(threshold)
        positive = model.positive_class
        network = model.model
    else:
        network = model
        names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(model.config.n_classes))
        t, positive = 0.5 if threshold is None else float(threshold), 1
    target = resolve_device(device)
    bag = bag_to(make_bag(embeddings, network.config, clinical=clinical), target)
    was_training = network.training
    previous_chunk = network.chunk_size
    network.eval()
    network.to(target)
    network.chunk_size = int(chunk_size)

    def host(t: torch.Tensor) -> np.ndarray:
        return t.float().cpu().numpy()

    try:
        with torch.inference_mode(), autocast(target):
            out = network(bag, evidence=evidence)
            probabilities = host(torch.softmax(out.logits.float(), -1)).astype(np.float64)
            patch_attention = host(out.patch_attention).astype(np.float32)
            region_attention = None
            if network.config.uses_regions:
                if out.region_attention is not None:
                    region_attention = host(out.region_attention).astype(np.float32)
                else:
                    region_attention = host(network.region_attention_of_patches(bag, out.patch_attention))
            class_evidence = None if out.patch_evidence is None else host(out.patch_evidence).astype(np.float32)
            contributions = None
            if network.config.clinical is not None:
                explained = positive if len(names) == 2 else int(np.argmax(probabilities))
                contributions = network.contributions(bag, out, explained)
                if clinical is not None:
                    values = network.config.clinical.texts(clinical)
                    contributions = dataclasses.replace(contributions, values=values)
    finally:
        network.chunk_size = previous_chunk
        network.train(was_training)
    region_index = None if embeddings.region_index is None else np.asarray(embeddings.region_index)
    return SlidePrediction(
        slide_name=embeddings.slide_name,
        class_names=names,
        probabilities=probabilities,
        threshold=t,
        patch_attention=patch_attention,
        region_attention=region_attention,
        region_index=region_index,
        class_evidence=class_evidence,
        positive_class=positive,
        contributions=contributions,
    )


@torch.no_grad()
def set_slide_reference(model: FirstModel, bags: Sequence[Bag]) -> None:
    """Store the mean slide term of the logits over ``bags`` (the training slides) in ``model``.

    The slide's contribution to a prediction is measured against it (see
    :mod:`~napari_regional_mil.model.contributions`).
    """
    was_training = model.training
    model.eval()
    try:
        terms = [model(bag).slide_logits for bag in bags]
    finally:
        model.train(was_training)
    model.set_slide_reference(torch.stack([t for t in terms if t is not None]))


def predict_bags(model: FirstModel, bags: Sequence[Bag], *, device: torch.device | str | None = None) -> np.ndarray:
    """``(n, C)`` class probabilities of every bag, using every patch (inference mode).

    The bags are moved to the model's device (or ``device``, where the model then runs).
    """
    target = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    model.to(target)
    try:
        with torch.inference_mode(), autocast(target):
            probs = [torch.softmax(model(bag_to(bag, target)).logits.float(), -1).cpu().numpy() for bag in bags]
        return np.stack(probs).astype(np.float64)
    finally:
        model.train(was_training)


def attention_path(cache: str | os.PathLike) -> Path:
    """Where the attention of a slide is stored: ``<cache>.attention.npz`` beside the cache."""
    cache = Path(cache)
    return cache.with_name(cache.name + ATTENTION_SUFFIX)


def write_attention(
    prediction: SlidePrediction, path: str | os.PathLike, *, embeddings: SlideEmbeddings | None = None
) -> Path:
    """Write a prediction's attention (and the grid it lives on) atomically as ``.npz``.

    Arrays: ``probabilities``, ``patch_attention``, optional ``region_attention``,
    ``region_index``, ``class_evidence``, and from ``embeddings`` ``grid_xy``,
    ``coords_px``, ``region_xy``; plus ``slide_name``, ``class_names``, ``threshold``.
    """
    path = Path(path)
    arrays: dict[str, Any] = {
        "slide_name": np.array(prediction.slide_name),
        "class_names": np.array(prediction.class_names),
        "threshold": np.array(prediction.threshold),
        "positive_class": np.array(prediction.positive_class),
        "probabilities": prediction.probabilities,
        "patch_attention": prediction.patch_attention,
    }
    optional = {
        "region_attention": prediction.region_attention,
        "region_index": prediction.region_index,
        "class_evidence": prediction.class_evidence,
    }
    if embeddings is not None:
        optional.update(grid_xy=embeddings.grid_xy, coords_px=embeddings.coords_px, region_xy=embeddings.region_xy)
    arrays.update({k: np.asarray(v) for k, v in optional.items() if v is not None})
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        raise CacheError(f"{path}: cannot write the attention file ({exc.strerror or exc})") from None
    return path


def read_attention(path: str | os.PathLike) -> SlidePrediction:
    """Read an attention file written by :func:`write_attention` (no pickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            get = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: cannot read the attention file ({exc})") from None
    return SlidePrediction(
        slide_name=str(get["slide_name"]),
        class_names=tuple(str(c) for c in get["class_names"]),
        probabilities=get["probabilities"],
        threshold=float(get["threshold"]),
        patch_attention=get["patch_attention"],
        region_attention=get.get("region_attention"),
        region_index=get.get("region_index"),
        class_evidence=get.get("class_evidence"),
        positive_class=int(get.get("positive_class", 1)),
    )
