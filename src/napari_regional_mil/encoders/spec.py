"""What a frozen encoder (the second model) declares, and the wrapper that runs it.

An :class:`EncoderSpec` says what an encoder expects and produces: its input size in
pixels, the microns per pixel it was trained at, the normalisation of its input, the
dimension of its patch embeddings and a hash of its weights (recorded with every cached
embedding, so a cache made with other weights is never mistaken for this one).

A :class:`FrozenEncoder` wraps a ``torch.nn.Module`` in eval mode with no gradients and
turns a batch of patches (``uint8`` NHWC as read from a slide, or float NCHW in [0, 1])
into ``(N, D)`` patch embeddings, applying the resize and normalisation of its spec.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..encoders.known import IMAGENET_MEAN, IMAGENET_STD
from ..errors import EncoderError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EncoderSpec",
    "FrozenEncoder",
    "hash_file",
    "hash_state_dict",
    "resolve_device",
]


@dataclass(frozen=True)
class EncoderSpec:
    """What a frozen encoder expects and produces.

    Parameters
    ----------
    name
        Registry name or file stem (recorded in caches).
    embedding_dim
        D, the dimension of one patch embedding.
    input_size
        Side in pixels of the patches the encoder takes; ``None`` when it takes any size
        (the patches are then read at the tiling's patch size).
    mpp
        Microns per pixel the encoder was trained at; ``None`` when it has no preference
        (the tiling's ``target_mpp`` is used).
    mean, std
        Per-channel (RGB) normalisation applied to inputs scaled to [0, 1].
    weights_hash
        sha256 (hex) of the weights (state dict bytes or the weights file).
    kind
        ``"builtin"``, ``"torchscript"``, ``"timm"``, ``"transformers"`` or ``"torch"``.
    source
        Where the weights came from (file path or hub name); empty for built-ins.
    extra
        Free-form provenance (architecture, options), JSON-serialisable.
    interpolation
        How patches of another size are resized to ``input_size``: ``"bilinear"`` or
        ``"bicubic"`` (antialiased either way).
    """

    name: str
    embedding_dim: int
    input_size: int | None = 224
    mpp: float | None = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_hash: str = ""
    kind: str = "torch"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    interpolation: str = "bilinear"

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the encoder file / cache attribute form)."""
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "encoder spec") -> EncoderSpec:
        """Build a spec from :meth:`to_json` output (unknown keys are ignored)."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            for key in ("mean", "std"):
                if key in kwargs:
                    kwargs[key] = tuple(float(v) for v in kwargs[key])
                    if len(kwargs[key]) != 3:
                        raise ValueError(f"{key} needs 3 values")
            if kwargs.get("interpolation", "bilinear") not in ("bilinear", "bicubic"):
                raise ValueError(f"interpolation {kwargs['interpolation']!r} is not bilinear or bicubic")
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise EncoderError(f"{where}: invalid encoder description ({exc})") from None

    def with_(self, **changes: Any) -> EncoderSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when torch sees an NVIDIA GPU, else ``"cpu"``; any other value as it is."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def hash_state_dict(module_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict: names, dtypes, shapes and bytes, in name order."""
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def hash_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


class FrozenEncoder:
    """A frozen encoder: an ``nn.Module`` in eval mode, its spec and its device.

    Parameters
    ----------
    module
        Maps a normalised float batch ``(N, 3, H, W)`` to ``(N, D)`` (or to a feature
        map ``(N, D, h, w)``, which is average-pooled).
    spec
        What the encoder expects and produces.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    """

    def __init__(self, module: nn.Module, spec: EncoderSpec, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EncoderError(f"encoder {spec.name}: device {device} asked but CUDA is not available")
        module = module.eval()
        for param in module.parameters():
            param.requires_grad_(False)
        self.module = module.to(self.device)
        with contextlib.suppress(Exception):  # TorchScript modules may refuse memory formats
            self.module = self.module.to(memory_format=torch.channels_last)
        self.spec = spec
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._identity = tuple(spec.mean) == (0.0, 0.0, 0.0) and tuple(spec.std) == (1.0, 1.0, 1.0)
        # a module that reads uint8 (N, H, W, 3) itself (the built-in encoder) gets the pixels untouched
        self._raw_uint8 = (
            bool(getattr(module, "takes_uint8_nhwc", False)) and self._identity and spec.input_size is None
        )

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"FrozenEncoder({s.name!r}, dim={s.embedding_dim}, input={s.input_size}, mpp={s.mpp}, "
            f"{self.device})"
        )

    def preprocess(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Turn patches into the normalised float NCHW (channels-last) tensor the module takes.

        ``uint8`` input is NHWC RGB (as read from a slide); float input is NCHW in [0, 1].
        Patches whose side differs from ``spec.input_size`` are resized (bilinear or
        bicubic as the spec says, antialiased). A module that reads ``uint8`` NHWC itself
        (``takes_uint8_nhwc``, the built-in encoder) gets ``uint8`` patches as they are.
        """
        x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"uint8 patches must be (N, H, W, 3), got {tuple(x.shape)}")
            if self._raw_uint8:
                return x.to(self.device, non_blocking=True).contiguous()
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        else:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"float patches must be (N, 3, H, W), got {tuple(x.shape)}")
            x = x.to(self.device, dtype=torch.float32)
        size = self.spec.input_size
        if size is not None and (x.shape[-2] != size or x.shape[-1] != size):
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode=self.spec.interpolation, antialias=True, align_corners=False
            )
            if self.spec.interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)  # bicubic overshoots; the encoder saw [0, 1] images
        if not self._identity:
            x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    def embed(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``(N, D)`` float32 on the encoder's device."""
        x = self.preprocess(batch)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == 4:
            out = out.mean(dim=(2, 3))
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise EncoderError(f"encoder {self.spec.name}: output shape {tuple(out.shape)} is not (N, D)")
        return out.float()

    __call__ = embed
