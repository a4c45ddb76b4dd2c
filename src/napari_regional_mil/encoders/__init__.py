"""Frozen encoders (the second model): registry, built-in H&E extractor, TorchScript, timm.

>>> from napari_regional_mil.encoders import load_encoder
>>> enc = load_encoder("builtin-he")          # no download, deterministic
>>> enc.embed(patches_uint8_nhwc).shape        # (N, enc.spec.embedding_dim)
"""

from ..encoders.files import load_state_dict_file, register_architecture, save_encoder
from ..encoders.registry import DEFAULT_ENCODER, list_encoders, load_encoder, register_encoder
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_file, hash_state_dict
from ..encoders.timm_models import KNOWN_ENCODERS, KnownEncoder

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderSpec",
    "FrozenEncoder",
    "KNOWN_ENCODERS",
    "KnownEncoder",
    "hash_file",
    "hash_state_dict",
    "list_encoders",
    "load_encoder",
    "load_state_dict_file",
    "register_architecture",
    "register_encoder",
    "save_encoder",
]
