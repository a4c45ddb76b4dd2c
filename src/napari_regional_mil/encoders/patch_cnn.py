"""The tool's own patch encoder network (the second model it can train): :class:`PatchCNN`.

:class:`PatchCNN` is the feature extraction unit of the second model: a small
convolutional network from a patch (``input_size`` px, normalised RGB) to a patch
embedding. Its ``pooling`` decides the head: ``"flatten"`` (the autoencoder's bottleneck
vector, claim 10) or ``"mean"`` (global average pooling, the attention-MIL extractor,
claim 7). It lives with the encoders because a saved one is loaded as a frozen encoder
(architecture :data:`ARCHITECTURE`); :mod:`napari_regional_mil.pretrain` trains it.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import EncoderError

__all__ = ["ARCHITECTURE", "PatchCNN"]

#: Architecture name of the tool's own encoders in a ``.safetensors`` encoder's description.
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
            raise ValueError(
                f"input_size must be a multiple of {factor} (2 ** number of stages), got {input_size}"
            )
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
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in itertools.pairwise(channels)))
        head_in = widths[-1] * self.map_size**2 if pooling == "flatten" else widths[-1]
        self.head = nn.Linear(head_in, self.embedding_dim)

    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (stored in the encoder file)."""
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
                f"this pretrained encoder was trained on {self.input_size} x {self.input_size} px patches "
                "and got "
                f"{x.shape[-1]} x {x.shape[-2]} px; do not override its input size "
                "(it is in the encoder file)"
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
