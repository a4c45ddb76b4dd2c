"""The networks the tool trains as a second model, and how they become frozen encoders.

:class:`PatchCNN` (defined in :mod:`napari_regional_mil.encoders.patch_cnn`, since a saved
one is loaded as a frozen encoder) is the feature extraction unit of the second model.
:class:`PatchDecoder` reconstructs a patch from a bottleneck vector.

A trained :class:`PatchCNN` is saved with
:func:`~napari_regional_mil.encoders.save_encoder` as one ``.safetensors`` file
(weights + description in its header metadata)
(architecture :data:`ARCHITECTURE`, registered in the encoder registry), so
``load_encoder(path)`` loads it in any process, with its weights hash, input size, mpp
and normalisation.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..encoders import (
    KNOWN_ENCODERS,
    EncoderSpec,
    FrozenEncoder,
    canonical_name,
    is_registered,
    load_encoder,
    register_encoder,
    save_encoder,
)
from ..encoders.patch_cnn import ARCHITECTURE, PatchCNN
from ..errors import EncoderError

__all__ = [
    "ARCHITECTURE",
    "PatchCNN",
    "PatchDecoder",
    "PretrainResult",
    "check_encoder_path",
    "register_pretrained_encoder",
    "save_pretrained_encoder",
]


class PatchDecoder(nn.Module):
    """Reconstructs ``(N, 3, s, s)`` patches in [0, 1] from bottleneck vectors ``(N, D)``.

    Mirrors a :class:`PatchCNN` (``widths`` reversed): a linear layer to the last feature
    map, then per stage a 2x upsampling and two 3x3 convolutions, and a sigmoid.
    """

    def __init__(self, encoder: PatchCNN) -> None:
        super().__init__()
        widths = encoder.widths[::-1]
        self.map_size = encoder.map_size
        self.first = widths[0]
        self.project = nn.Linear(encoder.embedding_dim, widths[0] * self.map_size**2)
        layers: list[nn.Module] = []
        outs = (*widths[1:], max(16, widths[-1] // 2))
        for c_in, c_out in zip(widths, outs):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(outs[-1], 3, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Decode the embeddings ``z`` ``(N, D)`` into images ``(N, 3, H, W)`` in [0, 1]."""
        x = torch.relu(self.project(z)).view(-1, self.first, self.map_size, self.map_size)
        return torch.sigmoid(self.body(x))


@dataclass(frozen=True, eq=False)
class PretrainResult:
    """What a pretraining job returns.

    Parameters
    ----------
    path
        The saved encoder file (one ``.safetensors`` file: weights and description).
    spec
        Its spec as :func:`~napari_regional_mil.encoders.load_encoder` reports it
        (weights hash included).
    history
        One dict of metrics per epoch (``epoch``, ``loss``, ...).
    seconds
        Wall time of the whole job (sampling included).
    n_patches
        Tissue patches trained on.
    registered_as
        The name under which the encoder was registered in this process (``None`` when
        that name was taken by another encoder).
    extra
        Method-specific outputs (e.g. the autoencoder's reconstruction ``preview``).
    """

    path: Path
    spec: EncoderSpec
    history: tuple[dict[str, float], ...]
    seconds: float
    n_patches: int
    registered_as: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_encoder_path(path: str | os.PathLike) -> Path:
    """Check, before training, that an encoder can be written at ``path``.

    Raises
    ------
    EncoderError
        The suffix is not ``.safetensors``, the folder does not exist or is not writable.
    """
    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        raise EncoderError(f"{path}: a pretrained encoder is saved as one .safetensors file")
    if not path.parent.is_dir():
        raise EncoderError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise EncoderError(f"{path}: folder {path.parent} is not writable")
    return path


def encoder_name(path: str | os.PathLike) -> str:
    """Registry name of an encoder file: its stem, with characters other than ``[A-Za-z0-9_-]`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem) or "encoder"


def save_pretrained_encoder(
    module: PatchCNN,
    path: str | os.PathLike,
    *,
    mpp: float,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    method: str,
    provenance: dict[str, Any] | None = None,
) -> FrozenEncoder:
    """Save a trained :class:`PatchCNN` as a frozen encoder (atomically) and load it back.

    Parameters
    ----------
    module
        The trained feature extraction unit (copied to the CPU; not modified otherwise).
    path
        ``.safetensors`` file.
    mpp
        Microns per pixel of the patches it was trained on.
    mean, std
        The per-channel normalisation it was trained with.
    method
        ``"autoencoder"``, ``"attention-mil"`` or ``"handover"`` (recorded in the spec).
    provenance
        Extra JSON-serialisable facts (slides, epochs, seed, loss ...).

    Returns
    -------
    FrozenEncoder
        The encoder as :func:`~napari_regional_mil.encoders.load_encoder` loads it.
    """
    path = check_encoder_path(path)
    cpu = copy.deepcopy(module).to("cpu").eval()
    spec = EncoderSpec(
        name=encoder_name(path),
        embedding_dim=cpu.output_dim,
        input_size=cpu.input_size,
        mpp=float(mpp),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        kind="torch",
        extra={"method": method, "architecture": ARCHITECTURE, **(provenance or {})},
    )
    save_encoder(cpu, spec, path, arch=ARCHITECTURE, arch_kwargs=cpu.arch_kwargs())
    return load_encoder(path)


def register_pretrained_encoder(path: str | os.PathLike) -> str | None:
    """Register a saved encoder file under its name (:func:`encoder_name`) in this process.

    The Embed widget and ``load_encoder(name)`` then offer it. A name taken by another
    kind of encoder (e.g. ``builtin-he``, ``uni_v1`` or its alias ``uni``) is left alone and
    ``None`` is returned.
    """
    path = Path(path).resolve()
    name = encoder_name(path)
    if canonical_name(name) in KNOWN_ENCODERS or (is_registered(name) and name not in _OWN_NAMES):
        return None

    def factory(*, device: str = "cpu", **options: Any) -> FrozenEncoder:
        return load_encoder(path, device=device, **options)

    factory.__doc__ = f"pretrained encoder {path}"
    register_encoder(name, factory, overwrite=True)
    _OWN_NAMES.add(name)
    return name


_OWN_NAMES: set[str] = set()
