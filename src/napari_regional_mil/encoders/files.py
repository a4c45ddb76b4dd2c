"""Encoders stored in files: weights, TorchScript, and encoders the tool saves itself.

Two file formats hold a whole encoder, each in **one file** (weights and description
replaced together by one atomic rename):

* **safetensors with header metadata** (``.safetensors``; written by :func:`save_encoder`,
  e.g. by ``pretrain``): the header's ``__metadata__`` entry
  ``napari_regional_mil.encoder`` holds ``{"arch": name, "arch_kwargs": {...},
  "spec": {...}}``; the architecture is built by a function registered with
  :func:`register_architecture` (the built-in ResNet-50, the tool's pretrained encoders),
  then the weights are loaded. No code is read from the file.
* **TorchScript** (``.pt``, ``.ts``, ``.torchscript``, ``.jit``; made by ``torch.jit.save``):
  any architecture, **runs the code it contains**: loaded only from a file the user picked
  with one of these suffixes. Its description is an extra file
  ``napari_regional_mil.encoder.json`` inside the archive (what :func:`save_encoder`
  writes), or the user's options; a missing dimension is found by a dummy forward pass.

Files written before the description moved into the file have a JSON sidecar
``<file>.json``; it is still read when the file itself carries no description. Any
other suffix is refused with one line saying what is accepted.

Nothing is ever unpickled: weights are read with safetensors or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from ..encoders.names import TORCHSCRIPT_SUFFIXES
from ..encoders.patch_cnn import ARCHITECTURE as PATCH_CNN_ARCHITECTURE
from ..encoders.patch_cnn import PatchCNN
from ..encoders.resnet import ResNet50
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_file, hash_state_dict
from ..errors import EncoderError

__all__ = [
    "METADATA_KEY",
    "TORCHSCRIPT_SUFFIXES",
    "WEIGHTS_SUFFIXES",
    "load_saved_encoder",
    "load_state_dict_file",
    "load_torchscript",
    "load_weights_into",
    "read_encoder_metadata",
    "register_architecture",
    "save_encoder",
    "sidecar_path",
]

#: Suffixes of weights files (state dicts): safetensors, or torch files read with ``weights_only=True``.
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
#: The safetensors header metadata key / TorchScript extra file holding an encoder's description.
METADATA_KEY = "napari_regional_mil.encoder"
_EXTRA_FILE = f"{METADATA_KEY}.json"
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str, builder: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Register a module builder so safetensors encoders of this architecture can be loaded.

    Parameters
    ----------
    name
        Architecture name stored in the file's metadata (``"arch"``).
    builder
        Called with the metadata's ``arch_kwargs``; returns the (untrained) module.
    overwrite
        Replace an existing registration instead of raising ``ValueError``.
    """
    if name in _ARCHITECTURES and not overwrite:
        raise ValueError(f"architecture {name!r} is already registered")
    _ARCHITECTURES[name] = builder


register_architecture("resnet50", lambda layers=3: ResNet50(layers=layers))
register_architecture(PATCH_CNN_ARCHITECTURE, PatchCNN)  # encoders trained by the tool (``pretrain/``)


def sidecar_path(path: str | Path) -> Path:
    """The legacy JSON sidecar of an encoder file: ``<file>.json`` (``<stem>.json`` also accepted)."""
    path = Path(path)
    full = path.with_name(path.name + ".json")
    if full.exists():
        return full
    stem = path.with_suffix(".json")
    return stem if stem.exists() and stem != path else full


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{side}: unreadable encoder sidecar ({exc})") from None
    if not isinstance(data, dict):
        raise EncoderError(f"{side}: encoder sidecar must hold a JSON object")
    return data


def _parse_metadata(text: str | bytes, where: Path) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EncoderError(f"{where}: unreadable encoder description in the file ({exc})") from None
    if not isinstance(data, dict):
        raise EncoderError(f"{where}: the encoder description in the file is not a JSON object")
    return data


