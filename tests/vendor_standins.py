"""Synthetic stand-ins for the shared real test slides, so a clean clone tests everything it can.

``../shared/testslides`` holds four small real files (see its README). When that folder is
absent (a clean clone), :func:`write_standins` writes files with the same names and the
same properties the tests check, made with tifffile:

``CMU-1-Small-Region.svs``
    an Aperio SVS: 2220 x 2967 px, one level of 240 x 240 JPEG tiles, an Aperio
    ImageDescription with ``AppMag = 20`` and ``MPP = 0.4990``, a JPEG thumbnail, an
    LZW label and a JPEG macro; synthetic H&E tissue in a band down the middle, glass
    left and right (as in CMU-1-Small-Region).
``small.svs``
    an Aperio SVS of 16 x 16 px in one 64 x 64 JPEG tile, ``MPP = 0.4990``.
``boxes.tiff``
    a generic tiled (64 x 64), Deflate-compressed 4-level pyramid of coloured boxes,
    300 x 250 px, with only a 72-dpi resolution tag (reads as 352.78 um/px).
``kidney-48-5.tif``
    a plain RGB TIFF in uncompressed strips, 1493 x 901 px, no resolution, white
    background with one small piece of tissue around (350, 535).

:func:`write_aperio_svs` writes any Aperio-style SVS (a tiled JPEG pyramid of several
levels, the Aperio description, thumbnail, label and macro); tiffslide and OpenSlide both
read it as vendor ``aperio``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from napari_regional_mil.synth.slides import render_patch_types

STANDINS = ("CMU-1-Small-Region.svs", "small.svs", "boxes.tiff", "kidney-48-5.tif")


def _rendered(types: np.ndarray, width: int, height: int, *, cell: int, mpp: float, seed: int,
              tile: int = 256) -> np.ndarray:
    """Synthetic tissue (``types`` per ``cell`` px, -1 = glass) rendered tile by tile, ``(height, width, 3)``."""
    out = np.zeros((height, width, 3), np.uint8)
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            w, h = min(tile, width - x0), min(tile, height - y0)
            out[y0 : y0 + h, x0 : x0 + w] = render_patch_types(types, (x0, y0, w, h), patch_px=cell, mpp=mpp,
                                                                seed=seed)
    return out


def _aperio_description(width: int, height: int, tile: int, *, mpp: float, app_mag: float, name: str) -> str:
    return (
        f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q=90"
        f"|AppMag = {app_mag:g}|StripeWidth = 2040|ScanScope ID = SYNTHETIC|Filename = {name}|MPP = {mpp:.4f}"
        f"|Left = 25.0|Top = 23.0|ImageID = 1"
    )


def write_aperio_svs(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float = 0.499,
    app_mag: float = 20,
    tile: int = 240,
    levels: int = 1,
    label: np.ndarray | None = None,
    macro: np.ndarray | None = None,
    associated: bool = True,
    thumbnail_size: int = 256,
    quality: int = 90,
) -> Path:
    """Write ``image`` (``(H, W, 3)`` uint8) as an Aperio-style SVS.

    Parameters
    ----------
    path
        The ``.svs`` file.
    image
        Level 0.
    mpp, app_mag
        Written into the Aperio description (``MPP``, ``AppMag``).
    tile
        Tile side of the JPEG levels (a multiple of 16).
    levels
        Levels of the pyramid, each a 4x downsample (as Aperio scanners write them).
    label, macro
        Associated images (RGB); a label and a macro are made when None.
    associated
        Write the label and the macro (False: a thumbnail only, as in small crops).
    thumbnail_size
        Longer side of the thumbnail (the second directory, as Aperio writes it).
    quality
        JPEG quality.
    """
    height, width = image.shape[:2]
    name = Path(path).stem
    description = _aperio_description(width, height, tile, mpp=mpp, app_mag=app_mag, name=name)
    jpeg = {"compression": "jpeg", "compressionargs": {"level": quality}, "photometric": "rgb", "metadata": None}
    scale = max(1, int(np.ceil(max(height, width) / thumbnail_size)))
    thumbnail = np.ascontiguousarray(image[::scale, ::scale])
    if label is None:
        label = np.full((120, 100, 3), 245, np.uint8)
        label[20:100, 15:85] = np.array([30, 30, 40], np.uint8) * ((np.arange(70) // 7) % 2)[None, :, None]
    if macro is None:
        macro = np.full((110, 300, 3), 210, np.uint8)
        ys = np.linspace(0, thumbnail.shape[0] - 1, 90).astype(int)
        xs = np.linspace(0, thumbnail.shape[1] - 1, 190).astype(int)
        macro[10:100, 100:290] = thumbnail[np.ix_(ys, xs)]
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        tif.write(image, tile=(tile, tile), description=description, **jpeg)
        tif.write(thumbnail, rowsperstrip=16,
                  description=f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> "
                  f"{thumbnail.shape[1]}x{thumbnail.shape[0]} - |AppMag = {app_mag:g}|MPP = {mpp:.4f}", **jpeg)
        level = image
        for _ in range(1, levels):
            level = np.ascontiguousarray(level[::4, ::4])
            h, w = level.shape[:2]
            tif.write(level, tile=(tile, tile), description=_aperio_description(w, h, tile, mpp=mpp * width / w,
                                                                                  app_mag=app_mag, name=name), **jpeg)
        if associated:
            tif.write(label, compression="lzw", photometric="rgb", metadata=None, subfiletype=1,
                      rowsperstrip=label.shape[0], description=f"label {label.shape[1]}x{label.shape[0]}")
            tif.write(macro, subfiletype=9, rowsperstrip=macro.shape[0],
                      description=f"macro {macro.shape[1]}x{macro.shape[0]}", **jpeg)
    return Path(path)


def _cmu1_like(path: Path) -> Path:
    """2220 x 2967 px of glass with a band of tissue down the middle (x about 700-1500, y 240-2830)."""
    width, height, cell = 2220, 2967, 16
    rows, cols = -(-height // cell), -(-width // cell)
    y = (np.arange(rows) + 0.5) * cell
    x = (np.arange(cols) + 0.5) * cell
    left = 700 + 60 * np.sin(y / 300.0)
    right = 1500 + 60 * np.cos(y / 350.0)
    inside = (x[None, :] >= left[:, None]) & (x[None, :] <= right[:, None]) & ((y >= 240) & (y <= 2830))[:, None]
    blocks = (np.arange(rows)[:, None] // 9 + np.arange(cols)[None, :] // 11) % 5  # five tissue types, no fat
    types = np.where(inside, blocks, -1).astype(np.int16)
    image = _rendered(types, width, height, cell=cell, mpp=0.499, seed=7)
    return write_aperio_svs(path, image, mpp=0.499, app_mag=20, tile=240)


def _small_svs(path: Path) -> Path:
    """16 x 16 px of tissue in one 64 x 64 JPEG tile."""
    image = _rendered(np.zeros((1, 1), np.int16), 16, 16, cell=16, mpp=0.499, seed=3)
    return write_aperio_svs(path, image, mpp=0.499, app_mag=20, tile=64, thumbnail_size=16, associated=False)


def _boxes(path: Path) -> Path:
    """Coloured boxes, 300 x 250 px, a 4-level tiled Deflate pyramid, 72 dpi only."""
    width, height = 300, 250
    image = np.full((height, width, 3), 255, np.uint8)
    colours = [(220, 40, 40), (40, 160, 60), (40, 70, 200), (230, 200, 30), (150, 60, 170)]
    for i, colour in enumerate(colours):
        x0, y0 = 20 + 55 * i, 25 + 35 * (i % 3)
        image[y0 : y0 + 90, x0 : x0 + 45] = colour
    shapes = [(width, height)]
    while len(shapes) < 4:
        w, h = shapes[-1]
        shapes.append((w // 2, h // 2))
    common = {"tile": (64, 64), "compression": "zlib", "photometric": "rgb", "metadata": None,
              "resolution": (72.0, 72.0), "resolutionunit": "INCH"}
    with tifffile.TiffWriter(path) as tif:  # levels as reduced-resolution pages, as in boxes.tiff
        tif.write(image, **common)
        for w, h in shapes[1:]:
            ys = (np.arange(h) * height / h).astype(int)
            xs = (np.arange(w) * width / w).astype(int)
            tif.write(np.ascontiguousarray(image[np.ix_(ys, xs)]), subfiletype=1, **common)
    return Path(path)


def _kidney_like(path: Path) -> Path:
    """1493 x 901 px, uncompressed strips, no resolution: white with one piece of tissue around (350, 535)."""
    width, height = 1493, 901
    rng = np.random.default_rng(5)
    image = np.clip(rng.normal(244, 1.5, (height, width, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    angle = np.arctan2(yy - 535, xx - 350)
    radius = 36 + 6 * np.sin(3 * angle) + 3 * np.cos(5 * angle)
    piece = np.hypot(xx - 350, yy - 535) <= radius
    tissue = _rendered(np.array([[1, 3], [4, 1]], np.int16), width, height, cell=600, mpp=1.0, seed=9)
    image[piece] = tissue[piece]
    tifffile.imwrite(path, image, photometric="rgb", compression=None, rowsperstrip=height, metadata=None)
    return Path(path)


def write_standins(folder: Path) -> Path:
    """Write the four stand-ins (:data:`STANDINS`) into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _cmu1_like(folder / "CMU-1-Small-Region.svs")
    _small_svs(folder / "small.svs")
    _boxes(folder / "boxes.tiff")
    _kidney_like(folder / "kidney-48-5.tif")
    return folder
