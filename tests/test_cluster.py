"""Many slides on a dask.distributed LocalCluster: one slide per task, summaries back."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_regional_mil.embedding import find_slide_cache, load_slide_embeddings
from napari_regional_mil.embedding.workflow import embed_on_cluster
from napari_regional_mil.jobs import run_job


def test_three_slides_on_a_two_worker_local_cluster(synthetic_slide, embed_layout, embed_slide_path, empty_slide_path,
                                                     small_tiling, tmp_path):
    other = synthetic_slide(embed_layout(3)[:, ::-1].copy(), patch_px=32, mpp=0.5, seed=11)
    slides = [embed_slide_path, other, empty_slide_path]
    events = []
    summaries = run_job(
        embed_on_cluster(slides, cache_dir=tmp_path, scheduler="local", workers=2, processes=False,
                         tiling_params=small_tiling, batch_size=16),
        events.append,
    )
    assert [s.slide for s in summaries] == [p.stem for p in slides]
    assert [s.ok for s in summaries] == [True, True, False]
    assert "tissue" in summaries[2].message
    assert events[-1].done == events[-1].total == 3
    a = load_slide_embeddings(find_slide_cache(tmp_path, embed_slide_path))
    b = load_slide_embeddings(find_slide_cache(tmp_path, other))
    assert a.n_patches == summaries[0].n_patches and b.n_patches == summaries[1].n_patches
    np.testing.assert_array_equal(a.coords_px[:, 1], np.sort(a.coords_px[:, 1]))
    assert not np.allclose(a.features[:10], b.features[:10])  # mirrored layout, different patches


def test_a_worker_loads_the_encoder_once_for_all_its_slides(synthetic_slide, embed_layout, embed_slide_path,
                                                            small_tiling, tmp_path, monkeypatch):
    from napari_regional_mil.embedding import cluster
    from napari_regional_mil.encoders import load_encoder, register_encoder

    monkeypatch.setattr(cluster, "_WORKER_ENCODER", {})  # a fresh worker (threads share this process)

    loads = []

    def counted(*, device: str = "cpu", **options):
        loads.append(device)
        return load_encoder("builtin-he", device=device)

    register_encoder("counted-builtin", counted, overwrite=True)
    others = [synthetic_slide(embed_layout(3), patch_px=32, mpp=0.5, seed=s) for s in (3, 4)]
    job = embed_on_cluster([embed_slide_path, *others], cache_dir=tmp_path, scheduler="local", workers=1,
                           processes=False, tiling_params=small_tiling, batch_size=16, encoder="counted-builtin")
    summaries = run_job(job)
    assert [s.ok for s in summaries] == [True, True, True]
    assert loads == ["cpu"]  # one worker, three slides, one load
