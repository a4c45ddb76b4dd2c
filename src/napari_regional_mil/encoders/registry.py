"""The registry of frozen encoders and :func:`load_encoder`, the one way to get one.

Names resolve in this order:

1. a registered name: ``"builtin-he"``, ``"resnet50-random"``, the known pathology
   encoders under TRIDENT's names (``"uni_v1"``, ``"virchow2"`` ...; earlier names such
   as ``"uni"`` are aliases) which need ``weights=`` or ``from_hub=True``, and whatever
   :func:`register_encoder` added (e.g. encoders the tool pretrained);
2. ``timm:<name>`` (any timm architecture with a local ``weights=`` file) and
   ``hf-hub:<org>/<repo>`` (a download the user asks for by writing it; a known
   encoder's repository builds that known encoder);
3. a file: ``.safetensors`` with an encoder description (what :func:`save_encoder`
   writes), or TorchScript (``.pt``, ``.ts``, ``.torchscript``, ``.jit``: runs the code it
   contains, so only from a file the user picked). Any other suffix is an error.

A name stored in a checkpoint or a cache never reaches this function without the user's
choice: :mod:`.policy` decides what may be loaded for a stored name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..encoders.builtin import builtin_he
from ..encoders.files import (
    load_saved_encoder,
    load_torchscript,
)
from ..encoders.known import IMAGENET_MEAN, IMAGENET_STD, KNOWN_ENCODERS, canonical_name
from ..encoders.names import (
    BUILTIN_NAME,
    DEFAULT_ENCODER,
    RESNET_RANDOM_NAME,
    TORCHSCRIPT_SUFFIXES,
    add_name,
    encoder_names,
    is_registered,
)
from ..encoders.published import load_known
from ..encoders.resnet import resnet50
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_state_dict
from ..encoders.timm_models import load_timm
from ..errors import EncoderError

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderLike",
    "is_registered",
    "list_encoders",
    "load_encoder",
    "register_encoder",
    "resolve_encoder",
]

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
    taken = name in _FACTORIES or canonical_name(name) in KNOWN_ENCODERS
    if (taken and not overwrite) or name.startswith(("timm:", "hf-hub:", "hf_hub:")):
        raise ValueError(f"encoder name {name!r} is taken or reserved")
    _FACTORIES[name] = factory
    add_name(name)


def list_encoders() -> list[str]:
    """Registered encoder names: built-ins first, then the known encoders (TRIDENT's names), then others."""
    return encoder_names()


def load_encoder(name_or_path: str | Path, *, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Build a frozen encoder by name or file.

    Parameters
    ----------
    name_or_path
        A registered name (:func:`list_encoders`, aliases included), ``timm:<model>``
        (needs ``weights=``), ``hf-hub:<org/repo>`` (downloads), or a path to a
        ``.safetensors`` encoder or a TorchScript file.
    device
        ``"cpu"`` or ``"cuda[:i]"``.
    **options
        Passed to the factory: ``weights=`` (a local weights file), ``from_hub=True``
        (known encoders: download), ``progress=`` (download callback), ``input_size``,
        ``mpp``, ``mean``, ``std``, ``embedding_dim`` (TorchScript).

    Raises
    ------
    EncoderError
        Unknown name, unreadable or foreign file, weights that do not fit, a download
        that fails.
    """
    key = canonical_name(str(name_or_path))
    if key in _FACTORIES:
        try:
            return _FACTORIES[key](device=device, **options)
        except TypeError as exc:
            raise EncoderError(f"encoder {key}: bad option ({exc})") from None
    if key.startswith("timm:"):
        return load_timm(key[len("timm:") :], device=device, **options)
    if key.startswith(("hf-hub:", "hf_hub:")):
        repo = key.split(":", 1)[1].lower()
        for known in KNOWN_ENCODERS.values():
            if known.hub_repo.lower() == repo and known.repo_type == "model":
                return load_known(known.name, device=device, from_hub=True, progress=options.get("progress"))
        return load_timm(key, device=device, **options)
    path = Path(key).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        if not path.is_file():
            raise EncoderError(f"{path}: encoder file not found")
        return load_saved_encoder(path, device=device, **options)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return load_torchscript(path, device=device, **options)
    if path.exists() or suffix:
        raise EncoderError(
            f"{path}: unknown encoder file type {suffix or '(no suffix)'!r}: use a .safetensors encoder, a "
            f"TorchScript file ({', '.join(TORCHSCRIPT_SUFFIXES)}), or a known encoder name with "
            "--weights FILE"
        )
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


def _resnet_random(
    *, device: str = "cpu", layers: int = 3, input_size: int = 224, mpp: float = 0.5
) -> FrozenEncoder:
    """Random-weight ResNet-50 (speed benchmarks only: weights do not change speed)."""
    module = resnet50(layers=layers, seed=0)
    spec = EncoderSpec(
        name="resnet50-random" if layers == 3 else "resnet50-random-full",
        embedding_dim=module.embedding_dim,
        input_size=input_size,
        mpp=mpp,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_hash=hash_state_dict(module),
        kind="torch",
        extra={"layers": layers},
    )
    return FrozenEncoder(module, spec, device=device)


def _known_factory(name: str) -> Callable[..., FrozenEncoder]:
    def factory(
        *,
        device: str = "cpu",
        weights: str | Path | None = None,
        from_hub: bool = False,
        hub: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> FrozenEncoder:
        return load_known(name, weights=weights, from_hub=from_hub or hub, device=device, progress=progress)

    known = KNOWN_ENCODERS[name]
    factory.__doc__ = f"{name}: {known.title}, {known.embedding_dim}-d"
    return factory


register_encoder(BUILTIN_NAME, builtin_he)
register_encoder(RESNET_RANDOM_NAME, _resnet_random)
for _name in KNOWN_ENCODERS:
    _FACTORIES[_name] = _known_factory(_name)
