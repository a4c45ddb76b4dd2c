"""A ResNet-50 in plain torch (no torchvision), optionally truncated after ``layer3``.

Parameter names follow torchvision's ``resnet50`` so its weights (converted to
safetensors, or a ``torch.save``d state dict loaded with ``weights_only=True``) load
as they are. ``layers=3`` stops after ``layer3`` (1024-dim embeddings, the usual
choice for pathology MIL since CLAM); ``layers=4`` keeps ``layer4`` (2048-dim). The
classifier head is never used: the output is the global average of the last feature map.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResNet50", "resnet50"]


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 feature extractor; ``forward`` returns ``(N, 1024)`` or ``(N, 2048)``.

    Parameters
    ----------
    layers
        3 (truncated after ``layer3``) or 4 (full).
    """

    def __init__(self, *, layers: int = 3) -> None:
        super().__init__()
        if layers not in (3, 4):
            raise ValueError(f"layers must be 3 or 4, got {layers}")
        self.layers = layers
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes = 64
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        if layers == 4:
            self.layer4 = self._make_layer(512, 3, stride=2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def embedding_dim(self) -> int:
        """1024 after ``layer3``, 2048 after ``layer4``."""
        return 1024 if self.layers == 3 else 2048

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [_Bottleneck(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes * 4
        layers += [_Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features of a batch of patches ``(B, 3, H, W)``: ``(B, C)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.layers == 4:
            x = self.layer4(x)
        return x.mean(dim=(2, 3))


def resnet50(*, layers: int = 3, seed: int | None = 0) -> ResNet50:
    """A ResNet-50 with random weights (deterministic for a given ``seed``)."""
    if seed is None:
        return ResNet50(layers=layers)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return ResNet50(layers=layers)
    finally:
        torch.random.set_rng_state(state)
