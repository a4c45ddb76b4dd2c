"""Frozen encoders (the second model): registry, built-in H&E extractor, published encoders, files.

>>> from napari_regional_mil.encoders import load_encoder
>>> enc = load_encoder("builtin-he")          # no download, deterministic
>>> enc.embed(patches_uint8_nhwc).shape        # (N, enc.spec.embedding_dim)
>>> uni = load_encoder("uni_v1", weights="pytorch_model.bin")   # or from_hub=True (explicit download)

The names are resolved on first use (PEP 562): the encoder names, the table of published
encoders and the stored-encoder policy (:mod:`.names`, :mod:`.known`, :mod:`.policy`)
import no torch, so a widget can list the encoders without it.
"""

from typing import TYPE_CHECKING, Any

from ..lazy import resolve as _resolve

if TYPE_CHECKING:  # the names below, for type checkers and IDEs
    from .files import load_state_dict_file, read_encoder_metadata, register_architecture, save_encoder
    from .known import ALIASES, KNOWN_ENCODERS, KnownEncoder, canonical_name
    from .names import DEFAULT_ENCODER, is_registered
    from .patch_cnn import PatchCNN
    from .policy import StoredEncoder, encoder_for_stored, stored_encoder
    from .published import expected_keys, known_encoder, load_known
    from .registry import EncoderLike, list_encoders, load_encoder, register_encoder, resolve_encoder
    from .spec import EncoderSpec, FrozenEncoder, hash_file, hash_state_dict

#: Public name -> submodule, imported on first use.
_LAZY = {
    "ALIASES": "known",
    "DEFAULT_ENCODER": "names",
    "KNOWN_ENCODERS": "known",
    "EncoderLike": "registry",
    "EncoderSpec": "spec",
    "FrozenEncoder": "spec",
    "KnownEncoder": "known",
    "PatchCNN": "patch_cnn",
    "StoredEncoder": "policy",
    "canonical_name": "known",
    "encoder_for_stored": "policy",
    "expected_keys": "published",
    "hash_file": "spec",
    "hash_state_dict": "spec",
    "is_registered": "names",
    "known_encoder": "published",
    "list_encoders": "registry",
    "load_encoder": "registry",
    "load_known": "published",
    "load_state_dict_file": "files",
    "read_encoder_metadata": "files",
    "register_architecture": "files",
    "register_encoder": "registry",
    "resolve_encoder": "registry",
    "save_encoder": "files",
    "stored_encoder": "policy",
}


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use (or a submodule asked for by name)."""
    return _resolve(__name__, _LAZY, globals(), name)


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
