"""The embedding pipeline: reader, generator, regions, resume after cancel and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from napari_regional_mil.embedding import (
    cache_status,
    embed_slide,
    find_slide_cache,
    load_slide_embeddings,
)
from napari_regional_mil.embedding.reader import PatchReader, plan_reads
from napari_regional_mil.embedding.store import PARTIAL_SUFFIX
from napari_regional_mil.errors import TilingError
from napari_regional_mil.jobs import run_job
from resume_check import (
    RECORDING_CHILD,
    assert_same_store,
    record_reads,
    recorded_pixels,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is our exchange format


@pytest.fixture(scope="module")
def reference(embed_slide_path, tmp_path_factory):
    """An uninterrupted run (32 px patches, 4 x 4 regions, chunks of 16), its reads recorded."""
    from napari_regional_mil.tiling import TilingParams

    params = TilingParams(patch_size=32, target_mpp=0.5, region_size=4)
    cache = tmp_path_factory.mktemp("reference")
    events = []
    with record_reads(cache.parent / f"{cache.name}-pixels") as pixels:
        result = run_job(embed_slide(embed_slide_path, cache_dir=cache, tiling_params=params, batch_size=8,
                                     chunk_rows=16), events.append)
    return result, load_slide_embeddings(result.cache_path), events, params, recorded_pixels(pixels)


def test_embeddings_match_the_tiling_and_regions(reference, embed_slide_path):
    from napari_regional_mil.slide import open_slide
    from napari_regional_mil.tiling import tile_slide
    from napari_regional_mil.tissue import detect_tissue

    result, emb, events, params, _ = reference
    with open_slide(embed_slide_path) as slide:
        tiling = tile_slide(slide, detect_tissue(slide), params)
    assert result.computed and result.n_patches == tiling.n_patches == emb.n_patches
    np.testing.assert_array_equal(emb.coords_px, tiling.coords_px)
    np.testing.assert_array_equal(emb.region_xy, tiling.region_xy)
    assert emb.features.shape == (tiling.n_patches, 185) and np.isfinite(emb.features).all()
    for r in (0, emb.n_regions - 1):
        rows = emb.features[emb.region_index == r]
        np.testing.assert_allclose(emb.regional_embeddings["mean"][r], rows.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(emb.regional_embeddings["max"][r], rows.max(0))
    m = emb.meta
    assert (m["patch_size"], m["target_mpp"], m["region_size"], m["encoder"], m["slide_mpp"]) == (
        32,
        0.5,
        4,
        "builtin-he",
        0.5,
    )
    embeds = [e for e in events if e.total]
    assert embeds[-1].done == embeds[-1].total == emb.n_patches and all(e.stage == "embed" for e in events)
    assert [e.done for e in embeds] == sorted(e.done for e in embeds) and embeds[-2].rate > 0


def test_patches_match_direct_reads_in_order(embed_slide_path):
    from napari_regional_mil.slide import open_slide

    with open_slide(embed_slide_path) as slide:
        coords = np.array([[64, 32], [0, 0], [32, 0], [64, 0], [128, 0], [480, 352], [96, 64], [32, 128]], np.int64)
        plan = plan_reads(slide_mpp=0.5, level_downsamples=slide.info.level_downsamples, patch_size=32,
                          patch_size_level0=32, input_size=None, encoder_mpp=None)
        reader = PatchReader(slide, coords, plan, num_threads=3, batch_size=2, prefetch_batches=3)
        got = list(reader.batches(start=1))
        assert [first for first, _ in got] == [1, 3, 5, 7]  # runs of neighbours are read in one call
        stacked = np.concatenate([b for _, b in got])
        expected = np.stack([slide.read_region(tuple(c), 0, (32, 32)) for c in coords[1:]])
        np.testing.assert_array_equal(stacked, expected)


def test_read_plan_picks_the_finest_level_not_coarser_than_needed():
    ds = (1.0, 2.0, 4.0, 16.0)
    p = plan_reads(
        slide_mpp=0.25, level_downsamples=ds, patch_size=256, patch_size_level0=512, input_size=224, encoder_mpp=0.5
    )
    assert (p.level, p.read_size, p.out_size) == (1, 256, 224) and p.input_mpp == pytest.approx(128 / 224)
    p = plan_reads(
        slide_mpp=0.25, level_downsamples=ds, patch_size=256, patch_size_level0=512, input_size=None, encoder_mpp=1.0
    )
    assert (p.level, p.read_size, p.out_size) == (2, 128, 128)
    p = plan_reads(
        slide_mpp=0.5, level_downsamples=ds, patch_size=64, patch_size_level0=64, input_size=None, encoder_mpp=None
    )
    assert (p.level, p.read_size, p.out_size) == (0, 64, 64)


def test_second_run_is_a_no_op(reference, embed_slide_path):
    result, _, _, params, _ = reference
    cache = result.cache_path.parent
    before = (result.cache_path / "zarr.json").stat().st_mtime_ns
    events = []
    again = run_job(embed_slide(embed_slide_path, cache_dir=cache, tiling_params=params, batch_size=8), events.append)
    assert not again.computed and again.cache_path == result.cache_path and events == []
    assert (result.cache_path / "zarr.json").stat().st_mtime_ns == before
    assert cache_status(cache, embed_slide_path, params, "builtin-he") == "complete"


def test_closing_the_generator_leaves_a_resumable_cache(reference, embed_slide_path, tmp_path):
    _, ref, _, params, ref_pixels = reference
    with record_reads(tmp_path / "pixels-first"):
        job = embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=params, batch_size=8, chunk_rows=16)
        for event in job:
            if event.total and event.done >= 40:
                break
        job.close()
    partial = list(tmp_path.glob(f"*.zarr{PARTIAL_SUFFIX}"))
    assert len(partial) == 1 and not list(tmp_path.glob("*.zarr"))
    assert json.loads((partial[0] / "zarr.json").read_text())["attributes"]["n_done"] == 32
    assert cache_status(tmp_path, embed_slide_path, params, "builtin-he") == "partial"
    with record_reads(tmp_path / "pixels-resumed"):
        result = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=params, batch_size=8,
                                     chunk_rows=16))
    assert result.computed and result.resumed_from == 32
    assert_same_store(load_slide_embeddings(find_slide_cache(tmp_path, embed_slide_path)), ref,
                      pixels=recorded_pixels(tmp_path / "pixels-first", tmp_path / "pixels-resumed"),
                      ref_pixels=ref_pixels, dump=tmp_path / "differing-rows.npz")


_KILLED_RUN = RECORDING_CHILD + """
import time
from napari_regional_mil.embedding import embed_slide
from napari_regional_mil.tiling import TilingParams

