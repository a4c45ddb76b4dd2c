"""timm encoders (optional extra) and the table of known pathology encoders.

``timm:<model_name>`` builds a timm model (``num_classes=0``, so it returns pooled
features) and loads a **local** weights file (safetensors, or a torch state dict read
with ``weights_only=True``). ``hf-hub:<org>/<repo>`` downloads from the Hugging Face
hub and is the only path that touches the network; it is used only when asked for by
name. The known pathology encoders below are registered by their short names (e.g.
``load_encoder("uni", weights="pytorch_model.bin")``): the user only points at the
weights (most are gated downloads that need accepting a licence).

The architectures, sizes and normalisations are those published by the model cards;
check the model card of the weights you downloaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..encoders.files import load_state_dict_file, load_weights_into
from ..encoders.spec import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, FrozenEncoder, hash_file
from ..errors import EncoderError

__all__ = ["KnownEncoder", "KNOWN_ENCODERS", "load_timm", "load_known"]

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HOPT_MEAN = (0.707223, 0.578729, 0.703617)
_HOPT_STD = (0.211883, 0.230117, 0.177517)


@dataclass(frozen=True)
class KnownEncoder:
    """A published pathology encoder: its timm architecture and what it expects.

    ``kwargs`` values written ``"@module.attr"`` are resolved at load time (timm layer
    classes). ``pooling`` turns timm's output into the embedding: ``"timm"`` (timm's own
    pooled output), ``"cls+mean"`` (class token concatenated with the mean of the patch
    tokens, skipping ``skip_tokens`` register tokens; Virchow).
    """

    name: str
    timm_name: str
    kwargs: dict[str, Any]
    input_size: int
    mpp: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    hub: str
    pooling: str = "timm"
    skip_tokens: int = 1
    strip_prefixes: tuple[str, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_SWIGLU = {"mlp_layer": "@timm.layers.SwiGLUPacked", "act_layer": "@torch.nn.SiLU"}
KNOWN_ENCODERS: dict[str, KnownEncoder] = {
    k.name: k
    for k in [
        KnownEncoder("uni", "vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
                     224, 0.5, IMAGENET_MEAN, IMAGENET_STD, 1024, "hf-hub:MahmoodLab/uni"),
        KnownEncoder("uni2-h", "vit_giant_patch14_224",
                     {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
                      "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True, **_SWIGLU},
                     224, 0.5, IMAGENET_MEAN, IMAGENET_STD, 1536, "hf-hub:MahmoodLab/UNI2-h"),
        KnownEncoder("virchow", "vit_huge_patch14_224",
                     {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True, **_SWIGLU},
                     224, 0.5, IMAGENET_MEAN, IMAGENET_STD, 2560, "hf-hub:paige-ai/Virchow", pooling="cls+mean", skip_tokens=1),
        KnownEncoder("virchow2", "vit_huge_patch14_224",
                     {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "", "reg_tokens": 4,
                      "dynamic_img_size": True, **_SWIGLU},
                     224, 0.5, IMAGENET_MEAN, IMAGENET_STD, 2560, "hf-hub:paige-ai/Virchow2", pooling="cls+mean", skip_tokens=5),
        KnownEncoder("h-optimus-0", "vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
                     224, 0.5, _HOPT_MEAN, _HOPT_STD, 1536, "hf-hub:bioptimus/H-optimus-0"),
        KnownEncoder("h-optimus-1", "vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
                     224, 0.5, _HOPT_MEAN, _HOPT_STD, 1536, "hf-hub:bioptimus/H-optimus-1"),
        KnownEncoder("prov-gigapath", "vit_giant_patch14_dinov2",
                     {"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24, "init_values": 1e-5,
                      "mlp_ratio": 5.33334},
                     224, 0.5, IMAGENET_MEAN, IMAGENET_STD, 1536, "hf-hub:prov-gigapath/prov-gigapath"),
        KnownEncoder("conch-vision", "vit_base_patch16_224", {"img_size": 448},
                     448, 0.5, _CLIP_MEAN, _CLIP_STD, 768, "hf-hub:MahmoodLab/CONCH", strip_prefixes=("visual.trunk.",),
                     note="vision trunk of CONCH v1 (768-d tokens pooled by timm), not the CLIP projection"),
        KnownEncoder("phikon", "vit_base_patch16_224", {"img_size": 224}, 224, 0.5, IMAGENET_MEAN, IMAGENET_STD, 768,
                     "hf-hub:owkin/phikon", note="weights in timm layout (the hub holds transformers layout)"),
        KnownEncoder("phikon-v2", "vit_large_patch16_224", {"img_size": 224, "init_values": 1e-5}, 224, 0.5,
                     IMAGENET_MEAN, IMAGENET_STD, 1024, "hf-hub:owkin/phikon-v2", note="weights in timm layout"),
        KnownEncoder("ctranspath", "swin_tiny_patch4_window7_224", {"img_size": 224}, 224, 1.0, IMAGENET_MEAN, IMAGENET_STD,
                     768, "", note="needs CTransPath's ConvStem patch embedding: export it to TorchScript instead"),
        KnownEncoder("lunit-dino-vits8", "vit_small_patch8_224", {"img_size": 224}, 224, 0.5,
                     (0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464), 384,
                     "hf-hub:1aurent/vit_small_patch8_224.lunit_dino"),
    ]
}


def _import_timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise EncoderError("timm is not installed: pip install 'napari-regional-mil[timm]' (or export the model to TorchScript)") from None


def _resolve(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("@"):
            module_name, _, attr = value[1:].rpartition(".")
            try:
                value = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                raise EncoderError(f"timm option {key}={value[1:]} is not available in this timm version") from None
        out[key] = value
    return out


class _TokenPooling(nn.Module):
    """Class token concatenated with the mean of the patch tokens (Virchow's embedding)."""

    def __init__(self, model: nn.Module, skip_tokens: int) -> None:
        super().__init__()
        self.model, self.skip_tokens = model, skip_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model(x)
        return torch.cat([tokens[:, 0], tokens[:, self.skip_tokens :].mean(1)], dim=-1)


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
    pooling: str = "timm",
    skip_tokens: int = 1,
    strip_prefixes: tuple[str, ...] = (),
    **timm_kwargs: Any,
) -> FrozenEncoder:
    """A timm model as frozen encoder.

    Parameters
    ----------
    model_name
        A timm architecture (``"vit_large_patch16_224"``) with a local ``weights`` file,
        or ``"hf-hub:org/repo"`` (downloads; the only networked path).
    weights
        Local weights file (safetensors or torch state dict); required unless hub.
    input_size, mpp, mean, std
        What the model expects.
    **timm_kwargs
        Passed to ``timm.create_model``.
    """
    timm = _import_timm()
    hub = model_name.startswith(("hf-hub:", "hf_hub:"))
    if not hub and weights is None:
        raise EncoderError(f"timm:{model_name}: give a local weights file (weights=...), or an hf-hub: name to download")
    kwargs = {"num_classes": 0, **_resolve(timm_kwargs)}
    try:
        model = timm.create_model(model_name, pretrained=hub and weights is None, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown model names, bad kwargs, network errors
        raise EncoderError(f"timm:{model_name}: cannot build the model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if weights is not None:
        load_weights_into(model, load_state_dict_file(weights), path=weights, strip_prefixes=strip_prefixes)
        weights_hash = hash_file(weights)
    else:
        from ..encoders.spec import hash_state_dict

        weights_hash = hash_state_dict(model)
    if pooling == "cls+mean":
        model = _TokenPooling(model, skip_tokens)
    with torch.inference_mode():
        dim = int(model.eval()(torch.zeros(1, 3, input_size, input_size)).shape[-1])
    spec = EncoderSpec(
        name=name or model_name.removeprefix("hf-hub:").removeprefix("hf_hub:"),
        embedding_dim=dim,
        input_size=input_size,
        mpp=mpp,
        mean=tuple(mean),
        std=tuple(std),
        weights_hash=weights_hash,
        kind="timm",
        source=str(weights) if weights else model_name,
        extra={"timm_name": model_name, "timm_kwargs": {k: str(v) for k, v in timm_kwargs.items()}},
    )
    return FrozenEncoder(model, spec, device=device)


def load_known(name: str, *, weights: str | None = None, device: str = "cpu", hub: bool = False) -> FrozenEncoder:
    """A known pathology encoder (:data:`KNOWN_ENCODERS`) from a local weights file.

    ``hub=True`` downloads from its ``hf-hub:`` name instead (network; gated models need
    a logged-in Hugging Face token).
    """
    known = KNOWN_ENCODERS[name]
    if weights is None and not hub:
        raise EncoderError(f"{name}: point at the downloaded weights (weights=..., --encoder-weights) or ask for hub=True")
    if hub and not known.hub:
        raise EncoderError(f"{name}: no hub name known; {known.note}")
    model_name = known.hub if (hub and weights is None) else known.timm_name
    return load_timm(
        model_name,
        weights=weights,
        device=device,
        input_size=known.input_size,
        mpp=known.mpp,
        mean=known.mean,
        std=known.std,
        name=name,
        pooling=known.pooling,
        skip_tokens=known.skip_tokens,
        strip_prefixes=known.strip_prefixes,
        **known.kwargs,
    )
