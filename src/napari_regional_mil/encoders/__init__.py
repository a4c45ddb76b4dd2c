"""Frozen encoders (the second model): registry, built-in H&E extractor, published encoders, files.

>>> from napari_regional_mil.encoders import load_encoder
>>> enc = load_encoder("builtin-he")          # no download, deterministic
>>> enc.embed(patches_uint8_nhwc).shape        # (N, enc.spec.embedding_dim)
>>> uni = load_encoder("uni_v1", weights="pytorch_model.bin")   # or from_hub=True (explicit download)
"""

from ..encoders.files import (
    load_state_dict_file,
    read_encoder_metadata,
    register_architecture,
    save_encoder,
)
from ..encoders.known import ALIASES, KNOWN_ENCODERS, KnownEncoder, canonical_name
from ..encoders.patch_cnn import PatchCNN
from ..encoders.policy import StoredEncoder, encoder_for_stored, stored_encoder
from ..encoders.published import expected_keys, known_encoder, load_known
from ..encoders.registry import (
    DEFAULT_ENCODER,
    EncoderLike,
    is_registered,
    list_encoders,
    load_encoder,
    register_encoder,
    resolve_encoder,
)
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_file, hash_state_dict

__all__ = [
    "ALIASES",
    "DEFAULT_ENCODER",
    "KNOWN_ENCODERS",
    "EncoderLike",
    "EncoderSpec",
    "FrozenEncoder",
    "KnownEncoder",
    "PatchCNN",
    "StoredEncoder",
    "canonical_name",
    "encoder_for_stored",
    "expected_keys",
    "hash_file",
    "hash_state_dict",
    "is_registered",
    "known_encoder",
    "list_encoders",
    "load_encoder",
    "load_known",
    "load_state_dict_file",
    "read_encoder_metadata",
    "register_architecture",
    "register_encoder",
    "resolve_encoder",
    "save_encoder",
    "stored_encoder",
]
