"""transformers architectures of known encoders (Phikon: ``ViTModel``; Phikon-v2: ``Dinov2Model``).

The model is built from its ``config.json`` (a JSON file read as data: no code, no
``trust_remote_code``), or from the configuration in the known-encoder table when the
weights come without one, and returns the class token of its last hidden state, as
TRIDENT does. Weights in the published transformers layout load as they are; a pooler
that the published file may carry is dropped (TRIDENT builds the model without it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..encoders.known import KnownEncoder
from ..errors import EncoderError

__all__ = ["OPTIONAL_KEYS", "ClassToken", "adapt_transformers_state", "build_transformers", "read_config"]

_MODELS = {"ViTModel": ("ViTConfig", "vit"), "Dinov2Model": ("Dinov2Config", "dinov2")}
#: Keys a published file may lack without changing the embedding (unused at inference).
OPTIONAL_KEYS = ("embeddings.mask_token",)


class ClassToken(nn.Module):
    """The class token of a transformers vision model's last hidden state, ``(N, C)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of a normalised ``(N, 3, H, W)`` batch."""
        return self.model(pixel_values=x).last_hidden_state[:, 0]


def read_config(path: Path, known: KnownEncoder) -> dict[str, Any]:
    """Read a transformers ``config.json`` as data and check it describes ``known``'s architecture."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderError(f"encoder {known.name}: {path}: unreadable config.json ({exc})") from None
    if not isinstance(data, dict):
        raise EncoderError(f"encoder {known.name}: {path}: config.json must hold a JSON object")
    expected = _MODELS[known.arch][1]
    if data.get("model_type") != expected:
        raise EncoderError(
            f"encoder {known.name}: {path}: model_type {data.get('model_type')!r} is not {expected!r} "
            f"(is this the config.json of {known.hub_repo}?)"
        )
    return data


def build_transformers(known: KnownEncoder, config: dict[str, Any] | None = None) -> ClassToken:
    """The transformers model of ``known`` (random weights), returning its class token.

    Built on the current default device (``with torch.device("meta"):`` builds shapes only).

    Parameters
    ----------
    known
        A known encoder of the ``"transformers"`` family.
    config
        Its ``config.json`` (default: the configuration in the table).
    """
    try:
        import transformers  # lazy: optional (the [hub] extra)
    except ImportError:
        raise EncoderError(
            f"encoder {known.name}: needs transformers: pip install -c constraints.txt "
            "'napari-regional-mil[hub]'"
        ) from None
    config_name, _ = _MODELS[known.arch]
    values = dict(known.kwargs if config is None else config)
    for key in ("auto_map", "architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        values.pop(key, None)  # provenance only; never code (auto_map) or a dtype change
    cfg = getattr(transformers, config_name)(**values)
    width = int(getattr(cfg, "hidden_size", 0))
    if width != known.embedding_dim:
        raise EncoderError(
            f"encoder {known.name}: config.json gives hidden_size {width}, expected "
            f"{known.embedding_dim} (is this {known.hub_repo}?)"
        )
    cls = getattr(transformers, known.arch)
    model = cls(cfg, add_pooling_layer=False) if known.arch == "ViTModel" else cls(cfg)
    return ClassToken(model)


def adapt_transformers_state(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Published transformers keys -> the model's: drop the pooler and a ``vit.``/``dinov2.`` prefix.

    Keys in :data:`OPTIONAL_KEYS` that the file lacks are filled with zeros.
    """
    for prefix in ("vit.", "dinov2.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    own = module.state_dict()
    for key in OPTIONAL_KEYS:
        if key in own and key not in state:
            state[key] = torch.zeros(own[key].shape, dtype=own[key].dtype)
    return state
