"""Reading parts of a store (rows, arrays, whole slides) and float16 stores; damaged stores fail loudly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_regional_mil.embedding.store import (
    CacheWriter,
    StoredEmbeddings,
    StoreReader,
    cache_key,
    load_slide_embeddings,
    store_path,
)
from napari_regional_mil.errors import CacheError
from napari_regional_mil.tiling import TilingParams

N, D = 37, 6


def _write(folder: Path, *, dtype="float32", chunk_rows=8, seed=0, name="slide_a", key="k" * 64, scale=1.0):
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(9), np.arange(5))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)[:N].astype(np.int32)
    cells = grid // 3
    uniq, index = np.unique(cells[:, 1] * 10 + cells[:, 0], return_inverse=True)
    region_xy = np.stack([uniq % 10, uniq // 10], 1).astype(np.int32)
    arrays = {
        "coords_px": (grid * 40).astype(np.int64), "grid_xy": grid, "region_index": index.astype(np.int32),
        "tissue_fraction": rng.uniform(0.5, 1, N).astype(np.float32),
    }
    feats = (rng.normal(size=(N, D)) * scale).astype(np.float32)
    writer = CacheWriter.open(
        store_path(folder, name, key), key=key, patch_arrays=arrays, region_xy=region_xy, embedding_dim=D,
        attrs={"slide_name": name, "n_patches": N, "encoder": "enc", "encoder_hash": "h" * 64, "embedding_dim": D,
               "format_version": 1, "patch_size": 32, "target_mpp": 0.5, "region_size": 3,
               "created": f"2025-01-0{seed + 1}"},
        chunk_rows=chunk_rows, dtype=dtype,
    )
    for start in range(0, N, 5):
        writer.append(feats[start : start + 5])
    return writer.finish(), feats


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rows_are_the_stored_values_in_any_order_with_repeats(tmp_path, dtype):
    path, feats = _write(tmp_path, dtype=dtype)
    stored = feats.astype(dtype).astype(np.float32)
    reader = StoreReader(path)
    assert reader.dtype == np.dtype(dtype) and (reader.n_patches, reader.embedding_dim) == (N, D)
    assert np.dtype(zarr.open_array(path / "features", mode="r").dtype) == np.dtype(dtype)
    rows = np.array([36, 0, 5, 6, 7, 8, 5, 17, 16, 15, 31])
    got = reader.rows(rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, stored[rows])
    np.testing.assert_array_equal(reader.features(), stored)
    np.testing.assert_array_equal(reader.features(start=3, stop=29), stored[3:29])
    np.testing.assert_array_equal(reader.array("region_index"), zarr.open_array(path / "region_index")[...])
    loaded = load_slide_embeddings(path)
    assert loaded.features.dtype == np.dtype(dtype)  # kept as stored: half the memory
    np.testing.assert_array_equal(loaded.features.astype(np.float32), stored)


def test_regional_pooling_of_a_float16_store_is_float32(tmp_path):
    path, feats = _write(tmp_path, dtype="float16")
    emb = load_slide_embeddings(path)
    mean = emb.regional_embeddings["mean"]
    assert mean.dtype == np.float32
    stored = feats.astype(np.float16).astype(np.float64)
    for r in range(emb.n_regions):
        np.testing.assert_allclose(mean[r], stored[emb.region_index == r].mean(0), rtol=1e-6, atol=1e-7)


def test_rows_of_a_compressed_store_from_before_are_read_by_chunk(tmp_path):
    path, feats = _write(tmp_path)
    legacy = zarr.open_group(path, mode="r+", zarr_format=3)
    del legacy["features"]
    array = legacy.create_array("features", shape=(N, D), chunks=(8, D), dtype=np.float32, fill_value=np.nan)
    array[...] = feats  # zstd-compressed, as stores were written before
    rows = np.array([3, 30, 2, 2, 11])
    np.testing.assert_array_equal(StoreReader(path).rows(rows), feats[rows])
    np.testing.assert_array_equal(load_slide_embeddings(path).features, feats)


def test_stored_embeddings_read_on_demand(tmp_path):
    path, feats = _write(tmp_path)
    lazy = StoredEmbeddings(path)
    real = load_slide_embeddings(path)
    assert (lazy.slide_name, lazy.n_patches, lazy.embedding_dim, lazy.n_regions) == (
        real.slide_name, real.n_patches, real.embedding_dim, real.n_regions)
    assert lazy.has_regions and lazy.meta == real.meta
    np.testing.assert_array_equal(lazy.features[[4, 1]], feats[[4, 1]])
    np.testing.assert_array_equal(lazy.features[2:9], feats[2:9])
    np.testing.assert_array_equal(np.asarray(lazy.features), feats)
    np.testing.assert_array_equal(lazy.grid_xy, real.grid_xy)
    np.testing.assert_array_equal(lazy.regional_embeddings["max"], real.regional_embeddings["max"])


def test_a_deleted_store_is_named(tmp_path):
    path, _ = _write(tmp_path)
    reader = StoreReader(path)
    shutil.rmtree(path)
    with pytest.raises(CacheError, match=r"slide 'slide_a': embedding cache .*slide_a-k+\.zarr is gone"):
        reader.check()
    with pytest.raises(CacheError, match="is gone"):
        reader.rows(np.array([1, 2]))


def test_a_missing_chunk_is_not_read_as_nan(tmp_path):
    path, _ = _write(tmp_path)
    (path / "features" / "c" / "2" / "0").unlink()
    reader = StoreReader(path)
    with pytest.raises(CacheError, match=r"slide 'slide_a': .* lacks chunk features/c/2/0 of 'features'"):
        reader.rows(np.array([0, 17]))
    reader.rows(np.array([0, 9]))  # other chunks still read
    with pytest.raises(CacheError, match="lacks chunk"):
        load_slide_embeddings(path)


def test_a_truncated_chunk_is_named(tmp_path):
    path, _ = _write(tmp_path)
    chunk = path / "features" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:50])
    reader = StoreReader(path)
    with pytest.raises(CacheError, match=r"slide 'slide_a': embedding cache .* truncated chunk features/c/1/0"):
        reader.rows(np.array([12]))
    with pytest.raises(CacheError, match="truncated chunk features/c/1/0"):
        reader.features()
    index = path / "region_index" / "c" / "0"
    index.write_bytes(index.read_bytes()[:-3])
    with pytest.raises(CacheError, match="region_index"):
        reader.array("region_index")


def test_a_store_replaced_by_an_older_float16_one_is_refused(tmp_path):
    path, _ = _write(tmp_path / "a")
    reader = StoreReader(path)
    older, _ = _write(tmp_path / "b", dtype="float16", seed=1)
    shutil.rmtree(path)
    shutil.copytree(older, path)
    with pytest.raises(CacheError, match=r"slide 'slide_a': .* was replaced while in use \(now float16"):
        reader.check()


def test_float16_refuses_values_beyond_its_range(tmp_path):
    with pytest.raises(CacheError, match=r"beyond the range of float16 .* --dtype float32"):
        _write(tmp_path, dtype="float16", scale=1e6)


def test_the_dtype_is_part_of_the_key_and_float32_keys_did_not_change(tmp_path):
    import hashlib
    import json
    from dataclasses import asdict

    from napari_regional_mil.embedding.store import FORMAT_VERSION, slide_identity

    slide = tmp_path / "s.tif"
    slide.write_bytes(b"slide bytes")
    kw = {"tiling_params": TilingParams(), "slide_mpp": 0.5, "encoder_name": "enc", "encoder_hash": "h"}
    before = hashlib.sha256(json.dumps({
        "slide": slide_identity(slide), "tiling": asdict(TilingParams()), "slide_mpp": 0.5, "mask": None,
        "encoder": {"name": "enc", "weights_hash": "h"}, "format_version": FORMAT_VERSION,
    }, sort_keys=True).encode()).hexdigest()
    assert cache_key(slide, **kw) == cache_key(slide, **kw, dtype="float32") == before
    assert cache_key(slide, **kw, dtype="float16") != before
    with pytest.raises(ValueError, match="float16, float32"):
        cache_key(slide, **kw, dtype="bfloat16")


def test_a_partial_store_of_the_other_dtype_is_not_resumed(tmp_path):
    path = store_path(tmp_path, "slide_a", "k" * 64)
    arrays = {"coords_px": np.zeros((N, 2), np.int64)}
    attrs = {"slide_name": "slide_a", "n_patches": N, "embedding_dim": D, "format_version": 1}
    writer = CacheWriter.open(path, key="k" * 64, patch_arrays=arrays, region_xy=None, embedding_dim=D, attrs=attrs,
                              chunk_rows=8, dtype="float32")
    writer.append(np.ones((16, D), np.float32))
    again = CacheWriter.open(path, key="k" * 64, patch_arrays=arrays, region_xy=None, embedding_dim=D, attrs=attrs,
                             chunk_rows=8, dtype="float16")
    assert again.n_done == 0 and "float32, not float16" in again.discarded
