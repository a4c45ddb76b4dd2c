"""The networks the tool trains as a second model, and how they become frozen encoders.

:class:`PatchCNN` is the feature extraction unit of the second model: a small
convolutional network from a patch (``input_size`` px, normalised RGB) to a patch
embedding. Its ``pooling`` decides the head: ``"flatten"`` (the autoencoder's bottleneck
vector, claim 10) or ``"mean"`` (global average pooling, the attention-MIL extractor,
claim 7). :class:`PatchDecoder` reconstructs a patch from a bottleneck vector.

A trained :class:`PatchCNN` is saved with
:func:`~napari_regional_mil.encoders.save_encoder` as ``.safetensors`` + JSON sidecar
(architecture :data:`ARCHITECTURE`, registered in the encoder registry), so
``load_encoder(path)`` loads it in any process, with its weights hash, input size, mpp
and normalisation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..encoders import EncoderSpec, FrozenEncoder, load_encoder, register_encoder, save_encoder
from ..errors import EncoderError

__all__ = [
    "ARCHITECTURE",
    "PatchCNN",
    "PatchDecoder",
    "PretrainResult",
    "check_encoder_path",
    "save_pretrained_encoder",
    "register_pretrained_encoder",
]

#: Architecture name of the tool's own encoders in the ``.safetensors`` sidecar.
ARCHITECTURE = "pretrained-patch-cnn"


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the resolution: strided 3x3 convolution, then a 3x3 convolution.

    No normalisation layer: per-patch normalisation (group/instance norm) would discard
    the absolute colour and stain intensity that tell tissue types apart, and batch
    normalisation would tie an embedding to its batch during training (one slide's bag).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class PatchCNN(nn.Module):
    """Feature extraction unit: normalised ``(N, 3, s, s)`` patches -> ``(N, embedding_dim)``.

    Parameters
    ----------
    input_size
        s, the patch side the network is trained on (a multiple of ``2 ** len(widths)``).
        Other sizes raise :class:`~napari_regional_mil.errors.EncoderError`.
    widths
        Channels of the stages; each stage halves the resolution.
    embedding_dim
        D, the dimension of the head's output (the autoencoder's bottleneck vector).
    pooling
        ``"flatten"``: the last feature map is flattened into a linear layer (keeps the
        layout, as an autoencoder's bottleneck needs); ``"mean"``: global average pooling
        then a linear layer (the attention-MIL extractor).
    stage_features
        Append the global average of every stage's feature map to the head's output
        (``output_dim = embedding_dim + sum(widths)``): the patch embedding of a frozen
        autoencoder encoder keeps, besides its bottleneck vector, the texture statistics
        its convolutions learnt at every scale, which a linear read-out separates better.
    """

    def __init__(
        self,
        input_size: int = 64,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 64),
        embedding_dim: int = 128,
        pooling: Literal["flatten", "mean"] = "flatten",
        stage_features: bool = False,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        factor = 2 ** len(widths)
        if input_size < factor or input_size % factor:
            raise ValueError(f"input_size must be a multiple of {factor} (2 ** number of stages), got {input_size}")
        if pooling not in ("flatten", "mean"):
            raise ValueError(f"pooling must be 'flatten' or 'mean', got {pooling!r}")
        self.input_size = int(input_size)
        self.widths = widths
        self.embedding_dim = int(embedding_dim)
        self.pooling = pooling
        self.stage_features = bool(stage_features)
        self.output_dim = self.embedding_dim + (sum(widths) if self.stage_features else 0)
        self.map_size = self.input_size // factor
        channels = (3, *widths)
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in zip(channels[:-1], channels[1:])))
        head_in = widths[-1] * self.map_size**2 if pooling == "flatten" else widths[-1]
        self.head = nn.Linear(head_in, self.embedding_dim)

    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (stored in the sidecar)."""
        return {
            "input_size": self.input_size,
            "widths": list(self.widths),
            "embedding_dim": self.embedding_dim,
            "pooling": self.pooling,
            "stage_features": self.stage_features,
        }

    def feature_map(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``(N, C, s / 2**k, s / 2**k)``."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise EncoderError(
                f"this pretrained encoder was trained on {self.input_size} x {self.input_size} px patches and got "
                f"{x.shape[-1]} x {x.shape[-2]} px; do not override its input size (it is in the encoder's sidecar)"
            )
        return self.stages(x)

    def bottleneck(self, x: Tensor) -> Tensor:
        """The head's output ``(N, embedding_dim)`` (what the autoencoder's decoder reads)."""
        return self._head(self.feature_map(x))

    def _head(self, fmap: Tensor) -> Tensor:
        return self.head(fmap.flatten(1) if self.pooling == "flatten" else fmap.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        """The patch embedding ``(N, output_dim)``."""
        if not self.stage_features:
            return self.bottleneck(x)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            self.feature_map(x)  # raises the input-size error
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat([self._head(x), *pooled], dim=1)


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
        x = torch.relu(self.project(z)).view(-1, self.first, self.map_size, self.map_size)
        return torch.sigmoid(self.body(x))


@dataclass(frozen=True, eq=False)
class PretrainResult:
    """What a pretraining job returns.

    Parameters
    ----------
    path
        The saved encoder file (``.safetensors``; its sidecar is ``<file>.json``).
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
        raise EncoderError(f"{path}: a pretrained encoder is saved as .safetensors (with a .json sidecar)")
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
    import copy

    path = check_encoder_path(path)
    cpu = copy.deepcopy(module).to("cpu").eval()
    spec = EncoderSpec(
        name=encoder_name(path),
        embedding_dim=cpu.output_dim,
        input_size=cpu.input_size,
        mpp=float(mpp),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        kind="torch",
        extra={"method": method, "architecture": ARCHITECTURE, **(provenance or {})},
    )
    save_encoder(cpu, spec, path, arch=ARCHITECTURE, arch_kwargs=cpu.arch_kwargs())
    return load_encoder(path)


def register_pretrained_encoder(path: str | os.PathLike) -> str | None:
    """Register a saved encoder file under its name (:func:`encoder_name`) in this process.

    The Embed widget and ``load_encoder(name)`` then offer it. A name taken by another
    kind of encoder (e.g. ``builtin-he``) is left alone and ``None`` is returned.
    """
    from ..encoders import list_encoders

    path = Path(path).resolve()
    name = encoder_name(path)
    if name in list_encoders() and name not in _OWN_NAMES:
        return None

    def factory(*, device: str = "cpu", **options: Any) -> FrozenEncoder:
        return load_encoder(path, device=device, **options)

    factory.__doc__ = f"pretrained encoder {path}"
    register_encoder(name, factory, overwrite=True)
    _OWN_NAMES.add(name)
    return name


_OWN_NAMES: set[str] = set()
