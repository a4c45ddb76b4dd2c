"""What may be loaded for an encoder name stored in a checkpoint or a cache.

A model checkpoint or an embedding cache records the encoder its embeddings came from
(name and weights hash). That record comes from a file someone else may have made, so
it must never start a download or load code by itself: :func:`encoder_for_stored` loads
only what needs nothing from outside (the built-in encoders) or what the user chose for
this run (a weights or TorchScript file they picked, or their "download from the hub"
choice), and checks that the result has the recorded weights hash. Otherwise it raises
one :class:`~napari_regional_mil.errors.EncoderError` line saying which encoder and which
weights are needed and how to give them. ``predict`` and the Predict widget call it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..encoders.known import KNOWN_ENCODERS, KnownEncoder, canonical_name
from ..encoders.names import SELF_CONTAINED, TORCHSCRIPT_SUFFIXES, is_registered
from ..errors import EncoderError

if TYPE_CHECKING:
    from ..encoders.hub import ProgressFn
    from ..encoders.spec import FrozenEncoder

__all__ = ["SELF_CONTAINED", "StoredEncoder", "embed_hint", "encoder_for_stored", "stored_encoder"]

Kind = Literal["self-contained", "known", "file", "timm", "hub", "registered", "unknown"]


@dataclass(frozen=True)
class StoredEncoder:
    """An encoder as a checkpoint or cache records it, and what loading it needs.

    Parameters
    ----------
    name
        The stored name (aliases resolved to TRIDENT's names).
    weights_hash
        The stored sha256 of its weights (``""`` when not recorded).
    kind
        ``"self-contained"`` (built-in), ``"known"`` (needs its weights file or a
        download), ``"file"`` (an encoder file: the user must pick it), ``"timm"`` (needs
        a weights file), ``"hub"`` (needs the download), ``"registered"`` (registered in
        this process by the user, e.g. a pretrained encoder), ``"unknown"``.
    known
        The table entry of a known encoder.
    """

    name: str
    weights_hash: str
    kind: Kind
    known: KnownEncoder | None = None

    def needs(self, what: str = "the model") -> str:
        """One line: which encoder and which weights are needed, and how to give them."""
        digest = f" (weights sha256 {self.weights_hash[:12]}...)" if self.weights_hash else ""
        lead = f"{what} was made with encoder {self.name}{digest}"
        if self.kind == "known" and self.known is not None:
            k = self.known
            if not k.loadable:
                return (
                    f"{lead}, which {k.needs}: give its TorchScript export or import TRIDENT's features "
                    "(import-h5)"
                )
            gated = ", gated: accept its terms on the hub first" if k.gated else ""
            return (
                f"{lead}: give its weights file ({k.weights_file} of {k.hub_repo}; "
                f"licence {k.licence}{gated}) "
                "or allow the download from the hub"
            )
        if self.kind == "file":
            ts = (
                " (TorchScript runs code: only a file you trust)"
                if Path(self.name).suffix in TORCHSCRIPT_SUFFIXES
                else ""
            )
            return f"{lead}: pick that encoder file yourself{ts}; it is never loaded from a stored path"
        if self.kind == "timm":
            return f"{lead}: give the weights file of this timm architecture"
        if self.kind == "hub":
            return f"{lead}: allow the download from the hub, or pick the encoder file"
        return f"{lead}: it is not known here; pick the encoder file it was made with"


def embed_hint(record: Mapping[str, Any] | str | None) -> str:
    """How to embed slides for a stored encoder record, as ``embed`` options (no file is looked at)."""
    need = stored_encoder(record)
    if need.kind == "known" and need.known is not None and need.known.loadable:
        k = need.known
        gated = ", gated" if k.gated else ""
        return (
            f"--encoder {need.name} --weights FILE ({k.weights_file} of {k.hub_repo}; {k.licence}{gated}) "
            "or --from-hub"
        )
    if need.kind in ("self-contained", "registered"):
        return f"--encoder {need.name}"
    if need.kind == "timm":
        return f"--encoder {need.name} --weights FILE"
    return f"--encoder FILE (the encoder it was made with: {need.name})"


def stored_encoder(record: Mapping[str, Any] | str | None) -> StoredEncoder:
    """Classify a stored encoder record (``{"name": ..., "weights_hash": ...}`` or a name).

    Raises
    ------
    EncoderError
        The record names no encoder.
    """
    data: Mapping[str, Any] = {"name": record} if isinstance(record, str) else (record or {})
    raw = str(data.get("name") or "").strip()
    if not raw:
        raise EncoderError(
            "the model does not record which encoder made its embeddings: embed its slides yourself "
            "with the encoder it was trained on"
        )
    name = canonical_name(raw)
    digest = str(data.get("weights_hash") or data.get("encoder_hash") or "")
    if name in SELF_CONTAINED:
        return StoredEncoder(name, digest, "self-contained")
    if name in KNOWN_ENCODERS:
        return StoredEncoder(name, digest, "known", KNOWN_ENCODERS[name])
    if name.startswith("timm:"):
        return StoredEncoder(name, digest, "timm")
    if name.startswith(("hf-hub:", "hf_hub:")):
        return StoredEncoder(name, digest, "hub")
    if is_registered(name):
        return StoredEncoder(name, digest, "registered")
    if Path(name).suffix.lower() in (".safetensors", *TORCHSCRIPT_SUFFIXES) or "/" in name or "\\" in name:
        return StoredEncoder(name, digest, "file")
    return StoredEncoder(name, digest, "unknown")


def encoder_for_stored(
    record: Mapping[str, Any] | str | None,
    *,
    weights: str | os.PathLike[str] | None = None,
    from_hub: bool = False,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    what: str = "the model",
) -> FrozenEncoder:
    """The encoder a checkpoint or cache records, loaded only from what the user chose.

    Parameters
    ----------
    record
        The stored record (``checkpoint.encoder``) or name.
    weights
        A file the user picked for this run: the weights of a known or timm encoder, or
        the encoder file itself (``.safetensors``, TorchScript).
    from_hub
        The user allows downloading a known encoder's weights (or reading them from the
        hub cache).
    device
        Where to run it.
    progress
        Download progress callback.
    what
        What made the record, for messages (``"model.safetensors"``).

    Raises
    ------
    EncoderError
        What is needed was not given (one line saying what and how), or the given
        weights are not the recorded ones (hash mismatch).
    """
    from ..encoders.registry import load_encoder  # lazy: torch (classifying a record needs none)

    need = stored_encoder(record)
    if need.kind in ("self-contained", "registered"):
        encoder = load_encoder(need.name, device=device)
    elif need.kind == "known" and need.known is not None and need.known.loadable and (weights or from_hub):
        encoder = load_encoder(
            need.name,
            device=device,
            weights=weights,
            from_hub=from_hub and weights is None,
            progress=progress,
        )
    elif need.kind == "timm" and weights:
        encoder = load_encoder(need.name, device=device, weights=os.fspath(weights))
    elif need.kind == "hub" and from_hub and weights is None:
        encoder = load_encoder(need.name, device=device)
    elif need.kind in ("file", "hub", "unknown") and weights:
        encoder = load_encoder(os.fspath(weights), device=device)  # the user's file, never the stored path
    else:
        raise EncoderError(need.needs(what))
    if need.weights_hash and encoder.spec.weights_hash != need.weights_hash:
        if need.kind == "self-contained":
            raise EncoderError(
                f"{what} was made with another version of {need.name} "
                f"(encoder weights hash {need.weights_hash[:12]}..., "
                f"this one {encoder.spec.weights_hash[:12]}...): embed the slides again and retrain"
            )
        raise EncoderError(
            f"{what} was made with {need.name} (encoder weights hash {need.weights_hash[:12]}...), but "
            f"{encoder.spec.source or need.name} has {encoder.spec.weights_hash[:12]}...: "
            "give the weights it was trained with"
        )
    return encoder
