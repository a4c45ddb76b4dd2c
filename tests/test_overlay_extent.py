"""Overlays end where the slide ends: tissue, grids and attention layers stay inside the slide.

On a slide whose size is not a multiple of the patch (and whose patch grid is not a multiple
of the region size), the last row and column of regions are partial: their attention is cut
at the slide's edge, not drawn past it. Checked on an Aperio slide (CMU-1-Small-Region, or
its synthetic stand-in of the same size on a clean clone,
2220 x 2967 px at 0.499 um/px: patches of 256.5 level-0 px, a 8 x 11 grid, regions of 8 x 8
cut to 8 x 3 at the bottom) and on a synthetic odd-sized slide.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil._widgets import _layers
from napari_regional_mil._widgets._heatmap_layers import (
    heatmap_specs,
    sync_heatmap_layers,
)
from napari_regional_mil._widgets._slide_jobs import open_job, tiling_job
from napari_regional_mil.heatmap import AttentionMaps, normalise
from napari_regional_mil.jobs import run_job
from napari_regional_mil.tiling import TilingParams
from napari_regional_mil.training.prediction import SlidePrediction

pytestmark = pytest.mark.gui


def _edges(layer) -> np.ndarray:
    """World ``(y, x)`` min and max edges of a layer: pixel edges for images, data for vectors."""
    if layer.__class__.__name__ in ("Image", "Labels"):
        ext = np.asarray(layer.extent.world, dtype=float)[:, -2:]
        half = np.asarray(layer.scale, dtype=float)[-2:] / 2
        return np.stack([ext[0] - half, ext[1] + half])
    return np.asarray(layer.extent.world, dtype=float)[:, -2:]


@pytest.fixture(params=["CMU-1-Small-Region.svs", "synthetic"])
def slide_and_params(request, synthetic_slide, testslides_dir):
    if request.param == "synthetic":
        types = np.full((13, 23), -1, np.int16)  # 13 x 23 cells of 37 px: 851 x 481 px, odd
        types[1:12, 1:22] = np.arange(11 * 21).reshape(11, 21) % 5
        path = synthetic_slide(types, patch_px=37, mpp=0.5, seed=5, tile=64)
        return path, TilingParams(patch_size=48, target_mpp=0.5, region_size=4)  # 17 x 10 patches
    # the real slide from ../shared/testslides, or its stand-in of the same size and mpp on a clean clone
    return testslides_dir / request.param, TilingParams()


def test_tissue_grids_and_attention_end_where_the_slide_ends(slide_and_params, make_napari_viewer, tmp_path):
    from napari_regional_mil.embedding import embed_slide, load_slide_embeddings

    path, params = slide_and_params
    viewer = make_napari_viewer()
    slide = _layers.show_slide_layer(viewer, open_job(path))
    mpp = _layers.layer_mpp(slide)
    prepared = run_job(tiling_job(path, mpp[0], params, None))
    _layers.show_tiling_layers(viewer, slide, prepared)
    rows, cols = prepared.tiling.grid_shape
    assert rows % params.region_size  # the last row of regions is partial

    result = run_job(embed_slide(path, cache_dir=tmp_path, tiling_params=params, batch_size=256))
    emb = load_slide_embeddings(result.cache_path)
    rng = np.random.default_rng(0)
    patch_att = rng.random(emb.n_patches)
    region_att = rng.random(emb.n_regions)
    prediction = SlidePrediction(
        emb.slide_name,
        ("a", "b"),
        np.array([0.4, 0.6]),
        0.5,
        patch_att / patch_att.sum(),
        region_att / region_att.sum(),
        emb.region_index,
    )
    maps = AttentionMaps.from_prediction(emb, prediction, mpp=tuple(float(v) for v in slide.scale[-2:]))
    layers = sync_heatmap_layers(
        viewer, {}, heatmap_specs(maps, normalisation="rank"), opacity=0.5, derived_from=slide.name
    )
    # a region of the last (partial) row: its attention covers exactly the grid cells that exist
    k = params.region_size
    region = layers["region"].data
    assert region.shape == (rows, cols)
    rank = normalise(prediction.region_attention, "rank")
    last_row = np.flatnonzero(emb.region_xy[:, 1] == (rows - 1) // k)
    assert last_row.size
    for r in last_row:
        rx, ry = emb.region_xy[r]
        block = region[ry * k :, rx * k : (rx + 1) * k]
        assert block.shape[0] == rows - ry * k < k and np.all(block == pytest.approx(rank[r]))

    s_lo, s_hi = _edges(slide)
    overlays = [layer for layer in viewer.layers if layer is not slide]
    assert {layer.name for layer in overlays} >= {
        f"tissue ({slide.name})",
        f"patch grid ({slide.name})",
        f"region grid ({slide.name})",
        f"{emb.slide_name} region attention",
        f"{emb.slide_name} patch attention",
    }
    for layer in overlays:
        lo, hi = _edges(layer)
        assert np.all(lo >= s_lo - 1e-6) and np.all(hi <= s_hi + 1e-6), (layer.name, lo, hi, s_lo, s_hi)
