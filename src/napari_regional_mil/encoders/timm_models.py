"""timm architectures: the known ViT encoders and ``timm:<name>`` with a local weights file.

:func:`build_timm` builds a timm model with ``num_classes=0`` (timm's pooled features, or
the token sequence when ``global_pool=""``) and wraps it so its output is the patch
embedding (:class:`TokenPooling` for Virchow's class token + mean patch token).
:func:`load_timm` is the ``timm:<model_name>`` path: any timm architecture with a
**local** weights file (safetensors, or a torch state dict read with
``weights_only=True``). ``hf-hub:<org>/<repo>`` of a repository that is not a known
encoder builds what the repository's ``config.json`` names through timm (a download the
user asked for by writing ``hf-hub:``; timm reads the weights with ``weights_only=True``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..encoders.files import load_state_dict_file, load_weights_into
from ..encoders.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    FrozenEncoder,
    hash_file,
    hash_state_dict,
)
from ..errors import EncoderError

__all__ = ["TokenPooling", "build_timm", "import_timm", "load_timm"]


def import_timm() -> ModuleType:
    """The timm module (part of the default install; a clear error when it is missing)."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise EncoderError(
            "timm is not installed: pip install -c constraints.txt timm (or export the model to TorchScript)"
        ) from None


def _resolve(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Replace ``"@module.attr"`` values by the object they name (timm layer classes)."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("@"):
            module_name, _, attr = value[1:].rpartition(".")
            try:
                value = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                raise EncoderError(
                    f"timm option {key}={value[1:]} is not available in this timm version"
                ) from None
        out[key] = value
    return out


class TokenPooling(nn.Module):
    """Class token concatenated with the mean of the patch tokens (Virchow's embedding).

    Parameters
    ----------
    model
        A timm ViT built with ``global_pool=""`` (returns ``(N, tokens, C)``).
    skip_tokens
        Prefix tokens (class token and registers) left out of the mean.
    """

    def __init__(self, model: nn.Module, skip_tokens: int) -> None:
        super().__init__()
        self.model, self.skip_tokens = model, skip_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 2 C)``: class token, then the mean patch token."""
        tokens = self.model(x)
        return torch.cat([tokens[:, 0], tokens[:, self.skip_tokens :].mean(1)], dim=-1)


def build_timm(
    model_name: str, kwargs: dict[str, Any], *, pooling: str = "timm", skip_tokens: int = 1
) -> nn.Module:
    """A timm model with random weights, wrapped to return the patch embedding.

    Built on the current default device (``with torch.device("meta"):`` builds shapes only).

    Parameters
    ----------
    model_name
        timm architecture.
    kwargs
        ``timm.create_model`` keyword arguments (``"@module.attr"`` values resolved).
    pooling
        ``"timm"`` (timm's output) or ``"cls+mean"`` (:class:`TokenPooling`).
    skip_tokens
        Prefix tokens skipped by ``"cls+mean"``.

    Returns
    -------
    torch.nn.Module
        The model; its state-dict keys are timm's (``TokenPooling`` keeps them by loading
        into ``.model``: use :func:`inner_module`).
    """
    timm = import_timm()
    args = {"num_classes": 0, **_resolve(kwargs)}
    try:
        model = timm.create_model(model_name, pretrained=False, **args)
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise EncoderError(
            f"timm:{model_name}: cannot build the model ({type(exc).__name__}: {first})"
        ) from None
    return TokenPooling(model, skip_tokens) if pooling == "cls+mean" else model


def inner_module(module: nn.Module) -> nn.Module:
    """The module whose state dict the published weights fill (the timm model inside a wrapper)."""
    return module.model if isinstance(module, TokenPooling) else module


def load_timm(
    model_name: str,
    *,
    weights: str | None = None,
    device: str = "cpu",
    input_size: int = 224,
    mpp: float = 0.5,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    name: str | None = None,
    **timm_kwargs: Any,
) -> FrozenEncoder:
    """A timm model as frozen encoder: ``timm:<name>`` with a local file, or ``hf-hub:<repo>``.

    Parameters
    ----------
    model_name
        A timm architecture (``"vit_large_patch16_224"``) with a local ``weights`` file,
        or ``"hf-hub:org/repo"`` (downloads through timm; asked for by name).
    weights
        Local weights file (safetensors or torch state dict); required unless hub.
    device
        Where to run it.
    input_size, mpp, mean, std
        What the model expects.
    name
        Name recorded in the spec (default: the model name).
    **timm_kwargs
        Passed to ``timm.create_model``.
    """
    timm = import_timm()
    hub = model_name.startswith(("hf-hub:", "hf_hub:"))
    if not hub and weights is None:
        raise EncoderError(f"timm:{model_name}: give a local weights file (--weights FILE)")
    kwargs = {"num_classes": 0, **_resolve(timm_kwargs)}
    try:
        model = timm.create_model(model_name, pretrained=hub and weights is None, **kwargs)
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise EncoderError(
            f"{'' if hub else 'timm:'}{model_name}: cannot build the model ({type(exc).__name__}: {first})"
        ) from None
    if weights is not None:
        load_weights_into(model, load_state_dict_file(weights), path=weights)
        weights_hash = hash_file(weights)
    else:
        weights_hash = hash_state_dict(model)
    with torch.inference_mode():
        dim = int(model.eval()(torch.zeros(1, 3, input_size, input_size)).shape[-1])
    spec = EncoderSpec(
        name=name or model_name.removeprefix("hf-hub:").removeprefix("hf_hub:"),
        embedding_dim=dim,
        input_size=input_size,
        mpp=mpp,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        weights_hash=weights_hash,
        kind="timm",
        source=str(weights) if weights else model_name,
        extra={"timm_name": model_name, "timm_kwargs": {k: str(v) for k, v in timm_kwargs.items()}},
    )
    return FrozenEncoder(model, spec, device=device)
