"""``builtin-he``: a hand-crafted H&E feature extractor written in torch (no download).

The built-in second model needs no weights from the internet, is deterministic (its
filters are fixed formulas and its standardisation constants ship with the package, so
its weights hash only changes with a new version) and batches like any neural encoder.
It accepts any patch size (all its features are pooled statistics); it was calibrated on
224 px patches at about 0.5 um/px and works at half the patch resolution (patches of 64
px and more are binned 2 x 2 first, straight from the ``uint8`` pixels). For each patch it
computes, in this order:

1. **Colour** (6): mean and standard deviation of R, G, B in [0, 1].
2. **Stain concentrations** (20): colour deconvolution of optical density with the
   Ruifrok & Johnston H&E-DAB matrix gives haematoxylin (nuclei), eosin (cytoplasm,
   stroma) and a residual (DAB) channel; with the total optical density, the mean and
   standard deviation and the 10th/50th/90th percentiles of each (at 1/4 of the patch
   resolution).
3. **Stain distributions** (25): the fraction of pixels above 8 fixed levels of
   haematoxylin, eosin and total optical density (a cumulative histogram), and the
   fraction of background (nearly white) pixels.
4. **Multi-scale texture** (72): on the haematoxylin and eosin channels at 4 scales
   (1/2, 1/4, 1/8, 1/16 of the patch resolution), a fixed 7 x 7 filter bank: Gabor energy
   at 4 orientations (sorted, so the features do not depend on the tissue's orientation,
   plus the spread of the total energy), Laplacian-of-Gaussian magnitude (mean, std) and
   gradient magnitude (mean, std).
5. **Local binary patterns** (36): on both stains at 1/4 resolution, the histogram of
   the number of brighter neighbours (0..8) among 8 neighbours at radius 1 and 2
   (rotation-invariant LBP-like texture codes).
6. **Co-occurrence-like statistics** (16): autocorrelation and mean absolute
   difference of each stain at offsets 1, 2, 4 and 8 px of the half-resolution image
   (horizontal and vertical averaged; offsets 4 and 8 measured at 1/4 resolution): the
   grain and regularity of the texture.
7. **Nuclear blobs** (10): the filter bank's scale-normalised Laplacian of Gaussian of
   haematoxylin at its two finest scales (sigma about 2.4 and 4.8 px at full resolution,
   nuclei of about 3-7 um at 0.5 um/px): density of local maxima above 3 levels (per 100
   response pixels), mean positive response and fraction of strong response.

The 185 raw features are standardised with fixed means and standard deviations
(``builtin_he_stats.json``, measured once on H&E patches by
``scripts/calibrate_builtin_he.py``) and clipped to +-8.

Version 2 computes the same seven groups about 3 times faster than version 1 (binning
by slice sums instead of pooling calls, separable 3 x 3 maxima, blobs from the filter
bank instead of two large Laplacian kernels, fast means and standard deviations); its hash
differs, so caches and models made with version 1 are never mixed with its embeddings.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ..encoders.spec import EncoderSpec, FrozenEncoder, hash_state_dict

__all__ = ["BUILTIN_NAME", "N_FEATURES", "VERSION", "BuiltinHE", "builtin_he"]

BUILTIN_NAME = "builtin-he"
N_FEATURES = 185
#: Version of the feature computation (part of the weights hash).
VERSION = 2
_STATS_FILE = Path(__file__).with_name("builtin_he_stats.json")

#: Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_LEVELS = {
    "h": (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.1),
    "e": (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.1),
    "od": (0.1, 0.2, 0.4, 0.6, 0.9, 1.2, 1.6, 2.2),
}
_BLOB_LEVELS = (0.03, 0.07, 0.15)
_OFFSETS = (1, 2, 4, 8)
_SUB_BATCH = 16  # patches per pass on the CPU: intermediates stay in cache


def _round32(a: ArrayLike) -> Tensor:
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


def _stats_tensors() -> tuple[Tensor, Tensor]:
    if _STATS_FILE.exists():
        data = json.loads(_STATS_FILE.read_text())
        mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    else:  # before calibration (development only)
        mean, std = np.zeros(N_FEATURES), np.ones(N_FEATURES)
    return _round32(mean), _round32(np.maximum(std, 1e-6))


def _bin2_nhwc(x: Tensor) -> Tensor:
    """Mean of 2 x 2 pixel blocks of a contiguous ``(N, H, W, C)`` (an odd last row/column dropped)."""
    n, h, w, c = x.shape[0], x.shape[1] // 2, x.shape[2] // 2, x.shape[3]
    if x.shape[1] != 2 * h or x.shape[2] != 2 * w:
        x = x[:, : 2 * h, : 2 * w].contiguous()
    rows = x.view(n, h, 2, 2 * w, c)
    pairs = (rows[:, :, 0] + rows[:, :, 1]).view(n, h, w, 2, c)  # sum of two rows, then of two columns
    return (pairs[:, :, :, 0] + pairs[:, :, :, 1]).mul_(0.25)


def _std_mean(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(std, mean)`` like ``torch.std_mean`` (unbiased), from the mean and the mean square (much faster)."""
    n = math.prod(x.shape[d] for d in dims)
    mean = x.mean(dims)
    var = ((x * x).mean(dims) - mean * mean).clamp_min_(0.0)
    return var.mul_(n / max(n - 1, 1)).sqrt_(), mean


