"""The registry of frozen encoders and :func:`load_encoder`, the one way to get one.

Names resolve in this order: a registered name (``"builtin-he"``, ``"resnet50-random"``,
``"resnet50"``, the known pathology encoders such as ``"uni"``, and whatever
:func:`register_encoder` added, e.g. encoders the tool pretrained), then ``timm:<name>``
and ``hf-hub:<repo>``, then a file path (TorchScript, or safetensors + JSON
architecture).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..encoders.builtin import BUILTIN_NAME, builtin_he
from ..encoders.files import (
    TORCHSCRIPT_SUFFIXES,
    load_saved_encoder,
    load_state_dict_file,
    load_torchscript,
    load_weights_into,
    register_architecture,
)
from ..encoders.patch_cnn import ARCHITECTURE as PATCH_CNN_ARCHITECTURE
from ..encoders.patch_cnn import PatchCNN
from ..encoders.resnet import ResNet50, resnet50
from ..encoders.spec import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, FrozenEncoder, hash_file, hash_state_dict
from ..encoders.timm_models import KNOWN_ENCODERS, load_known, load_timm
from ..errors import EncoderError

__all__ = ["DEFAULT_ENCODER", "EncoderLike", "register_encoder", "list_encoders", "load_encoder", "resolve_encoder"]

DEFAULT_ENCODER = BUILTIN_NAME
_FACTORIES: dict[str, Callable[..., FrozenEncoder]] = {}


def register_encoder(name: str, factory: Callable[..., FrozenEncoder], *, overwrite: bool = False) -> None:
    """Register an encoder under ``name``.

    Parameters
    ----------
    name
        The name users pass to :func:`load_encoder` and ``--encoder``.
    factory
        Called as ``factory(device=..., **options)``; returns a :class:`FrozenEncoder`.
    overwrite
        Replace an existing registration instead of raising ``ValueError``.
    """
    if (name in _FACTORIES and not overwrite) or name.startswith(("timm:", "hf-hub:")):
        raise ValueError(f"encoder name {name!r} is taken or reserved")
    _FACTORIES[name] = factory


def list_encoders() -> list[str]:
    """Registered encoder names (built-ins first)."""
    return list(_FACTORIES)


def load_encoder(name_or_path: str | Path, *, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Build a frozen encoder by name or file.

    Parameters
    ----------
    name_or_path
        A registered name (:func:`list_encoders`), ``timm:<model>`` (needs
        ``weights=``), ``hf-hub:<org/repo>`` (downloads), or a path to a TorchScript
        file or a ``.safetensors`` encoder with its JSON sidecar.
    device
        ``"cpu"`` or ``"cuda[:i]"``.
    **options
        Passed to the factory: e.g. ``weights=`` (a local weights file), ``input_size``,
        ``mpp``, ``mean``, ``std``, ``embedding_dim`` (TorchScript), ``layers``
        (ResNet-50).

    Raises
    ------
    EncoderError
        Unknown name, unreadable or foreign file, weights that do not fit.
    """
    key = str(name_or_path)
    if key in _FACTORIES:
        try:
            return _FACTORIES[key](device=device, **options)
        except TypeError as exc:
            raise EncoderError(f"encoder {key}: bad option ({exc})") from None
    if key.startswith("timm:"):
        return load_timm(key[len("timm:") :], device=device, **options)
    if key.startswith(("hf-hub:", "hf_hub:")):
        return load_timm(key, device=device, **options)
    path = Path(key).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise EncoderError(f"{path}: encoder file not found")
        return load_saved_encoder(path, device=device, **options)
    if path.suffix in TORCHSCRIPT_SUFFIXES or path.is_file():
        return load_torchscript(path, device=device, **options)
    raise EncoderError(f"unknown encoder {key!r}: not a file, and not one of {', '.join(list_encoders())}")


#: What the embedding jobs accept as an encoder: a name or file for :func:`load_encoder`, or a loaded one.
EncoderLike = str | os.PathLike[str] | FrozenEncoder


def resolve_encoder(
    encoder: EncoderLike, *, device: str = "cpu", options: Mapping[str, Any] | None = None
) -> FrozenEncoder:
    """A loaded encoder as it is; otherwise :func:`load_encoder` with ``device`` and ``options``.

    Parameters
    ----------
    encoder
        A :class:`FrozenEncoder`, or a registered name, ``timm:...`` or an encoder file.
    device
        Where a loaded encoder runs (``"cpu"``, ``"cuda[:i]"``); ignored for a loaded one.
    options
        Keyword options of :func:`load_encoder` (e.g. ``{"weights": path}``).

    Raises
    ------
    EncoderError
        An encoder that cannot be loaded.
    """
    if isinstance(encoder, FrozenEncoder):
        return encoder
    return load_encoder(os.fspath(encoder), device=device, **dict(options or {}))


def _resnet(*, device: str = "cpu", weights: str | None = None, layers: int = 3, input_size: int = 224, mpp: float = 0.5) -> FrozenEncoder:
    module = resnet50(layers=layers, seed=0)
    if weights is not None:
        state = load_state_dict_file(weights)
        if layers == 3:  # a full torchvision checkpoint: drop what the truncated model lacks
            state = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
        else:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        load_weights_into(module, state, path=weights)
    name = "resnet50" if weights else "resnet50-random"
    spec = EncoderSpec(
        name=name if layers == 3 else f"{name}-full",
        embedding_dim=module.embedding_dim,
        input_size=input_size,
        mpp=mpp,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_hash=hash_file(weights) if weights else hash_state_dict(module),
        kind="torch",
        source=str(weights or ""),
        extra={"layers": layers},
    )
    return FrozenEncoder(module, spec, device=device)


def _resnet_random(*, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Random-weight ResNet-50 (speed benchmarks only: weights do not change speed)."""
    options.pop("weights", None)
    return _resnet(device=device, **options)


def _resnet_weights(*, device: str = "cpu", weights: str | None = None, **options: Any) -> FrozenEncoder:
    if weights is None:
        raise EncoderError("resnet50: give a local weights file (weights=..., torchvision resnet50 layout)")
    return _resnet(device=device, weights=weights, **options)


def _known_factory(name: str) -> Callable[..., FrozenEncoder]:
    def factory(*, device: str = "cpu", weights: str | None = None, hub: bool = False) -> FrozenEncoder:
        return load_known(name, weights=weights, device=device, hub=hub)

    factory.__doc__ = f"{name}: {KNOWN_ENCODERS[name].timm_name}, {KNOWN_ENCODERS[name].embedding_dim}-d"
    return factory


register_encoder(BUILTIN_NAME, builtin_he)
register_encoder("resnet50-random", _resnet_random)
register_encoder("resnet50", _resnet_weights)
for _name in KNOWN_ENCODERS:
    register_encoder(_name, _known_factory(_name))
register_architecture("resnet50", lambda layers=3: ResNet50(layers=layers))

register_architecture(PATCH_CNN_ARCHITECTURE, PatchCNN)  # encoders trained by the tool (``pretrain/``)