def read_encoder_metadata(path: str | Path) -> dict[str, Any]:
    """The description stored in an encoder file (safetensors header metadata); ``{}`` when none.

    Falls back to a legacy ``<file>.json`` sidecar.
    """
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise EncoderError(
            f"{path}: not a safetensors encoder file ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    if METADATA_KEY in meta:
        return _parse_metadata(meta[METADATA_KEY], path)
    return _read_sidecar(path)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors, or a torch state dict with ``weights_only=True``.

    Torch zip files are memory-mapped (large weights are not copied twice).

    Raises
    ------
    EncoderError
        Missing file, unknown suffix, unreadable or not a state dict of tensors.
    """
    path = Path(path).expanduser()
    state: Any
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found")
    if path.suffix.lower() not in WEIGHTS_SUFFIXES:
        raise EncoderError(
            f"{path}: unknown weights file type {path.suffix!r}: use {', '.join(WEIGHTS_SUFFIXES)}"
        )
    try:
        if path.suffix.lower() == ".safetensors":
            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # legacy (non-zip) torch files cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise EncoderError(f"{path}: cannot read weights ({type(exc).__name__}: {first})") from None
    for key in ("state_dict", "model", "teacher"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 8:
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{path}: not a state dict of tensors")
    return state


def _head(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n})" if len(keys) > n else "")


def load_weights_into(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    path: str | Path,
    strip_prefixes: tuple[str, ...] = (),
    prefix: str = "",
    hint: str = "",
    assign: bool = False,
) -> nn.Module:
    """Load ``state`` into ``module`` strictly; :class:`EncoderError` naming mismatching keys.

    Parameters
    ----------
    module
        The architecture (on the CPU, or on the meta device with ``assign=True``).
    state
        The weights.
    path
        Named in errors.
    strip_prefixes
        Prefixes removed first (e.g. the vision trunk inside a bigger checkpoint).
    prefix, hint
        Put before and after the error message (``"encoder uni_v1: "``, what to do).
    assign
        Use the file's tensors as parameters (no copy; for a module built on the meta
        device). Floating-point tensors are made float32.
    """
    for strip in strip_prefixes:
        state = {k[len(strip) :]: v for k, v in state.items() if k.startswith(strip)} or state
    for wrapper in ("module.", "_orig_mod."):  # DataParallel / torch.compile wrappers
        if state and all(k.startswith(wrapper) for k in state):
            state = {k[len(wrapper) :]: v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {_head(missing)}")
        if unexpected:
            parts.append(f"unexpected {_head(unexpected)}")
        if shapes:
            parts.append(f"shape {_head(shapes, 2)}")
        raise EncoderError(f"{prefix}{path}: weights do not fit the architecture: {'; '.join(parts)}{hint}")
    if assign:
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=assign)
    return module


def _spec_from(
    options: dict[str, Any], meta: dict[str, Any], defaults: dict[str, Any], *, where: str
) -> EncoderSpec:
    base = dict(defaults)
    base.update(meta.get("spec", meta))
    base.update({k: v for k, v in options.items() if v is not None})
    return EncoderSpec.from_json(base, where=where)


def _infer_dim(module: nn.Module, input_size: int | None, path: Path) -> int:
    size = input_size or 224
    try:
        with torch.inference_mode():
            out = module(torch.zeros(2, 3, size, size))
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise EncoderError(
            f"{path}: dummy forward pass at {size} px failed ({type(exc).__name__}: {first})"
        ) from None
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim not in (2, 4):
        raise EncoderError(f"{path}: output shape {tuple(out.shape)} is not (N, D) or (N, D, h, w)")
    return int(out.shape[1])


def load_torchscript(path: str | Path, *, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Load a TorchScript file as a frozen encoder (it runs the code it contains).

    Parameters
    ----------
    path
        File made by ``torch.jit.save``, with a TorchScript suffix
        (:data:`TORCHSCRIPT_SUFFIXES`).
    device
        Where to run it.
    **options
        ``name``, ``input_size``, ``mpp``, ``mean``, ``std``, ``embedding_dim``: override
        the description in the file; unset ones default to the file stem, 224 px, 0.5
        um/px, ImageNet normalisation and a dummy forward pass.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in TORCHSCRIPT_SUFFIXES:
        raise EncoderError(
            f"{path}: not a TorchScript suffix ({', '.join(TORCHSCRIPT_SUFFIXES)}); "
            "TorchScript runs code, so it is only loaded from a file named as one"
        )
    if not path.is_file():
        raise EncoderError(f"{path}: encoder file not found")
    extra = {_EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is the exchange format here
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise EncoderError(f"{path}: not a TorchScript file ({type(exc).__name__}: {first})") from None
    meta = _parse_metadata(extra[_EXTRA_FILE], path) if extra[_EXTRA_FILE] else _read_sidecar(path)
    defaults = {"name": path.stem, "embedding_dim": 0, "kind": "torchscript", "source": str(path.resolve())}
    spec = _spec_from(options, meta, defaults, where=str(path))
    if not spec.embedding_dim:
        spec = spec.with_(embedding_dim=_infer_dim(module.eval(), spec.input_size, path))
    spec = spec.with_(weights_hash=hash_file(path), kind="torchscript", source=str(path.resolve()))
    return FrozenEncoder(module, spec, device=device)


def load_saved_encoder(path: str | Path, *, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Load a ``.safetensors`` encoder whose description names a registered architecture."""
    path = Path(path).expanduser()
    meta = read_encoder_metadata(path)
    arch = meta.get("arch")
    if not arch:
        raise EncoderError(
            f"{path}: safetensors without an encoder description (architecture): give it as the "
            "--weights of a known encoder, or save it with save_encoder"
        )
    if arch not in _ARCHITECTURES:
        raise EncoderError(
            f"{path}: unknown architecture {arch!r} (known: {', '.join(sorted(_ARCHITECTURES)) or 'none'})"
        )
    try:
        module = _ARCHITECTURES[arch](**meta.get("arch_kwargs", {}))
    except TypeError as exc:
        raise EncoderError(f"{path}: bad arch_kwargs for {arch} ({exc})") from None
    load_weights_into(module, load_state_dict_file(path), path=path)
    spec = _spec_from(options, meta, {"name": path.stem, "embedding_dim": 0}, where=str(path))
    if not spec.embedding_dim:
        spec = spec.with_(embedding_dim=_infer_dim(module.eval(), spec.input_size, path))
    spec = spec.with_(
        weights_hash=hash_state_dict(module), source=str(path.resolve()), kind=spec.kind or "torch"
    )
    return FrozenEncoder(module, spec, device=device)


