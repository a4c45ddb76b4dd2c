"""Encoders stored in files: weights, TorchScript, and encoders the tool saves itself.

Two file formats hold a whole encoder:

* **TorchScript** (``.pt``/``.ts``/``.torchscript``, made by ``torch.jit.save``): any
  architecture. Its input size, mpp, normalisation and dimension come from the user's
  options or a JSON sidecar ``<file>.json`` (e.g. ``model.pt.json``) next to it; a
  missing dimension is found by a dummy forward pass.
* **safetensors + JSON architecture** (``.safetensors`` with ``<file>.json`` holding
  ``{"arch": name, "arch_kwargs": {...}, "spec": {...}}``): the architecture is built
  by a function registered with :func:`register_architecture` (the built-in ResNet-50,
  and the tool's own pretrained encoders), then the weights are loaded.

Nothing is ever unpickled: weights are read with safetensors or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_path, write_json_atomic
from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_file, hash_state_dict
from ..errors import EncoderError

__all__ = [
    "TORCHSCRIPT_SUFFIXES",
    "register_architecture",
    "load_state_dict_file",
    "load_weights_into",
    "load_torchscript",
    "load_saved_encoder",
    "save_encoder",
    "sidecar_path",
]

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript", ".jit", ".pth")
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str, builder: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Register a module builder so safetensors encoders of this architecture can be loaded.

    Parameters
    ----------
    name
        Architecture name stored in the JSON sidecar (``"arch"``).
    builder
        Called with the sidecar's ``arch_kwargs``; returns the (untrained) module.
    overwrite
        Replace an existing registration instead of raising ``ValueError``.
    """
    if name in _ARCHITECTURES and not overwrite:
        raise ValueError(f"architecture {name!r} is already registered")
    _ARCHITECTURES[name] = builder


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an encoder file: ``<file>.json`` (``<stem>.json`` also accepted)."""
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


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors, or a torch state dict with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad user file
        raise EncoderError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model", "teacher"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 8:
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{path}: not a state dict of tensors")
    return state


def load_weights_into(
    module: nn.Module, state: dict[str, torch.Tensor], *, path: str | Path, strip_prefixes: tuple[str, ...] = ()
) -> nn.Module:
    """Load ``state`` into ``module`` strictly; :class:`EncoderError` naming mismatching keys."""
    for prefix in strip_prefixes:  # e.g. the vision trunk inside a CLIP checkpoint
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)} or state
    for prefix in ("module.", "_orig_mod."):  # DataParallel / torch.compile wrappers
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3})" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3})" if len(unexpected) > 3 else ""))
        if shapes:
            parts.append(f"shape {', '.join(shapes[:2])}")
        raise EncoderError(f"{path}: weights do not fit the architecture: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)
    return module


def _spec_from(options: dict[str, Any], sidecar: dict[str, Any], defaults: dict[str, Any], *, where: str) -> EncoderSpec:
    base = dict(defaults)
    base.update(sidecar.get("spec", sidecar))
    base.update({k: v for k, v in options.items() if v is not None})
    return EncoderSpec.from_json(base, where=where)


def _infer_dim(module: nn.Module, input_size: int | None, path: Path) -> int:
    size = input_size or 224
    try:
        with torch.inference_mode():
            out = module(torch.zeros(2, 3, size, size))
    except Exception as exc:  # noqa: BLE001 - a user model failing on a dummy input
        raise EncoderError(f"{path}: dummy forward pass at {size} px failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim not in (2, 4):
        raise EncoderError(f"{path}: output shape {tuple(out.shape)} is not (N, D) or (N, D, h, w)")
    return int(out.shape[1])


def load_torchscript(path: str | Path, *, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Load a TorchScript file as a frozen encoder.

    Parameters
    ----------
    path
        File made by ``torch.jit.save``.
    device
        Where to run it.
    **options
        ``name``, ``input_size``, ``mpp``, ``mean``, ``std``, ``embedding_dim``: override
        the sidecar; unset ones default to the file stem, 224 px, 0.5 um/px, ImageNet
        normalisation and a dummy forward pass.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"{path}: encoder file not found")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is the exchange format here
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError/zip errors
        raise EncoderError(f"{path}: not a TorchScript file ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    sidecar = _read_sidecar(path)
    defaults = {"name": path.stem, "embedding_dim": 0, "kind": "torchscript", "source": str(path.resolve())}
    spec = _spec_from(options, sidecar, defaults, where=str(sidecar_path(path)))
    if not spec.embedding_dim:
        spec = spec.with_(embedding_dim=_infer_dim(module.eval(), spec.input_size, path))
    spec = spec.with_(weights_hash=hash_file(path), kind="torchscript", source=str(path.resolve()))
    return FrozenEncoder(module, spec, device=device)


def load_saved_encoder(path: str | Path, *, device: str = "cpu", **options: Any) -> FrozenEncoder:
    """Load a ``.safetensors`` encoder whose sidecar names a registered architecture."""
    path = Path(path)
    sidecar = _read_sidecar(path)
    arch = sidecar.get("arch")
    if not arch:
        raise EncoderError(f"{path}: no architecture: put {{\"arch\": ..., \"spec\": ...}} in {sidecar_path(path).name}")
    if arch not in _ARCHITECTURES:
        raise EncoderError(f"{path}: unknown architecture {arch!r} (known: {', '.join(sorted(_ARCHITECTURES)) or 'none'})")
    try:
        module = _ARCHITECTURES[arch](**sidecar.get("arch_kwargs", {}))
    except TypeError as exc:
        raise EncoderError(f"{sidecar_path(path)}: bad arch_kwargs for {arch} ({exc})") from None
    load_weights_into(module, load_state_dict_file(path), path=path)
    spec = _spec_from(options, sidecar, {"name": path.stem, "embedding_dim": 0}, where=str(sidecar_path(path)))
    if not spec.embedding_dim:
        spec = spec.with_(embedding_dim=_infer_dim(module.eval(), spec.input_size, path))
    spec = spec.with_(weights_hash=hash_state_dict(module), source=str(path.resolve()), kind=spec.kind or "torch")
    return FrozenEncoder(module, spec, device=device)


def save_encoder(
    module: nn.Module,
    spec: EncoderSpec,
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Save an encoder so :func:`~napari_regional_mil.encoders.load_encoder` loads it by path.

    Parameters
    ----------
    module
        The encoder: normalised float ``(N, 3, H, W)`` -> ``(N, D)``.
    spec
        Its spec (name, input size, mpp, normalisation, dim); the weights hash is
        recomputed from the written file.
    path
        ``.safetensors`` (needs ``arch``, a name given to :func:`register_architecture`)
        or a TorchScript suffix (``.pt``, ``.ts``): scripted, or traced when scripting fails.
    arch, arch_kwargs
        The architecture builder and its keyword arguments (safetensors only).

    Returns
    -------
    Path
        The encoder file; its sidecar is ``<file>.json``. Both are written atomically.
    """
    path = Path(path)
    module = module.eval().to("cpu")
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            if arch is None or arch not in _ARCHITECTURES:
                raise EncoderError(f"{path}: saving as safetensors needs a registered architecture (got {arch!r})")
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
            sidecar: dict[str, Any] = {"arch": arch, "arch_kwargs": arch_kwargs or {}}
            weights_hash = hash_state_dict(module)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    scripted = torch.jit.script(module)
                except Exception:  # noqa: BLE001 - fall back to tracing for unscriptable modules
                    size = spec.input_size or 224
                    with torch.no_grad():
                        scripted = torch.jit.trace(module, torch.zeros(1, 3, size, size))
                torch.jit.save(scripted, str(tmp))
            sidecar = {}
            weights_hash = hash_file(tmp)
    sidecar["spec"] = spec.with_(weights_hash=weights_hash, source="").to_json()
    write_json_atomic(path.with_name(path.name + ".json"), sidecar)
    return path
