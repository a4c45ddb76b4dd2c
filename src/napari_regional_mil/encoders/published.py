"""Loading a published encoder (:data:`~napari_regional_mil.encoders.known.KNOWN_ENCODERS`).

The architecture is built from the table (TRIDENT's), on the meta device (no time spent
on random initialisation), and the published weights are assigned to it strictly: every
key present, none left over, every shape right. The weights come from a file the user
gives (``weights=``, ``--weights FILE``) or, when asked (``from_hub=True``,
``--from-hub``), from the Hugging Face hub through :mod:`.hub`; both use the same
reading and checking code. Weights files are read with safetensors or
``torch.load(weights_only=True)``; nothing runs code from a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..encoders.files import load_state_dict_file, load_weights_into
from ..encoders.hf_models import ClassToken, adapt_transformers_state, build_transformers, read_config
from ..encoders.hub import ProgressFn, cached_file, fetch_file
from ..encoders.known import KNOWN_ENCODERS, KnownEncoder, canonical_name
from ..encoders.resnet import ResNet50
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_file
from ..encoders.timm_models import TokenPooling, build_timm
from ..errors import EncoderError

__all__ = ["build_known", "expected_keys", "known_encoder", "load_known", "unavailable_message"]


def known_encoder(name: str) -> KnownEncoder:
    """The table entry of a known encoder by TRIDENT's name or an alias; ``EncoderError`` if unknown."""
    canonical = canonical_name(name)
    if canonical not in KNOWN_ENCODERS:
        raise EncoderError(f"unknown encoder {name!r}: known are {', '.join(KNOWN_ENCODERS)}")
    return KNOWN_ENCODERS[canonical]


def unavailable_message(known: KnownEncoder) -> str:
    """Why an encoder cannot be built here and what to use instead."""
    return (
        f"encoder {known.name}: {known.needs}: export its image encoder to TorchScript and give that file as "
        f"--encoder (see docs/encoders.md), or import TRIDENT's {known.name} features with import-h5"
    )


def build_known(known: KnownEncoder, *, config: dict[str, Any] | None = None) -> nn.Module:
    """The architecture of a known encoder with random weights, on the current default device.

    ``with torch.device("meta"):`` builds the shapes only (for checks and fast loading).

    Parameters
    ----------
    known
        The encoder.
    config
        A transformers ``config.json`` (transformers family only).
    """
    if not known.loadable:
        raise EncoderError(unavailable_message(known))
    if known.family == "timm":
        return build_timm(known.arch, known.kwargs, pooling=known.pooling, skip_tokens=known.skip_tokens)
    if known.family == "transformers":
        return build_transformers(known, config)
    return ResNet50(layers=int(known.kwargs.get("layers", 3)))


def _weights_module(module: nn.Module) -> nn.Module:
    """The part of a built encoder whose state dict the published file fills."""
    return module.model if isinstance(module, (TokenPooling, ClassToken)) else module


def expected_keys(known: KnownEncoder) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes the published weights file must provide (built on the meta device)."""
    with torch.device("meta"):
        module = build_known(known)
    return {k: tuple(v.shape) for k, v in _weights_module(module).state_dict().items()}


def _adapt(known: KnownEncoder, state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    if known.family == "transformers":
        return adapt_transformers_state(state, target)
    if known.family == "resnet50":  # a full ResNet-50 file: drop what the truncated model lacks
        drop = ("fc.",) if int(known.kwargs.get("layers", 3)) == 4 else ("layer4.", "fc.")
        return {k: v for k, v in state.items() if not k.startswith(drop)}
    return state


def _config_for(
    known: KnownEncoder, weights: Path, *, from_hub: bool, progress: ProgressFn | None
) -> dict | None:
    """The transformers ``config.json`` that comes with the weights (hub or beside the file), if any."""
    if known.family != "transformers" or not known.config_file:
        return None
    if from_hub:
        return read_config(fetch_file(known, known.config_file, progress=progress), known)
    beside = weights.parent / known.config_file
    return read_config(beside, known) if beside.is_file() else None


def load_known(
    name: str,
    *,
    weights: str | Path | None = None,
    from_hub: bool = False,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> FrozenEncoder:
    """A known encoder with its published weights, from a local file or (when asked) the hub.

    Parameters
    ----------
    name
        TRIDENT's name or an alias (``"uni_v1"``, ``"uni"``).
    weights
        The weights file (``pytorch_model.bin``, ``model.safetensors`` ...). For Phikon
        models a ``config.json`` beside it is used when present.
    from_hub
        Download the weights (or take them from the hub cache): the user's explicit choice.
    device
        Where to run the encoder.
    progress
        Called with (bytes done, bytes total) while downloading.

    Raises
    ------
    EncoderError
        Unknown or unavailable encoder, neither weights nor ``from_hub``, download
        failures, weights that do not fit (naming the encoder, the file and what to do).
    """
    known = known_encoder(name)
    if not known.loadable:
        raise EncoderError(unavailable_message(known))
    if weights is None and not from_hub:
        local = cached_file(known)
        where = f" (already in the hub cache: {local})" if local is not None else ""
        raise EncoderError(
            f"encoder {known.name}: give its weights file ({known.weights_file} of {known.hub_repo}) with "
            f"--weights FILE, or allow the download with --from-hub{where}"
        )
    path = Path(weights).expanduser() if weights is not None else fetch_file(known, progress=progress)
    config = _config_for(known, path, from_hub=weights is None, progress=progress)
    try:
        state = load_state_dict_file(path)
    except EncoderError as exc:  # name the encoder and what it needs
        raise EncoderError(
            f"encoder {known.name}: {exc}; give the {known.weights_file} of {known.hub_repo}"
        ) from None
    with torch.device("meta"):
        module = build_known(known, config=config)
    target = _weights_module(module)
    hint = f"; expected {known.weights_file} of {known.hub_repo} ({known.title})"
    load_weights_into(
        target,
        _adapt(known, state, target),
        path=path,
        prefix=f"encoder {known.name}: ",
        hint=hint,
        assign=True,
    )
    leftover = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if leftover:  # a tensor the file does not carry (non-persistent buffer): cannot run
        raise EncoderError(f"encoder {known.name}: {path}: no values for {', '.join(leftover[:3])}")
    spec = EncoderSpec(
        name=known.name,
        embedding_dim=known.embedding_dim,
        input_size=known.input_size,
        mpp=known.mpp,
        mean=known.mean,
        std=known.std,
        weights_hash=hash_file(path),
        kind=known.family,
        source=str(path.resolve())
        if weights is not None
        else f"hf-hub:{known.hub_repo}/{known.weights_file}",
        interpolation=known.interpolation,
        extra={"arch": known.arch, "hub_repo": known.hub_repo, "pooling": known.pooling},
    )
    return FrozenEncoder(module, spec, device=device)
