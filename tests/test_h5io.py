"""CLAM / TRIDENT h5 export and import."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_regional_mil.embedding import (
    SlideEmbeddings,
    load_slide_embeddings,
    write_slide_embeddings,
)
from napari_regional_mil.embedding.h5io import export_h5, import_h5, regions_from_grid
from napari_regional_mil.errors import CacheError


def _embeddings(side=48.0, k=4, seed=0):
    rng = np.random.default_rng(seed)
    keep = rng.random((9, 13)) > 0.35  # non-square, odd grid with holes
    gy, gx = np.nonzero(keep)
    grid = np.stack([gx, gy], 1).astype(np.int32)
    region_index, region_xy = regions_from_grid(grid, k)
    feats = rng.normal(size=(len(grid), 6)).astype(np.float32)
    from napari_regional_mil.embedding import pool_regions

    mean, peak = pool_regions(feats, region_index, len(region_xy))
    return SlideEmbeddings(
        slide_name="slide_x", features=feats, coords_px=np.round(grid * side).astype(np.int64), grid_xy=grid,
        region_index=region_index, region_xy=region_xy, regional_embeddings={"mean": mean, "max": peak},
        tissue_fraction=rng.uniform(0.5, 1, len(grid)).astype(np.float32),
        meta={"patch_size": 96, "patch_size_level0": side, "slide_mpp": 1.0, "target_mpp": 0.5, "region_size": k,
              "encoder": "builtin-he", "encoder_hash": "a" * 64, "embedding_dim": 6},
    )


def _assert_same(a, b):
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.coords_px, b.coords_px)
    np.testing.assert_array_equal(a.grid_xy, b.grid_xy)
    np.testing.assert_array_equal(a.region_index, b.region_index)
    np.testing.assert_array_equal(a.region_xy, b.region_xy)
    for pool in ("mean", "max"):
        np.testing.assert_allclose(a.regional_embeddings[pool], b.regional_embeddings[pool], rtol=1e-6)


def test_round_trip_through_h5(tmp_path):
    emb = _embeddings()
    path = export_h5(emb, tmp_path / "slide_x.h5")
    with h5py.File(path) as fh:  # what CLAM and TRIDENT read
        assert fh["coords"].shape == (emb.n_patches, 2) and fh["features"].shape == (emb.n_patches, 6)
        attrs = dict(fh["coords"].attrs)
        assert attrs["patch_size_level0"] == 48 and attrs["patch_level"] == 0 and attrs["patch_size"] == 96
        assert attrs["level0_magnification"] == pytest.approx(10.0) and attrs["target_magnification"] == pytest.approx(
            20.0
        )
    back = import_h5(path)
    _assert_same(back, emb)
    assert back.meta["encoder"] == "builtin-he" and back.slide_name == "slide_x"


def test_trident_style_file_rebuilds_grid_and_regions(tmp_path):
    emb = _embeddings(side=64.0, k=4)
    order = np.random.default_rng(1).permutation(emb.n_patches)  # tools may write any order
    path = tmp_path / "TCGA-01.h5"
    with h5py.File(path, "w") as fh:
        coords = fh.create_dataset("coords", data=emb.coords_px[order])
        coords.attrs.update(
            {
                "patch_size": 256,
                "patch_size_level0": 64,
                "target_magnification": 20,
                "level0_magnification": 80,
                "overlap": 0,
                "name": "TCGA-01",
            }
        )
        fh.create_dataset("features", data=emb.features[order])
    back = import_h5(path, region_size=4)
    assert back.slide_name == "TCGA-01" and back.meta["encoder"] == "imported" and back.has_regions
    _assert_same(back, emb)  # re-ordered row-major, regions rebuilt and pooled


def test_clam_style_file_with_patch_level_and_downsample(tmp_path):
    emb = _embeddings(side=512.0, k=5)
    path = tmp_path / "clam.h5"
    with h5py.File(path, "w") as fh:
        coords = fh.create_dataset("coords", data=emb.coords_px)
        coords.attrs.update({"patch_size": 256, "patch_level": 1, "downsample": np.array([2.0, 2.0])})
        fh.create_dataset("features", data=emb.features[None])  # some tools write (1, N, D)
    back = import_h5(path, region_size=5)
    np.testing.assert_array_equal(back.grid_xy, emb.grid_xy)
    assert back.meta["patch_size_level0"] == 512 and back.n_regions == emb.n_regions


def test_coords_without_patch_size_use_their_spacing(tmp_path):
    emb = _embeddings(side=100.0)
    path = tmp_path / "bare.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("coords", data=emb.coords_px)
        fh.create_dataset("features", data=emb.features)
    back = import_h5(path)
    assert back.meta["patch_size_level0"] == 100 and back.has_regions
    np.testing.assert_array_equal(back.grid_xy, emb.grid_xy)


def test_features_only_is_a_bag_without_regions(tmp_path):
    path = tmp_path / "bag.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=np.ones((5, 3), np.float32))
    back = import_h5(path, encoder_name="uni")
    assert back.coords_px is None and not back.has_regions and back.meta["encoder"] == "uni"
    stored = load_slide_embeddings(write_slide_embeddings(tmp_path / "cache", back, key="c" * 64))
    assert stored.coords_px is None and stored.n_patches == 5


def test_bad_files(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"nope")
    with pytest.raises(CacheError, match=r"junk\.h5: not a readable h5 file"):
        import_h5(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "nofeat.h5", "w") as fh:
        fh.create_dataset("coords", data=np.zeros((3, 2)))
    with pytest.raises(CacheError, match=r"nofeat\.h5: no 'features' dataset \(found: coords\)"):
        import_h5(tmp_path / "nofeat.h5")
    with h5py.File(tmp_path / "mismatch.h5", "w") as fh:
        fh.create_dataset("coords", data=np.zeros((3, 2)))
        fh.create_dataset("features", data=np.zeros((4, 2)))
    with pytest.raises(CacheError, match=r"mismatch\.h5: 'coords' has shape \(3, 2\), expected \(4, 2\)"):
        import_h5(tmp_path / "mismatch.h5")