with record(sys.argv[3]):
    job = embed_slide(sys.argv[1], cache_dir=sys.argv[2], tiling_params=TilingParams(patch_size=32, region_size=4),
                      batch_size=8, chunk_rows=16)
    for event in job:
        print(event.done, flush=True)
        time.sleep(0.05)  # a slow consumer, so the parent can kill us mid-run
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(reference, embed_slide_path, tmp_path):
    _, ref, _, params, ref_pixels = reference
    killed_pixels = tmp_path / "pixels-killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(embed_slide_path), str(tmp_path), str(killed_pixels)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            partial = list(tmp_path.glob(f"*.zarr{PARTIAL_SUFFIX}"))
            if int(line) >= 72 and partial:
                n_done = json.loads((partial[0] / "zarr.json").read_text())["attributes"]["n_done"]
                if n_done >= 48:
                    break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not list(tmp_path.glob("*.zarr")), "a killed run must not leave a complete-looking store"
    assert cache_status(tmp_path, embed_slide_path, params, "builtin-he") == "partial"
    with record_reads(tmp_path / "pixels-resumed"):
        result = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=params, batch_size=8))
    assert result.resumed_from >= 48 and result.resumed_from % 16 == 0
    killed = {r: p for r, p in recorded_pixels(killed_pixels).items() if r < result.resumed_from}
    assert_same_store(load_slide_embeddings(result.cache_path), ref,
                      pixels={**recorded_pixels(tmp_path / "pixels-resumed"), **killed}, ref_pixels=ref_pixels,
                      dump=tmp_path / "differing-rows.npz")


def test_slide_without_tissue_is_a_tiling_error(empty_slide_path, small_tiling, tmp_path):
    with pytest.raises(TilingError, match="tissue"):
        run_job(embed_slide(empty_slide_path, cache_dir=tmp_path, tiling_params=small_tiling))
    assert not list(tmp_path.glob("*.zarr*"))


def test_slide_smaller_than_one_patch(embed_slide_path, tmp_path):
    from napari_regional_mil.tiling import TilingParams

    with pytest.raises(TilingError, match="smaller than one patch"):
        run_job(
            embed_slide(
                embed_slide_path, cache_dir=tmp_path, tiling_params=TilingParams(patch_size=1024, region_size=4)
            )
        )
    assert not list(tmp_path.glob("*.zarr*"))


def test_user_tissue_mask_is_used_and_keyed(reference, embed_slide_path, tmp_path):
    _, ref, _, params, _ = reference
    mask = np.zeros((416, 544), bool)  # level-0 sized: only the left half is tissue
    mask[:, :272] = True
    result = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=params, tissue_mask=mask))
    emb = load_slide_embeddings(result.cache_path)
    assert 0 < emb.n_patches < ref.n_patches and (emb.coords_px[:, 0] < 272).all()
    assert cache_status(tmp_path, embed_slide_path, params, "builtin-he") == "missing"  # other key without the mask


def test_encoder_with_its_own_input_size_and_mpp(embed_slide_path, small_tiling, tmp_path):
    """A TorchScript encoder at 1 um/px, 12 px input: read at level 1 (16 px) and resized."""
    import torch

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "enc.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    (tmp_path / "enc.pt.json").write_text(json.dumps({"input_size": 12, "mpp": 1.0}))
    result = run_job(
        embed_slide(embed_slide_path, cache_dir=tmp_path / "c", tiling_params=small_tiling, encoder=str(path))
    )
    emb = load_slide_embeddings(result.cache_path)
    assert emb.embedding_dim == 4 and emb.meta["read_level"] == 1 and emb.meta["input_size"] == 12
    assert emb.meta["input_mpp"] == pytest.approx(16 / 12)
