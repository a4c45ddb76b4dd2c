"""Recompute the standardisation constants of the built-in encoder (``builtin_he_stats.json``).

Raw ``builtin-he`` features of 224 px tissue patches of CMU-1-Small-Region (real H&E, read
in place, 112 px stride) and of synthetic H&E textures (all tissue types, 2 seeds) at
0.5 um/px; their mean and standard deviation, rounded to 6 decimals, are written next to
the encoder. Changing them changes the encoder's weights hash, so caches made with the old
constants are recomputed, never mixed. Run: ``python scripts/calibrate_builtin_he.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tiffslide
import torch

from napari_regional_mil.encoders.builtin import (
    _STATS_FILE,
    N_FEATURES,
    VERSION,
    BuiltinHE,
)
from napari_regional_mil.synth.slides import render_patch_types
from napari_regional_mil.synth.textures import TISSUE_TYPES

CMU = Path(__file__).resolve().parents[2] / "shared" / "testslides" / "CMU-1-Small-Region.svs"


def calibration_patches() -> list[np.ndarray]:
    slide = tiffslide.TiffSlide(CMU)
    width, height = slide.dimensions
    img = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    patches = [
        img[y : y + 224, x : x + 224]
        for y in range(0, height - 224, 112)
        for x in range(0, width - 224, 112)
        if (img[y : y + 224, x : x + 224].mean(-1) < 210).mean() > 0.5
    ]
    for t in range(len(TISSUE_TYPES)):
        for seed in (1, 2):
            im = render_patch_types(np.full((4, 4), t), (0, 0, 896, 896), patch_px=224, mpp=0.5, seed=seed)
            patches += [im[y : y + 224, x : x + 224] for y in range(0, 672, 224) for x in range(0, 672, 224)]
    return patches


def main() -> None:
    torch.set_num_threads(2)
    patches = calibration_patches()
    model = BuiltinHE(standardise=False).eval()
    x = torch.from_numpy(np.stack(patches))  # uint8 (N, 224, 224, 3), as the encoder reads them
    with torch.inference_mode():
        feats = torch.cat([model(x[i : i + 64]) for i in range(0, len(x), 64)]).numpy().astype(np.float64)
    assert feats.shape[1] == N_FEATURES
    mean, std = feats.mean(0), feats.std(0)
    _STATS_FILE.write_text(json.dumps({
        "about": f"builtin-he version {VERSION} standardisation: raw feature mean/std over 224 px H&E patches "
                 "(CMU-1-Small-Region tissue + synthetic H&E textures) at 0.5 um/px",
        "version": VERSION,
        "n_patches": len(patches),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(max(float(v), 1e-6), 6) for v in std],
    }, indent=0))
    print(f"{len(patches)} patches -> {_STATS_FILE}")


if __name__ == "__main__":
    main()
