"""Deterministic synthetic H&E-like tissue textures.

Each tissue type is rendered once per ``(seed, mpp)`` into a *periodic* texture tile
(:class:`TextureBank`); a slide pixel at level-0 position ``(x, y)`` of type ``t`` takes
the bank value at ``(x mod P, y mod P)``. Rendering any window of a slide is therefore a
slice, independent of how the slide is cut into tiles, seamless inside a tissue type, and
fast enough for 60k x 60k px slides. Feature sizes are given in microns, so a slide at
0.25 um/px looks like one at 0.5 um/px, only sharper.

The six tissue types (:data:`TISSUE_TYPES`) differ in colour *and* texture; ``necrosis``
and ``mucin`` share nearly the same mean colour and differ mainly in texture (granular
nuclear debris versus smooth wispy strands), so a classifier needs texture to separate
them. Background (type ``-1``) is near-white with slight noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = ["BACKGROUND", "TISSUE_TYPES", "TextureBank", "make_tissue_layout", "texture_bank"]

#: Names of the tissue types; a type id is an index into this tuple (-1: background).
TISSUE_TYPES: tuple[str, ...] = ("stroma", "tumour", "lymphocytes", "fat", "necrosis", "mucin")
#: Type id of background (glass).
BACKGROUND = -1

_BANK_UM = 512.0  # physical side of one periodic texture tile


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Periodic smooth value noise in [0, 1] of shape (size, size) with ``cells`` lattice cells."""
    cells = max(1, int(cells))
    lattice = rng.random((cells, cells), dtype=np.float32)
    u = (np.arange(size, dtype=np.float32) + 0.5) * cells / size
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    f = f * f * (3 - 2 * f)
    i0 %= cells
    i1 = (i0 + 1) % cells
    rows = lattice[i0] * (1 - f)[:, None] + lattice[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def _fbm(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Periodic fractal noise, roughly in [0, 1]."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * _value_noise(rng, size, min(size, cells * 2**o))
        total += amp
        amp *= 0.5
    return out / total


def _fibres(rng: np.random.Generator, size: int, wavelength_px: float, warp_px: float) -> np.ndarray:
    """Periodic wavy fibres in [0, 1]: bundles of stripes with varying orientation."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = (_fbm(rng, size, max(2, int(size / (wavelength_px * 8))), 2) - 0.5) * 2 * warp_px
    k = max(1, round(size / wavelength_px))
    out = np.zeros((size, size), np.float32)
    weights = np.zeros((size, size), np.float32)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        kx, ky = round(k * np.cos(angle)), round(k * np.sin(angle))
        phase = 2 * np.pi * (kx * (x + warp) + ky * (y + warp)) / size
        w = _value_noise(rng, size, max(1, int(size / (wavelength_px * 12)))) ** 3
        out += w * (0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * np.pi)))
        weights += w
    return out / np.maximum(weights, 1e-6)


def _nuclei(
    rng: np.random.Generator,
    size: int,
    spacing_px: float,
    *,
    presence: float,
    radius_px: tuple[float, float],
    elongation: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Periodic coverage in [0, 1] of elliptical nuclei on a jittered grid (soft edges).

    Each present nucleus is splatted into its own small box (wrapping at the borders),
    overlapping nuclei take the maximum: cost grows with nuclei, not with 9 x the pixels.
    """
    n = max(2, round(size / spacing_px))
    step = size / n
    cy: np.ndarray = (rng.random((n, n), dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None]) * step
    cx: np.ndarray = (rng.random((n, n), dtype=np.float32) + np.arange(n, dtype=np.float32)[None, :]) * step
    present = rng.random((n, n)) < presence
    radius: np.ndarray = rng.uniform(*radius_px, (n, n)).astype(np.float32)
    elong: np.ndarray = rng.uniform(*elongation, (n, n)).astype(np.float32)
    theta: np.ndarray = rng.uniform(0, np.pi, (n, n))
    cy, cx, radius, elong, theta = (a[present] for a in (cy, cx, radius, elong, theta))
    out = np.zeros(size * size, np.float32)
    if cy.size == 0:
        return out.reshape(size, size)
    reach = int(np.ceil(float((radius * elong).max()) + 1.5))
    offs = np.arange(-reach, reach + 1)
    iy = np.floor(cy).astype(np.int64)[:, None] + offs[None, :]
    ix = np.floor(cx).astype(np.int64)[:, None] + offs[None, :]
    ddy = (iy - cy[:, None]).astype(np.float32)[:, :, None]
    ddx = (ix - cx[:, None]).astype(np.float32)[:, None, :]
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    r = radius[:, None, None]
    u = (ddx * c + ddy * s) / (r * elong[:, None, None])
    v = (ddy * c - ddx * s) / r
    alpha = np.clip((1.0 - np.sqrt(u * u + v * v)) * r * 0.8 + 0.5, 0, 1)
    flat = (iy % size)[:, :, None] * size + (ix % size)[:, None, :]
    keep = alpha > 0
    np.maximum.at(out, flat[keep], alpha[keep])
    return out.reshape(size, size)


def _voronoi_edges(rng: np.random.Generator, size: int, spacing_px: float) -> np.ndarray:
    """Periodic distance in px to the nearest Voronoi cell border (Worley ``F2 - F1``)."""
    n = max(2, round(size / spacing_px))
    step = size / n
    cy = (rng.random((n, n), dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None]) * step
    cx = (rng.random((n, n), dtype=np.float32) + np.arange(n, dtype=np.float32)[None, :]) * step
    coord = np.arange(size, dtype=np.float32)
    gcell = (coord // step).astype(np.int64)
    f1 = np.full((size, size), np.inf, np.float32)
    f2 = np.full((size, size), np.inf, np.float32)
    for dy in (-1, 0, 1):
        iy = gcell + dy
        wy = np.where(iy < 0, -size, np.where(iy >= n, size, 0)).astype(np.float32)
        for dx in (-1, 0, 1):
            ix = gcell + dx
            wx = np.where(ix < 0, -size, np.where(ix >= n, size, 0)).astype(np.float32)
            flat = (iy % n)[:, None] * n + (ix % n)[None, :]
            ddy = coord[:, None] - wy[:, None] - cy.ravel()[flat]
            ddx = coord[None, :] - wx[None, :] - cx.ravel()[flat]
            dist = np.sqrt(ddx * ddx + ddy * ddy)
            f2 = np.minimum(f2, np.maximum(f1, dist))
            f1 = np.minimum(f1, dist)
    return f2 - f1


def _mix(base: np.ndarray, colour: Sequence[float] | np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-blend a constant colour over an (h, w, 3) image."""
    colour = np.asarray(colour, np.float32)
    return base * (1 - alpha[..., None]) + colour * alpha[..., None]


def _lerp(c0: Sequence[float] | np.ndarray, c1: Sequence[float] | np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel colour between ``c0`` (t=0) and ``c1`` (t=1)."""
    c0 = np.asarray(c0, np.float32)
    c1 = np.asarray(c1, np.float32)
    return c0 + (c1 - c0) * t[..., None]


def _render_type(name: str, rng: np.random.Generator, size: int, um: float) -> np.ndarray:
    """Render one periodic (size, size, 3) float32 texture; ``um`` is microns per pixel."""
    px = 1.0 / um  # pixels per micron
    grain = _fbm(rng, size, max(2, int(size / (6 * px))), 3)
    if name == "stroma":
        fib = _fibres(rng, size, 5.0 * px, 6.0 * px)
        img = _lerp((246, 196, 216), (214, 112, 160), fib * 0.8 + grain * 0.2)
        nuc = _nuclei(rng, size, 28 * px, presence=0.35, radius_px=(1.2 * px, 1.8 * px),
                     elongation=(3.0, 4.5))
        return _mix(img, (92, 48, 128), nuc * 0.9)
    if name == "tumour":
        img = _lerp((222, 158, 206), (186, 118, 178), grain)
        nuc = _nuclei(rng, size, 11 * px, presence=0.92, radius_px=(3.4 * px, 5.2 * px),
                     elongation=(1.0, 1.6))
        chromatin = _fbm(rng, size, max(2, int(size / (1.2 * px))), 2)
        nuc_col = _lerp((84, 42, 122), (150, 100, 176), chromatin)
        img = img * (1 - nuc[..., None]) + nuc_col * nuc[..., None]
        nucleoli = _nuclei(rng, size, 11 * px, presence=0.4, radius_px=(0.6 * px, 0.9 * px))
        return _mix(img, (70, 20, 90), nucleoli * nuc)
    if name == "lymphocytes":
        img = _lerp((232, 182, 214), (206, 150, 200), grain)
        nuc = _nuclei(rng, size, 6.5 * px, presence=0.9, radius_px=(2.2 * px, 2.8 * px))
        return _mix(img, (46, 26, 96), nuc * 0.97)
    if name == "fat":
        edge = _voronoi_edges(rng, size, 30 * px)
        membrane = np.clip(1.0 - edge / (1.6 * px), 0, 1)
        img = _lerp((250, 231, 214), (245, 225, 210), grain)
        return _mix(img, (214, 128, 170), membrane)
    if name in ("necrosis", "mucin"):
        base = _lerp((232, 196, 218), (212, 170, 204), grain)
        if name == "necrosis":
            speck = _fbm(rng, size, max(2, int(size / (1.0 * px))), 1)
            img = base + (speck[..., None] - 0.5) * np.float32(40)
            debris = _nuclei(rng, size, 4.5 * px, presence=0.45, radius_px=(0.5 * px, 1.2 * px),
                             elongation=(1.0, 2.0))
            return _mix(img, (110, 70, 140), debris * 0.8)
        strands = _fibres(rng, size, 20.0 * px, 25.0 * px)
        return base + (strands[..., None] - 0.5) * np.array([30, 34, 18], np.float32)
    raise ValueError(f"unknown tissue type {name!r}")


@dataclass(frozen=True, eq=False)
class TextureBank:
    """Periodic textures of every tissue type at one resolution.

    Parameters
    ----------
    period
        Side P of each periodic texture in pixels of this resolution.
    textures
        ``(n_types + 1, P + pad, P + pad, 3)`` uint8; index 0 is background, index
        ``t + 1`` tissue type ``t``. The ``pad`` extra rows/columns repeat the start so a
        window of up to ``pad`` px starting anywhere in ``[0, P)`` is a plain slice.
    pad
        Width of the wrap-around padding.
    """

    period: int
    textures: np.ndarray
    pad: int

    def window(self, type_index: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """The (height, width, 3) texture of ``type_index`` (-1: background) at (x0, y0)."""
        tex = self.textures[type_index + 1]
        if width <= self.pad and height <= self.pad:
            ys, xs = y0 % self.period, x0 % self.period
            return tex[ys : ys + height, xs : xs + width]
        rows = (y0 + np.arange(height)) % self.period
        cols = (x0 + np.arange(width)) % self.period
        return tex[np.ix_(rows, cols)]


def _pad(tex: np.ndarray, pad: int) -> np.ndarray:
    """Wrap-pad a periodic (P, P, 3) texture to (P + pad, P + pad, 3) (tiling if pad > P)."""
    period = tex.shape[0]
    reps = -(-(period + pad) // period)
    return np.tile(tex, (reps, reps, 1))[: period + pad, : period + pad]


def _downsample2(tex: np.ndarray) -> np.ndarray:
    """Halve a periodic float texture by 2 x 2 averaging."""
    return 0.25 * (tex[0::2, 0::2] + tex[1::2, 0::2] + tex[0::2, 1::2] + tex[1::2, 1::2])


@lru_cache(maxsize=4)
def _level0_textures(seed: int, mpp: float) -> np.ndarray:
    """Float32 (n_types + 1, P, P, 3) periodic textures at level 0 (P a power of two)."""
    period = int(2 ** np.clip(round(np.log2(_BANK_UM / mpp)), 6, 11))
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5EED])
    children = root.spawn(len(TISSUE_TYPES) + 1)
    out = np.zeros((len(TISSUE_TYPES) + 1, period, period, 3), np.float32)
    bg_rng = np.random.default_rng(children[0])
    out[0] = 242 + (bg_rng.random((period, period, 1), dtype=np.float32) - 0.5) * 6
    out[0] += np.array([1, 0, 1], np.float32)
    for i, name in enumerate(TISSUE_TYPES):
        rng = np.random.default_rng(children[i + 1])
        tex = _render_type(name, rng, period, mpp)
        # slow stain variation within the type (periodic, so still seamless)
        stain = 0.85 + 0.3 * _value_noise(rng, period, 2)
        out[i + 1] = 255 - (255 - tex) * stain[..., None]
    return out


@lru_cache(maxsize=16)
def texture_bank(seed: int, mpp: float, downsample: int = 1, *, pad: int = 256) -> TextureBank:
    """The texture bank of ``seed`` at level-0 ``mpp``, reduced by ``downsample`` (a power of 2).

    Parameters
    ----------
    seed
        Random seed: the same seed always gives the same textures.
    mpp
        Level-0 microns per pixel (sets the pixel size of every feature).
    downsample
        Power-of-two reduction; a level-``L`` bank is the 2 x 2 average of level ``L-1``,
        so pyramid levels look like downsampled level 0.
    pad
        Wrap-around padding so windows of up to ``pad`` px are plain slices.
    """
    if downsample < 1 or downsample & (downsample - 1):
        raise ValueError(f"downsample must be a power of two, got {downsample}")
    tex = _level0_textures(int(seed), float(mpp))
    ds = 1
    while ds < downsample:
        if tex.shape[1] >= 2:
            tex = np.stack([_downsample2(t) for t in tex])
        ds *= 2
    if tex.shape[1] < 1 or ds > downsample:  # pragma: no cover - defensive
        raise AssertionError("texture bank reduction failed")
    period = tex.shape[1]
    if ds > 1 and period == 1:
        tex = tex.mean(axis=(1, 2), keepdims=True)
    u8 = np.clip(np.rint(tex), 0, 255).astype(np.uint8)
    padded = np.stack([_pad(t, pad) for t in u8])
    return TextureBank(period=period, textures=padded, pad=pad)


def make_tissue_layout(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    n_types: int = len(TISSUE_TYPES),
    tissue_fraction: float = 0.45,
    blob_scale: float = 0.18,
) -> np.ndarray:
    """A realistic blob-shaped tissue layout of several types on background.

    Parameters
    ----------
    shape
        ``(n_rows, n_cols)`` of the layout grid (e.g. a fine patch grid).
    rng
        Random generator (the layout is deterministic given its state).
    n_types
        Use tissue types ``0 .. n_types - 1``.
    tissue_fraction
        Approximate fraction of cells that are tissue.
    blob_scale
        Size of tissue blobs relative to the shorter side.

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_cols)`` int16 of type ids, -1 for background.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"layout shape must be positive, got {shape}")
    sigma = max(0.8, blob_scale * min(h, w) / 2)
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma, mode="reflect")
    field += 0.5 * ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma / 3, mode="reflect")
    yy, xx = np.mgrid[0:h, 0:w]
    radial = ((yy - (h - 1) / 2) / max(h / 2, 1)) ** 2 + ((xx - (w - 1) / 2) / max(w / 2, 1)) ** 2
    field = field / (field.std() + 1e-9) - 2.0 * radial
    tissue = field > np.quantile(field, 1.0 - tissue_fraction)
    # tissue types: noisy Voronoi partition by a few seeds
    n_seeds = max(n_types, 2 * n_types)
    seeds = rng.random((n_seeds, 2)) * [h, w]
    labels = np.arange(n_seeds) % n_types
    rng.shuffle(labels)
    jitter = ndimage.gaussian_filter(rng.standard_normal((2, h, w)), (0, sigma / 2, sigma / 2))
    jitter *= 0.25 * min(h, w) / (np.abs(jitter).max() + 1e-9)
    py = yy[None] + jitter[0][None]
    px = xx[None] + jitter[1][None]
    d = (py - seeds[:, 0, None, None]) ** 2 + (px - seeds[:, 1, None, None]) ** 2
    types = labels[np.argmin(d, axis=0)]
    return np.where(tissue, types, BACKGROUND).astype(np.int16)
