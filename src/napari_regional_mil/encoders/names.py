"""Encoder names without torch: the built-ins, the default, the registered names, file suffixes.

The Embed, Cohort and Predict widgets list the encoders and classify a model's stored
encoder when they are built, in the GUI thread; this module (and :mod:`.known`, the table
of published encoders) lets them do it without importing torch, which takes seconds.
:mod:`.registry` keeps the encoders' factories and adds every name it registers here, so
:func:`encoder_names` and :func:`~napari_regional_mil.encoders.list_encoders` agree.
"""

from __future__ import annotations

from ..encoders.known import KNOWN_ENCODERS, canonical_name

__all__ = [
    "BUILTIN_NAME",
    "DEFAULT_ENCODER",
    "RESNET_RANDOM_NAME",
    "SELF_CONTAINED",
    "TORCHSCRIPT_SUFFIXES",
    "add_name",
    "encoder_names",
    "is_registered",
]

#: The built-in H&E feature extractor (no download).
BUILTIN_NAME = "builtin-he"
#: A ResNet-50 with fixed random weights (a baseline; no download).
RESNET_RANDOM_NAME = "resnet50-random"
#: The encoder used when none is named.
DEFAULT_ENCODER = BUILTIN_NAME
#: Encoders that need no file and no download: safe to build for any stored name.
SELF_CONTAINED = (BUILTIN_NAME, RESNET_RANDOM_NAME)
#: Suffixes of TorchScript encoder files (they run the code they contain).
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript", ".jit")

# built-ins first, then the known encoders (TRIDENT's names), then what register_encoder adds
_NAMES: list[str] = [*SELF_CONTAINED, *KNOWN_ENCODERS]


def encoder_names() -> list[str]:
    """Registered encoder names, in :func:`~napari_regional_mil.encoders.list_encoders`' order."""
    return list(_NAMES)


def is_registered(name: str) -> bool:
    """Whether ``name`` (or the alias of a known encoder) is a registered encoder name."""
    return name in _NAMES or canonical_name(name) in _NAMES


def add_name(name: str) -> None:
    """Record a name :func:`~napari_regional_mil.encoders.register_encoder` registered."""
    if name not in _NAMES:
        _NAMES.append(name)
