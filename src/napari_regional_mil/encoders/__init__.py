"""Frozen encoders (the second model): registry, built-in H&E extractor, TorchScript, timm.

>>> from napari_regional_mil.encoders import load_encoder
>>> enc = load_encoder("builtin-he")          # no download, deterministic
>>> enc.embed(patches_uint8_nhwc).shape        # (N, enc.spec.embedding_dim)
"""

from ..encoders.files import load_state_dict_file, register_architecture, save_encoder
from ..encoders.patch_cnn import PatchCNN
from ..encoders.registry import (
    DEFAULT_ENCODER,
    EncoderLike,
    list_encoders,
    load_encoder,
    register_encoder,
    resolve_encoder,
)
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_file, hash_state_dict
from ..encoders.timm_models import KNOWN_ENCODERS, KnownEncoder

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderLike",
    "EncoderSpec",
    "FrozenEncoder",
    "KNOWN_ENCODERS",
    "KnownEncoder",
    "PatchCNN",
    "hash_file",
    "hash_state_dict",
    "list_encoders",
    "load_encoder",
    "load_state_dict_file",
    "register_architecture",
    "register_encoder",
    "resolve_encoder",
    "save_encoder",
]
