"""Damaged tiles in embedding: the patch reader marks unreadable patches, the store leaves them out.

Never a crash, never a silent zero (or grey) patch embedding: a patch on a tile that cannot
be decoded is counted, named in the summary and dropped from the store, also after an
interrupted run resumes.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
from napari_regional_mil.embedding.reader import PatchReader, plan_reads
from napari_regional_mil.embedding.workflow import summary_line
from napari_regional_mil.jobs import run_job
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tiling import TilingParams, tile_slide
from test_slide_backends import _damage_tile

PARAMS = TilingParams(patch_size=32, target_mpp=0.5, region_size=4)
#: Level-0 tile 21 of the 544 x 416 px embedding slide (9 tiles of 64 px per row): x 192..256, y 128..192,
#: i.e. patch-grid cells x 6..7, y 4..5.
DAMAGED_TILE = 21
DAMAGED_CELLS = {(6, 4), (7, 4), (6, 5), (7, 5)}


@pytest.fixture(scope="module")
def damaged_slide(tmp_path_factory, embed_slide_path):
    path = tmp_path_factory.mktemp("damaged") / "damaged.tiff"
    assert _damage_tile(embed_slide_path, path, DAMAGED_TILE) == (128, 192)
    return path


@pytest.fixture(scope="module")
def everywhere(embed_slide_path):
    """A painted mask covering the whole slide: patches on the damaged tile are kept by the tiling."""
    with open_slide(embed_slide_path) as slide:
        w, h = slide.dimensions
    return np.ones((h // 8, w // 8), bool)


def test_patch_reader_marks_unreadable_patches(damaged_slide, everywhere):
    with open_slide(damaged_slide) as slide:
        tiling = tile_slide(slide, everywhere, PARAMS)
        plan = plan_reads(slide_mpp=slide.mpp, level_downsamples=slide.info.level_downsamples, patch_size=32,
                          patch_size_level0=tiling.patch_size_level0, input_size=None, encoder_mpp=None)
        reader = PatchReader(slide, tiling.coords_px, plan, batch_size=16)
        patches = np.concatenate([batch for _, batch in reader.batches()])
    marked = {tuple(tiling.grid_xy[i]) for i in reader.damaged}
    assert marked == DAMAGED_CELLS
    assert reader.damaged_in(0, len(patches)).sum() == 4
    for i in reader.damaged:
        assert (patches[i] == 128).all()  # flat grey in the batch, and marked
    good = [i for i in range(len(patches)) if i not in reader.damaged]
    assert not (patches[good] == 128).all(axis=(1, 2, 3)).any()


def test_embedding_skips_damaged_patches_and_says_so(damaged_slide, embed_slide_path, everywhere, tmp_path):
    result = run_job(embed_slide(damaged_slide, cache_dir=tmp_path / "a", tiling_params=PARAMS, batch_size=8,
                                 tissue_mask=everywhere))
    with open_slide(embed_slide_path) as slide:
        full = tile_slide(slide, everywhere, PARAMS)
    assert result.n_damaged == 4 and result.n_patches == full.n_patches - 4
    assert "4 patches on damaged tiles could not be read and were left out" in summary_line(result)
    emb = load_slide_embeddings(result.cache_path)
    assert emb.n_patches == full.n_patches - 4 and np.isfinite(np.asarray(emb.features, np.float32)).all()
    kept_cells = {tuple(xy) for xy in emb.grid_xy}
    assert not kept_cells & DAMAGED_CELLS and len(kept_cells) == emb.n_patches
    assert set(map(tuple, full.grid_xy)) - kept_cells == DAMAGED_CELLS
    # regions: still every region with a readable patch, indices consistent, pooled from finite rows
    assert emb.region_index.max() == emb.n_regions - 1 and len(np.unique(emb.region_index)) == emb.n_regions
    for name, pooled in emb.regional_embeddings.items():
        assert pooled.shape == (emb.n_regions, emb.embedding_dim) and np.isfinite(pooled).all(), name
    # a region holding damaged patches: its mean is the mean of its readable patches only
    region = int(np.flatnonzero((emb.region_xy == (6 // 4, 4 // 4)).all(axis=1))[0])
    rows = np.flatnonzero(emb.region_index == region)
    np.testing.assert_allclose(emb.regional_embeddings["mean"][region],
                               np.asarray(emb.features, np.float32)[rows].mean(axis=0), rtol=1e-4, atol=1e-5)
    assert emb.meta["n_damaged"] == 4 and len(emb.meta["damaged_coords_px"]) == 4


def test_resumed_run_still_drops_the_damaged_patches(damaged_slide, everywhere, tmp_path):
    reference = run_job(embed_slide(damaged_slide, cache_dir=tmp_path / "ref", tiling_params=PARAMS, batch_size=8,
                                    chunk_rows=16, tissue_mask=everywhere))
    job = embed_slide(damaged_slide, cache_dir=tmp_path / "run", tiling_params=PARAMS, batch_size=8, chunk_rows=16,
                      tissue_mask=everywhere)
    for event in job:  # stop once the damaged patches' chunk is written
        if event.stage == "embed" and event.total and event.done >= 64:
            break
    job.close()
    resumed = run_job(embed_slide(damaged_slide, cache_dir=tmp_path / "run", tiling_params=PARAMS, batch_size=8,
                                  chunk_rows=16, tissue_mask=everywhere))
    assert resumed.resumed_from >= 48 and resumed.n_damaged == reference.n_damaged == 4
    a, b = load_slide_embeddings(reference.cache_path), load_slide_embeddings(resumed.cache_path)
    np.testing.assert_array_equal(a.coords_px, b.coords_px)
    np.testing.assert_allclose(np.asarray(a.features, np.float32), np.asarray(b.features, np.float32), atol=1e-6)
