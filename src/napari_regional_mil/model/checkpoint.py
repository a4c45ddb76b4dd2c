"""Checkpoints of the first model: one safetensors file, weights plus a JSON config.

The config (safetensors metadata key ``"napari_regional_mil"``) holds the model's
hyper-parameters, class names, decision threshold, the encoder (name, weights hash,
dimension) and tiling (target mpp, patch size, region size) the model was trained on,
versions, and a training summary. Loading never unpickles anything: a file that is not
safetensors is refused. A model is refused on embeddings from another encoder or tiling.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from safetensors import safe_open

from .. import __version__
from ..atomic import atomic_path
from ..embedding.types import SlideEmbeddings
from ..errors import CheckpointError
from .config import ModelConfig
from .first_model import FirstModel

if TYPE_CHECKING:
    from ..embedding.store import LazyEmbeddings

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "load_checkpoint", "provenance", "save_checkpoint"]

FORMAT = "napari-regional-mil/first-model"
FORMAT_VERSION = 1
_META_KEY = "napari_regional_mil"


def provenance(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(encoder, tiling)`` records of embeddings' ``meta`` (whatever is known)."""
    encoder = {
        "name": meta.get("encoder"),
        "weights_hash": meta.get("encoder_hash"),
        "dim": meta.get("embedding_dim"),
    }
    tiling = {
        "target_mpp": meta.get("target_mpp"),
        "patch_size": meta.get("patch_size"),
        "region_size": meta.get("region_size"),
    }
    return encoder, tiling


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded (or about to be saved) first model with its provenance.

    Parameters
    ----------
    model
        The first model, in eval mode.
    class_names
        Class names in the model's output order.
    threshold
        Decision threshold on the probability of ``class_names[positive_class]``.
    positive_class
        The class the threshold applies to (binary models).
    encoder
        ``name``, ``weights_hash``, ``dim`` of the second model the embeddings came from.
    tiling
        ``target_mpp``, ``patch_size``, ``region_size`` the embeddings were cut with.
    training
        A summary of training (epochs, best validation AUC, seed, slides, ...).
    versions
        Package versions when it was saved (re-saving stamps the current ones).
    path
        The file it was loaded from, if any.
    """

    model: FirstModel
    class_names: tuple[str, ...]
    threshold: float = 0.5
    positive_class: int = 1
    encoder: dict[str, Any] = field(default_factory=dict)
    tiling: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> ModelConfig:
        """The model's hyper-parameters."""
        return self.model.config

    def check_compatible(self, embeddings: SlideEmbeddings | LazyEmbeddings) -> None:
        """Refuse embeddings from another encoder or tiling than the model's.

        Raises
        ------
        CheckpointError
            Naming the field, the model's value and the slide's value.
        """
        where = self.path.name if self.path is not None else "model"
        slide = embeddings.slide_name
        got_encoder, got_tiling = provenance(embeddings.meta)
        if embeddings.embedding_dim != self.config.input_dim:
            raise CheckpointError(
                f"{where}: expects {self.config.input_dim}-dimensional embeddings, slide {slide!r} has "
                f"{embeddings.embedding_dim} (another encoder?)"
            )
        for key, label in (("name", "encoder"), ("weights_hash", "encoder weights hash")):
            want, got = self.encoder.get(key), got_encoder.get(key)
            if want and got and want != got:
                raise CheckpointError(
                    f"{where}: trained on {label} {want!r}, but slide {slide!r} was embedded with {got!r}"
                )
        fields_ = ["target_mpp", "patch_size"] + (["region_size"] if self.config.uses_regions else [])
        for key in fields_:
            want, got = self.tiling.get(key), got_tiling.get(key)
            if want is None or got is None:
                continue
            if not math.isclose(float(want), float(got), rel_tol=1e-6):
                raise CheckpointError(
                    f"{where}: trained on tiling {key}={want}, but slide {slide!r} was tiled with {key}={got}"
                )

    def to_json(self) -> dict[str, Any]:
        """The JSON config stored in the file."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.config.to_dict(),
            "class_names": list(self.class_names),
            "threshold": float(self.threshold),
            "positive_class": int(self.positive_class),
            "encoder": dict(self.encoder),
            "tiling": dict(self.tiling),
            "training": dict(self.training),
            "versions": _versions(),
        }


def _versions() -> dict[str, str]:
    return {
        "napari_regional_mil": __version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, then rename).

    Raises
    ------
    CheckpointError
        The folder is missing or not writable.
    """
    path = Path(path)
    if len(checkpoint.class_names) != checkpoint.config.n_classes:
        raise CheckpointError(
            f"{path}: {len(checkpoint.class_names)} class names for {checkpoint.config.n_classes} classes"
        )
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint.model.state_dict().items()}
    metadata = {_META_KEY: json.dumps(checkpoint.to_json(), sort_keys=True, default=str)}
    try:
        with atomic_path(path) as tmp:
            safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from None
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (safetensors only, nothing unpickled).

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupt or foreign file (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        raise CheckpointError(f"{path}: not a safetensors checkpoint (pickled .pt files are never loaded)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            names = fh.keys()  # a safetensors file handle is not iterable (not a dict): ask for its keys
            tensors = {key: fh.get_tensor(key) for key in names}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        config = json.loads(metadata[_META_KEY])
        if config.get("format") != FORMAT:
            raise ValueError(f"format {config.get('format')!r}")
        if int(config.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"format version {config['format_version']} is newer than this software's")
        model_config = ModelConfig.from_dict(config["model"])
        class_names = tuple(str(c) for c in config["class_names"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a napari-regional-mil first-model checkpoint ({exc})") from None
    model = FirstModel(model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the stored model config ({first})") from None
    model.eval()
    return Checkpoint(
        model=model,
        class_names=class_names,
        threshold=float(config.get("threshold", 0.5)),
        positive_class=int(config.get("positive_class", 1)),
        encoder=dict(config.get("encoder", {})),
        tiling=dict(config.get("tiling", {})),
        training=dict(config.get("training", {})),
        versions=dict(config.get("versions", {})),
        path=path,
    )
