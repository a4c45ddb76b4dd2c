"""The zarr embedding cache: chunked writes, resume, completion marker, lookup."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_regional_mil.embedding import (
    SlideEmbeddings,
    find_slide_cache,
    list_caches,
    load_slide_embeddings,
    pool_regions,
    write_slide_embeddings,
)
from napari_regional_mil.embedding.store import CacheWriter, check_writable, store_path
from napari_regional_mil.errors import CacheError


def _arrays(n=23, seed=0):
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(7), np.arange(4))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)[:n].astype(np.int32)
    cells = grid // 3
    uniq, index = np.unique(cells[:, 1] * 10 + cells[:, 0], return_inverse=True)
    region_xy = np.stack([uniq % 10, uniq // 10], 1).astype(np.int32)
    patch = {
        "coords_px": (grid * 40).astype(np.int64),
        "grid_xy": grid,
        "region_index": index.astype(np.int32),
        "tissue_fraction": rng.uniform(0.5, 1, n).astype(np.float32),
    }
    return patch, region_xy, rng.normal(size=(n, 5)).astype(np.float32)


def _open(tmp_path, key="k" * 64, name="slide_a", chunk_rows=4):
    patch, region_xy, feats = _arrays()
    writer = CacheWriter.open(
        store_path(tmp_path, name, key), key=key, patch_arrays=patch, region_xy=region_xy, embedding_dim=5,
        attrs={"slide_name": name, "n_patches": len(feats), "encoder": "enc", "encoder_hash": "h" * 64,
               "embedding_dim": 5, "format_version": 1, "patch_size": 32, "target_mpp": 0.5, "region_size": 3},
        chunk_rows=chunk_rows,
    )
    return writer, patch, region_xy, feats


def test_pool_regions_matches_a_direct_computation():
    patch, region_xy, feats = _arrays()
    mean, peak = pool_regions(feats, patch["region_index"], len(region_xy), chunk_rows=5)
    for r in range(len(region_xy)):
        rows = feats[patch["region_index"] == r]
        np.testing.assert_allclose(mean[r], rows.mean(0), rtol=1e-6)
        np.testing.assert_array_equal(peak[r], rows.max(0))


def test_store_is_complete_only_after_finish(tmp_path):
    writer, patch, region_xy, feats = _open(tmp_path)
    writer.append(feats[:10])
    assert writer.n_done == 8  # whole chunks of 4 only
    assert not writer.final.exists() and writer.partial.exists()
    with pytest.raises(CacheError, match=r"incomplete.*8/23"):
        load_slide_embeddings(writer.partial)
    with pytest.raises(CacheError, match=r"no complete embedding cache for slide slide_a \(1 incomplete"):
        find_slide_cache(tmp_path, "slide_a")
    assert [c.complete for c in list_caches(tmp_path)] == [False]
    writer.append(feats[10:])
    path = writer.finish()
    assert path == writer.final and not writer.partial.exists()
    emb = load_slide_embeddings(find_slide_cache(tmp_path, "slide_a"))
    np.testing.assert_array_equal(emb.features, feats)
    np.testing.assert_array_equal(emb.coords_px, patch["coords_px"])
    np.testing.assert_array_equal(emb.region_xy, region_xy)
    np.testing.assert_allclose(emb.regional_embeddings["mean"][0], feats[patch["region_index"] == 0].mean(0), rtol=1e-6)
    assert emb.meta["encoder"] == "enc" and emb.meta["cache_path"] == str(path)


def test_partial_store_resumes_at_the_last_whole_chunk(tmp_path):
    writer, _, _, feats = _open(tmp_path)
    writer.append(feats[:7])  # 4 written, 3 buffered then lost (as if killed)
    del writer
    again, _, _, _ = _open(tmp_path, chunk_rows=16)  # the store's chunking wins
    assert again.n_done == 4
    again.append(feats[4:])
    emb = load_slide_embeddings(again.finish())
    np.testing.assert_array_equal(emb.features, feats)


def test_foreign_partial_store_is_restarted(tmp_path):
    writer, _, _, feats = _open(tmp_path)
    writer.append(feats[:8])
    other, _, _, _ = _open(tmp_path, key="k" * 63 + "x")  # same name prefix, other key
    assert other.n_done == 0


def test_lookup_by_path_name_and_encoder(tmp_path):
    for enc in ("enc-a", "enc-b"):
        emb = SlideEmbeddings(
            slide_name="s1", features=np.ones((3, 2), np.float32), meta={"encoder": enc, "encoder_hash": enc * 8}
        )
        write_slide_embeddings(tmp_path, emb, key=(enc * 20)[:64].ljust(64, "0"), attrs={"encoder": enc})
    with pytest.raises(CacheError, match=r"2 caches for slide s1 .*enc-a.*enc-b.*encoder="):
        find_slide_cache(tmp_path, "s1")
    assert load_slide_embeddings(find_slide_cache(tmp_path, "s1.svs", encoder="enc-b")).meta["encoder"] == "enc-b"
    assert find_slide_cache(tmp_path, Path("/elsewhere/s1.tiff"), encoder="enc-a").name.startswith("s1-")
    with pytest.raises(CacheError, match="no complete embedding cache for slide s2"):
        find_slide_cache(tmp_path, "s2")


def test_bag_without_coordinates_round_trips(tmp_path):
    emb = SlideEmbeddings(
        slide_name="bag", features=np.arange(12, dtype=np.float32).reshape(4, 3), meta={"encoder": "x"}
    )
    loaded = load_slide_embeddings(write_slide_embeddings(tmp_path, emb, key="b" * 64))
    assert loaded.coords_px is None and not loaded.has_regions and loaded.regional_embeddings == {}
    np.testing.assert_array_equal(loaded.features, emb.features)


def test_unwritable_cache_dir_is_refused_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="file/cache: cache directory is not writable"):
        check_writable(blocker / "cache")
    with pytest.raises(CacheError, match="MiB free"):
        check_writable(tmp_path, min_free_bytes=1 << 62)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="POSIX permissions, and root ignores them")
def test_read_only_cache_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CacheError, match="not writable"):
            check_writable(ro)
    finally:
        ro.chmod(0o755)


def test_not_a_cache(tmp_path):
    with pytest.raises(CacheError, match="not an embedding cache"):
        load_slide_embeddings(tmp_path)