def save_encoder(
    module: nn.Module,
    spec: EncoderSpec,
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Save an encoder, weights and description in one file, so ``load_encoder(path)`` loads it.

    Parameters
    ----------
    module
        The encoder: normalised float ``(N, 3, H, W)`` -> ``(N, D)``.
    spec
        Its spec (name, input size, mpp, normalisation, dim); the weights hash is
        recomputed from the written weights.
    path
        ``.safetensors`` (needs ``arch``, a name given to :func:`register_architecture`;
        the description goes into the header metadata) or a TorchScript suffix (``.pt``,
        ``.ts``: scripted, or traced when scripting fails; the description goes into an
        extra file of the archive).
    arch, arch_kwargs
        The architecture builder and its keyword arguments (safetensors only).

    Returns
    -------
    Path
        The encoder file, written atomically (temp file in the same folder + ``os.replace``).
    """
    path = Path(path)
    module = module.eval().to("cpu")
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in TORCHSCRIPT_SUFFIXES:
        raise EncoderError(
            f"{path}: save an encoder as .safetensors or TorchScript ({', '.join(TORCHSCRIPT_SUFFIXES)})"
        )
    if suffix == ".safetensors" and (arch is None or arch not in _ARCHITECTURES):
        raise EncoderError(f"{path}: saving as safetensors needs a registered architecture (got {arch!r})")
    legacy = path.with_name(path.name + ".json")  # a sidecar of an earlier save would only confuse
    with atomic_path(path) as tmp:
        if suffix == ".safetensors":
            meta: dict[str, Any] = {"format": 1, "arch": arch, "arch_kwargs": arch_kwargs or {}}
            meta["spec"] = spec.with_(weights_hash=hash_state_dict(module), source="").to_json()
            save_file(
                {k: v.contiguous() for k, v in module.state_dict().items()},
                str(tmp),
                metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)},
            )
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    scripted = torch.jit.script(module)
                except Exception:
                    size = spec.input_size or 224
                    with torch.no_grad():
                        scripted = torch.jit.trace(module, torch.zeros(1, 3, size, size))
                # the hash of a TorchScript encoder is the hash of its file: not known before writing it
                description = {"format": 1, "spec": spec.with_(weights_hash="", source="").to_json()}
                torch.jit.save(
                    scripted, str(tmp), _extra_files={_EXTRA_FILE: json.dumps(description, sort_keys=True)}
                )
    with contextlib.suppress(OSError):
        legacy.unlink()
    return path
