"""``builtin-he`` version 1, kept for ``benchmarks/embed.py`` only (not part of the package).

The package's ``encoders/builtin.py`` is version 2 (same feature groups, about 3 x faster);
this file is the version it replaced, with its own standardisation constants
(``builtin_he_v1_stats.json``), so the benchmark can run both side by side.

Original description:

``builtin-he``: a hand-crafted H&E feature extractor written in torch (no download).

The built-in second model needs no weights from the internet, is deterministic (its
filters are fixed formulas and its standardisation constants ship with the package, so
its weights hash never changes) and batches like any neural encoder. It accepts any
patch size (all its features are pooled statistics); it was calibrated on 224 px
patches at about 0.5 um/px and works at half the patch resolution (patches of 64 px
and more are average-pooled 2 x 2 first). For each patch it computes, in this order:

1. **Colour** (6): mean and standard deviation of R, G, B in [0, 1].
2. **Stain concentrations** (20): colour deconvolution of optical density with the
   Ruifrok & Johnston H&E-DAB matrix gives haematoxylin (nuclei), eosin (cytoplasm,
   stroma) and a residual (DAB) channel; with the total optical density, the mean,
   standard deviation and 10th/50th/90th percentiles of each.
3. **Stain distributions** (25): the fraction of pixels above 8 fixed levels of
   haematoxylin, eosin and total optical density (a cumulative histogram), and the
   fraction of background (nearly white) pixels.
4. **Multi-scale texture** (72): on the haematoxylin and eosin channels at 4 scales
   (1/2, 1/4, 1/8, 1/16 of the patch resolution), a fixed filter bank: Gabor energy at 4
   orientations (sorted, so the features do not depend on the tissue's orientation,
   plus the spread of the total energy), Laplacian-of-Gaussian magnitude (mean, std) and
   gradient magnitude (mean, std).
5. **Local binary patterns** (36): on both stains at 1/4 resolution, the histogram of
   the number of brighter neighbours (0..8) among 8 neighbours at radius 1 and 2
   (rotation-invariant LBP-like texture codes).
6. **Co-occurrence-like statistics** (16): autocorrelation and mean absolute
   difference of each stain at offsets 1, 2, 4 and 8 px (horizontal and vertical
   averaged): the grain and regularity of the texture.
7. **Nuclear blobs** (10): scale-normalised Laplacian-of-Gaussian of haematoxylin at two
   nucleus scales (sigma 3 and 5 px at full resolution, about 3-5 um diameter range at
   0.5 um/px): density of local maxima above 3 levels (nuclei per 100 px), mean positive
   response and fraction of strong response.

The 185 raw features are standardised with fixed means and standard deviations
(``builtin_he_stats.json``, measured once on H&E patches) and clipped to +-8.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_regional_mil.encoders.spec import (
    EncoderSpec,
    FrozenEncoder,
    hash_state_dict,
)

__all__ = ["BUILTIN_NAME", "N_FEATURES", "BuiltinHE", "builtin_he_v1"]

BUILTIN_NAME = "builtin-he-v1"
N_FEATURES = 185
_STATS_FILE = Path(__file__).with_name("builtin_he_v1_stats.json")

#: Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_LEVELS = {
    "h": (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.1),
    "e": (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.1),
    "od": (0.1, 0.2, 0.4, 0.6, 0.9, 1.2, 1.6, 2.2),
}
_BLOB_LEVELS = (0.03, 0.07, 0.15)
_OFFSETS = (1, 2, 4, 8)


def _round32(a: np.ndarray) -> torch.Tensor:
    """Fixed constants: rounded in float64 so every platform builds the same bytes."""
    return torch.from_numpy(np.round(np.asarray(a, dtype=np.float64), 6).astype(np.float32))


def _texture_bank(size: int = 7) -> np.ndarray:
    """Gabor even x4, Gabor odd x4, LoG, Sobel x, Sobel y: ``(11, size, size)``."""
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    sigma, wavelength = 1.6, 4.0
    envelope = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    even, odd = [], []
    for theta in np.arange(4) * np.pi / 4:
        rot = xx * np.cos(theta) + yy * np.sin(theta)
        g_even = envelope * np.cos(2 * np.pi * rot / wavelength)
        g_even -= g_even.mean()
        g_odd = envelope * np.sin(2 * np.pi * rot / wavelength)
        even.append(g_even / np.abs(g_even).sum())
        odd.append(g_odd / np.abs(g_odd).sum())
    log = _log_kernel(1.2, size)
    sobel = np.zeros((2, size, size))
    sobel[0, half - 1 : half + 2, half - 1 : half + 2] = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    sobel[1, half - 1 : half + 2, half - 1 : half + 2] = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8
    return np.stack([*even, *odd, log, *sobel])


def _log_kernel(sigma: float, size: int) -> np.ndarray:
    """Negated, scale-normalised Laplacian of Gaussian (bright blobs respond positively)."""
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r2 = (xx**2 + yy**2) / (2 * sigma**2)
    kernel = -(1 - r2) * np.exp(-r2) / (math.pi * sigma**2)
    kernel -= kernel.mean()
    return -kernel * sigma**2 * 2


def _stats_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    if _STATS_FILE.exists():
        data = json.loads(_STATS_FILE.read_text())
        mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    else:  # before calibration (development only)
        mean, std = np.zeros(N_FEATURES), np.ones(N_FEATURES)
    return _round32(mean), _round32(np.maximum(std, 1e-6))


class BuiltinHE(nn.Module):
    """The built-in H&E feature extractor; input ``(N, 3, H, W)`` RGB in [0, 1]."""

    def __init__(self, *, standardise: bool = True) -> None:
        super().__init__()
        hed_from_rgb = np.linalg.inv(_RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True))
        self.register_buffer("hed_from_rgb", _round32(hed_from_rgb))  # od_rgb @ M = (h, e, d)
        self.register_buffer("bank", _round32(_texture_bank()).unsqueeze(1))  # (11, 1, 7, 7)
        self.register_buffer("quantiles", _round32([0.1, 0.5, 0.9]))
        blob = np.zeros((2, 17, 17))
        blob[0, 3:14, 3:14] = _log_kernel(1.5, 11)
        blob[1] = _log_kernel(2.5, 17)
        self.register_buffer("blob", _round32(blob).unsqueeze(1))
        levels = [_LEVELS["h"], _LEVELS["e"], _LEVELS["od"]]
        self.register_buffer("levels", _round32(levels).view(1, 3, 8, 1))
        mean, std = _stats_tensors()
        self.register_buffer("feat_mean", mean)
        self.register_buffer("feat_std", std)
        self.standardise = standardise
        self.sub_batch = 8

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 185 unstandardised features ``(N, 185)``."""
        x = x.float().clamp(0.0, 1.0)
        if min(x.shape[-2:]) >= 64:  # work at half resolution (about 1 um/px)
            x = F.avg_pool2d(x, 2)
        n = x.shape[0]
        od = -torch.log((x * 255.0 + 1.0) / 256.0)
        # colour deconvolution as a (pixels x 3) @ (3 x 3) product on a channels-last view
        hed = (od.permute(0, 2, 3, 1) @ self.hed_from_rgb).permute(0, 3, 1, 2).clamp_min(0.0)
        total = od.mean(1, keepdim=True)
        std_rgb, mean_rgb = torch.std_mean(x, dim=(2, 3))
        feats = [mean_rgb, std_rgb]
        small = torch.cat([hed, total], 1)
        if min(small.shape[-2:]) >= 32:
            small = F.avg_pool2d(small, 2)
        flat = small.flatten(2)
        std, mean = torch.std_mean(flat, dim=2)
        quant = torch.quantile(flat, self.quantiles, dim=2)  # (3, N, 4)
        feats += [mean, std, quant.permute(1, 2, 0).reshape(n, 12)]
        cum_src = torch.stack([flat[:, 0], flat[:, 1], flat[:, 3]], 1).unsqueeze(2)  # (N, 3, 1, P)
        feats.append((cum_src > self.levels).float().mean(3).reshape(n, 24))
        feats.append((flat[:, 3] < 0.08).float().mean(1, keepdim=True))
        he = hed[:, :2].contiguous()
        feats.append(self._texture(he))
        quarter = F.avg_pool2d(he, 2) if min(he.shape[-2:]) >= 16 else he
        feats.append(self._lbp(quarter))
        feats.append(self._cooccurrence(he))
        feats.append(self._blobs(he[:, :1]))
        return torch.cat(feats, 1)

    def _texture(self, he: torch.Tensor) -> torch.Tensor:
        n = he.shape[0]
        out = []
        level = he.reshape(n * 2, 1, *he.shape[-2:])  # stains as batch: plain 1-channel convs
        for scale in range(4):
            if scale and min(level.shape[-2:]) >= 4:
                level = F.avg_pool2d(level, 2)
            resp = F.conv2d(level, self.bank, stride=2, padding=3).view(n, 2, 11, -1)  # (N, 2, 11, hw)
            energy = torch.sqrt(resp[:, :, 0:4] ** 2 + resp[:, :, 4:8] ** 2 + 1e-12)  # (N, 2, 4, hw)
            orient = energy.mean(3).sort(dim=2, descending=True).values  # (N, 2, 4)
            one = resp.shape[-1] < 2  # a 1-pixel response (tiny patches): its spread is 0, not NaN
            spread = energy.new_zeros(n, 2, 1) if one else energy.sum(2).std(2).unsqueeze(2)
            log = resp[:, :, 8].abs()
            grad = torch.sqrt(resp[:, :, 9] ** 2 + resp[:, :, 10] ** 2 + 1e-12)
            stats = [orient, spread]
            for m in (log, grad):
                s, mu = (torch.zeros_like(m[:, :, 0]), m[:, :, 0]) if one else torch.std_mean(m, dim=2)
                stats += [mu.unsqueeze(2), s.unsqueeze(2)]
            out.append(torch.cat(stats, 2).flatten(1))  # (N, 18)
        return torch.cat(out, 1)

    @staticmethod
    def _lbp(img: torch.Tensor) -> torch.Tensor:
        out = []
        for radius in (1, 2):
            padded = F.pad(img, (radius,) * 4, mode="replicate")
            h, w = img.shape[-2:]
            count = torch.zeros_like(img)
            for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)):
                y0, x0 = radius + dy * radius, radius + dx * radius
                count += (padded[..., y0 : y0 + h, x0 : x0 + w] > img + 0.02).float()
            out.append(torch.stack([(count == b).float().mean((2, 3)) for b in range(9)], 2).flatten(1))
        return torch.cat(out, 1)

    @staticmethod
    def _cooccurrence(img: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(img, dim=(2, 3), keepdim=True)
        z = (img - mean) / (std + 1e-4)
        corr, diff = [], []
        for d in _OFFSETS:
            dx = min(d, img.shape[-1] - 1)
            dy = min(d, img.shape[-2] - 1)
            c_h = (z[..., :, dx:] * z[..., :, :-dx]).mean((2, 3))
            c_v = (z[..., dy:, :] * z[..., :-dy, :]).mean((2, 3))
            a_h = (img[..., :, dx:] - img[..., :, :-dx]).abs().mean((2, 3))
            a_v = (img[..., dy:, :] - img[..., :-dy, :]).abs().mean((2, 3))
            corr.append((c_h + c_v) / 2)
            diff.append((a_h + a_v) / 2)
        return torch.cat([torch.stack(corr, 2).flatten(1), torch.stack(diff, 2).flatten(1)], 1)

    def _blobs(self, haem: torch.Tensor) -> torch.Tensor:
        resp = F.conv2d(haem, self.blob, padding=8)  # (N, 2, h, w)
        peaks = resp == F.max_pool2d(resp, 3, stride=1, padding=1)
        out = [100.0 * (peaks & (resp > t)).float().mean((2, 3)) for t in _BLOB_LEVELS]
        out += [resp.clamp_min(0).mean((2, 3)), (resp > _BLOB_LEVELS[1]).float().mean((2, 3))]
        return torch.stack(out, 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):  # statistics need float32
            # sub-batches keep the intermediates small (cache-friendly; no allocator churn)
            step = self.sub_batch if x.device.type == "cpu" else len(x)
            feats = torch.cat([self.raw_features(part.float()) for part in x.split(max(1, step))])
        if self.standardise:
            feats = ((feats - self.feat_mean) / self.feat_std).clamp(-8.0, 8.0)
        return feats


@lru_cache(maxsize=1)
def _builtin_hash() -> str:
    return hash_state_dict(BuiltinHE())


def builtin_he_v1(*, device: str = "cpu") -> FrozenEncoder:
    """Version 1 of the built-in H&E encoder as a :class:`FrozenEncoder` (benchmark only)."""
    spec = EncoderSpec(
        name=BUILTIN_NAME,
        embedding_dim=N_FEATURES,
        input_size=None,
        mpp=None,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        weights_hash=_builtin_hash(),
        kind="builtin",
        extra={"calibrated_mpp": 0.5, "calibrated_size": 224},
    )
    return FrozenEncoder(BuiltinHE(), spec, device=device)