def _half(x: Tensor) -> Tensor:
    """2 x 2 mean over the last two dims of ``(..., H, W)`` (an odd last row/column dropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    return (x[..., 0:h:2, 0:w:2] + x[..., 1:h:2, 0:w:2] + x[..., 0:h:2, 1:w:2] + x[..., 1:h:2, 1:w:2]) * 0.25


def _local_max(x: Tensor) -> Tensor:
    """3 x 3 maximum of each pixel's neighbourhood (edges padded with -inf), separably."""
    p = F.pad(x, (1, 1, 1, 1), value=-math.inf)
    m = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(m[..., :-2, :], m[..., 1:-1, :]), m[..., 2:, :])


class BuiltinHE(nn.Module):
    """The built-in H&E feature extractor.

    Input: ``uint8`` patches ``(N, H, W, 3)`` as read from a slide (the fast path) or RGB
    in [0, 1] as ``(N, 3, H, W)`` float. Output: ``(N, 185)``.
    """

    #: :class:`~napari_regional_mil.encoders.spec.FrozenEncoder` hands ``uint8`` patches over as they are.
    takes_uint8_nhwc = True
    # buffers (fixed constants; part of the weights hash)
    to_stains: Tensor
    bank: Tensor
    quantiles: Tensor
    levels: Tensor
    version: Tensor
    feat_mean: Tensor
    feat_std: Tensor

    def __init__(self, *, standardise: bool = True) -> None:
        super().__init__()
        hed_from_rgb = np.linalg.inv(_RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True))
        to_stains = np.concatenate(
            [hed_from_rgb, np.full((3, 1), 1.0 / 3.0)], axis=1
        ).T  # (h, e, d, mean od) x rgb
        self.register_buffer("to_stains", _round32(to_stains))
        self._mix = [[float(v) for v in row] for row in self.to_stains.tolist()]
        self.register_buffer("bank", _round32(_texture_bank()).unsqueeze(1))  # (11, 1, 7, 7)
        self.register_buffer("quantiles", _round32([0.1, 0.5, 0.9]))
        levels = [_LEVELS["h"], _LEVELS["e"], _LEVELS["od"]]
        self.register_buffer("levels", _round32(levels).view(1, 3, 8, 1))
        self.register_buffer("version", torch.tensor([VERSION], dtype=torch.int32))
        mean, std = _stats_tensors()
        self.register_buffer("feat_mean", mean)
        self.register_buffer("feat_std", std)
        self.standardise = standardise

    def _rgb(self, x: Tensor) -> Tensor:
        """``(N, h, w, 3)`` float RGB in [0, 1], binned 2 x 2 when the patch is 64 px or more.

        ``uint8`` and float input take the same arithmetic (``/ 255`` first), so they agree exactly.
        """
        if x.dtype == torch.uint8:
            nhwc = x.float().div_(255.0)
        else:
            nhwc = x.float().clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()
        if min(nhwc.shape[1:3]) >= 64:  # work at half resolution (about 1 um/px)
            return _bin2_nhwc(nhwc)
        return nhwc

    def raw_features(self, x: Tensor) -> Tensor:
        """The 185 unstandardised features ``(N, 185)``."""
        rgb = self._rgb(x)  # (N, h, w, 3)
        n = rgb.shape[0]
        std_rgb, mean_rgb = _std_mean(rgb, (1, 2))
        od = torch.log(
            (rgb.permute(0, 3, 1, 2).contiguous() * 255.0 + 1.0) * (1.0 / 256.0)
        ).neg_()  # (N, 3, h, w)
        # (N, 4, h, w): haematoxylin, eosin, DAB, total OD; plane by plane (10 x faster than a 1 x 1 conv)
        mix = self._mix
        stains = torch.stack(
            [od[:, 0] * m[0] + od[:, 1] * m[1] + od[:, 2] * m[2] for m in mix], 1
        ).clamp_min_(0.0)
        quarter = _half(stains) if min(stains.shape[-2:]) >= 32 else stains
        flat = quarter.flatten(2)
        std, mean = _std_mean(flat, (2,))
        quant = torch.quantile(flat, self.quantiles, dim=2)  # (3, N, 4)
        feats = [mean_rgb, std_rgb, mean, std, quant.permute(1, 2, 0).reshape(n, 12)]
        cum_src = flat[:, (0, 1, 3)].unsqueeze(2)  # (N, 3, 1, P)
        feats.append((cum_src > self.levels).float().mean(3).reshape(n, 24))
        feats.append((flat[:, 3] < 0.08).float().mean(1, keepdim=True))
        he = stains[:, :2]
        texture, blobs = self._texture_and_blobs(he)
        he_quarter = quarter[:, :2]
        feats += [texture, self._lbp(he_quarter if min(he.shape[-2:]) >= 16 else he)]
        feats += [self._cooccurrence(he, he_quarter if min(he.shape[-2:]) >= 32 else None), blobs]
        return torch.cat(feats, 1)

    def _texture_and_blobs(self, he: Tensor) -> tuple[Tensor, Tensor]:
        """Filter-bank statistics at 4 scales ``(N, 72)`` and the nuclear blobs of its LoG ``(N, 10)``."""
        n = he.shape[0]
        out, blobs = [], []
        level = he.reshape(n * 2, 1, *he.shape[-2:])  # stains as batch: plain 1-channel convs
        for scale in range(4):
            if scale and min(level.shape[-2:]) >= 4:
                level = _half(level)
            resp = F.conv2d(level, self.bank, stride=2, padding=3)  # (2N, 11, h', w')
            if scale < 2:
                blobs.append(self._blobs(resp[0::2, 8]))  # haematoxylin's LoG
            resp = resp.view(n, 2, 11, -1)
            energy = torch.sqrt(resp[:, :, 0:4] ** 2 + resp[:, :, 4:8] ** 2 + 1e-12)  # (N, 2, 4, hw)
            orient = energy.mean(3).sort(dim=2, descending=True).values  # (N, 2, 4)
            one = resp.shape[-1] < 2  # a 1-pixel response (tiny patches): its spread is 0, not NaN
            spread = energy.new_zeros(n, 2, 1) if one else _std_mean(energy.sum(2), (2,))[0].unsqueeze(2)
            log = resp[:, :, 8].abs()
            grad = torch.sqrt(resp[:, :, 9] ** 2 + resp[:, :, 10] ** 2 + 1e-12)
            stats = [orient, spread]
            for m in (log, grad):
                s, mu = (torch.zeros_like(m[:, :, 0]), m[:, :, 0]) if one else _std_mean(m, (2,))
                stats += [mu.unsqueeze(2), s.unsqueeze(2)]
            out.append(torch.cat(stats, 2).flatten(1))  # (N, 18)
        return torch.cat(out, 1), torch.cat(blobs, 1)

    @staticmethod
    def _blobs(resp: Tensor) -> Tensor:
        """``(N, 5)`` of a LoG response ``(N, h, w)``: peak densities at 3 levels, mean, strong fraction."""
        peaks = resp == _local_max(resp)
        out = [100.0 * (peaks & (resp > t)).float().mean((1, 2)) for t in _BLOB_LEVELS]
        out += [resp.clamp_min(0).mean((1, 2)), (resp > _BLOB_LEVELS[1]).float().mean((1, 2))]
        return torch.stack(out, 1)

    @staticmethod
    def _lbp(img: Tensor) -> Tensor:
        n, c, h, w = img.shape
        out = []
        for radius in (1, 2):
            padded = F.pad(img, (radius,) * 4, mode="replicate")
            count = torch.zeros_like(img)
            for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)):
                y0, x0 = radius + dy * radius, radius + dx * radius
                count += padded[..., y0 : y0 + h, x0 : x0 + w] > img + 0.02
            codes = count.view(n * c, h * w).long() + 9 * torch.arange(n * c, device=img.device).unsqueeze(1)
            hist = torch.bincount(codes.flatten(), minlength=9 * n * c).view(n, c * 9).float() / (h * w)
            out.append(hist)
        return torch.cat(out, 1)

    @staticmethod
    def _cooccurrence(img: Tensor, quarter: Tensor | None) -> Tensor:
        levels = []
        for src in (img, quarter):
            if src is not None:
                std, mean = _std_mean(src, (2, 3))
                levels.append((src, (src - mean[..., None, None]) / (std[..., None, None] + 1e-4)))
        corr, diff = [], []
        for d in _OFFSETS:
            (src, z), step = (levels[0], d) if (d <= 2 or len(levels) == 1) else (levels[1], d // 2)
            dx, dy = min(step, src.shape[-1] - 1), min(step, src.shape[-2] - 1)
            c_h = (z[..., :, dx:] * z[..., :, :-dx]).mean((2, 3))
            c_v = (z[..., dy:, :] * z[..., :-dy, :]).mean((2, 3))
            a_h = (src[..., :, dx:] - src[..., :, :-dx]).abs().mean((2, 3))
            a_v = (src[..., dy:, :] - src[..., :-dy, :]).abs().mean((2, 3))
            corr.append((c_h + c_v) / 2)
            diff.append((a_h + a_v) / 2)
        return torch.cat([torch.stack(corr, 2).flatten(1), torch.stack(diff, 2).flatten(1)], 1)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(N, 185)`` of ``uint8`` ``(N, H, W, 3)`` or float ``(N, 3, H, W)`` patches."""
        with torch.autocast(device_type=x.device.type, enabled=False):  # statistics need float32
            # sub-batches keep the intermediates small (cache-friendly; no allocator churn)
            step = _SUB_BATCH if x.device.type == "cpu" else len(x)
            feats = torch.cat([self.raw_features(part) for part in x.split(max(1, step))])
        if self.standardise:
            feats = ((feats - self.feat_mean) / self.feat_std).clamp(-8.0, 8.0)
        return feats


@lru_cache(maxsize=1)
def _builtin_hash() -> str:
    return hash_state_dict(BuiltinHE())


def builtin_he(*, device: str = "cpu") -> FrozenEncoder:
    """The built-in H&E encoder as a :class:`FrozenEncoder` (any input size, 0.5 um/px nominal)."""
    spec = EncoderSpec(
        name=BUILTIN_NAME,
        embedding_dim=N_FEATURES,
        input_size=None,
        mpp=None,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        weights_hash=_builtin_hash(),
        kind="builtin",
        extra={"calibrated_mpp": 0.5, "calibrated_size": 224, "version": VERSION},
    )
    return FrozenEncoder(BuiltinHE(), spec, device=device)
