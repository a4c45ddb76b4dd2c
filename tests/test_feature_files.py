"""Feature files of other tools: CLAM/TRIDENT h5, STAMP h5, CLAM .pt, npz (coordinates and patch size from the file)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from napari_regional_mil.errors import CacheError
from napari_regional_mil.training.feature_files import (
    find_feature_file,
    read_feature_file,
)

RNG = np.random.default_rng(0)
# 7 patches on a 3-column grid, listed out of order: (x, y) cells
CELLS = np.array([[2, 1], [0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [0, 2]])
FEATS = RNG.normal(size=(7, 5)).astype(np.float32)
ROW_MAJOR = np.lexsort((CELLS[:, 0], CELLS[:, 1]))


def _rows(bag):
    """Map every read patch back to its written feature row."""
    return [int(np.flatnonzero((f == FEATS).all(1))[0]) for f in bag.features]


def test_clam_h5_with_coords_and_patch_size_gets_grid_and_regions(tmp_path):
    with h5py.File(tmp_path / "clam.h5", "w") as fh:  # CLAM: patch_size at patch_level with a downsample
        fh["features"] = FEATS
        fh["coords"] = CELLS * 512
        fh["coords"].attrs["patch_size"] = 256
        fh["coords"].attrs["patch_level"] = 1
        fh["coords"].attrs["downsample"] = np.array([2.0, 2.0])
    bag = read_feature_file(tmp_path / "clam.h5", region_size=2)
    assert bag.slide_name == "clam" and bag.has_regions
    assert _rows(bag) == ROW_MAJOR.tolist()  # row-major patch order
    assert bag.grid_xy.tolist() == CELLS[ROW_MAJOR].tolist()
    assert bag.coords_px.tolist() == (CELLS[ROW_MAJOR] * 512).tolist()
    assert bag.region_xy.tolist() == [[0, 0], [1, 0], [0, 1]] and bag.n_regions == 3


def test_trident_features_without_coords_are_a_bag_without_regions(tmp_path):
    with h5py.File(tmp_path / "trident.h5", "w") as fh:
        fh["features"] = FEATS[None]  # a leading batch axis
    bag = read_feature_file(tmp_path / "trident.h5")
    assert np.array_equal(bag.features, FEATS) and not bag.has_regions and bag.coords_px is None


def test_stamp_h5_coordinates_in_micrometres(tmp_path):
    with h5py.File(tmp_path / "stamp.h5", "w") as fh:
        fh["feats"] = FEATS.astype(np.float16)
        fh["coords"] = (CELLS * 256.0).astype(np.float32)  # 256 um tiles of 224 px
        fh.attrs.update(unit="um", tile_size_um=256.0, tile_size_px=224, extractor="ctranspath", feat_type="tile")
    bag = read_feature_file(tmp_path / "stamp.h5", slide_name="S1", region_size=2)
    assert bag.slide_name == "S1" and bag.has_regions and bag.coords_px is None
    assert bag.grid_xy.tolist() == CELLS[ROW_MAJOR].tolist()
    assert np.allclose(bag.features, FEATS[ROW_MAJOR], atol=1e-2)  # float16 in the file
    assert bag.meta["encoder"] == "ctranspath" and bag.meta["patch_size"] == 224
    assert bag.meta["target_mpp"] == pytest.approx(256 / 224)


def test_stamp_without_tile_size_uses_the_coordinate_spacing_and_refuses_other_units(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as fh:
        fh["feats"] = FEATS
        fh["coords"] = CELLS * 112.0
    bag = read_feature_file(tmp_path / "old.h5", region_size=8)
    assert bag.grid_xy.tolist() == CELLS[ROW_MAJOR].tolist() and bag.n_regions == 1
    with h5py.File(tmp_path / "px.h5", "w") as fh:
        fh["feats"] = FEATS
        fh["coords"] = CELLS * 112
        fh.attrs["unit"] = "px"
    with pytest.raises(CacheError, match=r"px.h5: STAMP coordinates in 'px'"):
        read_feature_file(tmp_path / "px.h5")


def test_clam_pt_tensors_only_and_the_h5_twin_preferred(tmp_path):
    (tmp_path / "pt_files").mkdir()
    torch.save(torch.from_numpy(FEATS), tmp_path / "pt_files" / "a.pt")
    bag = read_feature_file(tmp_path / "pt_files" / "a.pt")
    assert np.array_equal(bag.features, FEATS) and not bag.has_regions
    torch.save({"features": torch.from_numpy(FEATS), "coords": torch.from_numpy(CELLS * 256)}, tmp_path / "d.pt")
    assert read_feature_file(tmp_path / "d.pt", region_size=2).n_regions == 3
    (tmp_path / "h5_files").mkdir()
    with h5py.File(tmp_path / "h5_files" / "a.h5", "w") as fh:
        fh["features"] = FEATS
        fh["coords"] = CELLS * 256
        fh["coords"].attrs["patch_size"] = 256
    assert read_feature_file(tmp_path / "pt_files" / "a.pt").has_regions  # coordinates from CLAM's h5 twin
    assert find_feature_file(tmp_path, "a") == tmp_path / "h5_files" / "a.h5"


class _Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_pickle_that_is_not_tensors_is_refused_and_never_run(tmp_path, capsys):
    torch.save({"features": _Boom()}, tmp_path / "evil.pt")
    with pytest.raises(CacheError, match=r"evil.pt: not a tensor file \(only tensors are loaded"):
        read_feature_file(tmp_path / "evil.pt")
    assert "unpickled!" not in capsys.readouterr().out
    torch.save({"other": torch.zeros(2)}, tmp_path / "nofeat.pt")
    with pytest.raises(CacheError, match=r"nofeat.pt: no 'features' tensor \(found: other\)"):
        read_feature_file(tmp_path / "nofeat.pt")


def test_npz_and_bad_files(tmp_path):
    np.savez(tmp_path / "plain.npz", features=FEATS)
    assert not read_feature_file(tmp_path / "plain.npz").has_regions
    np.savez(tmp_path / "nofeat.npz", coords=np.zeros((3, 2)))
    with pytest.raises(CacheError, match=r"nofeat\.npz: no 'features' array"):
        read_feature_file(tmp_path / "nofeat.npz")
    np.savez(tmp_path / "empty.npz", features=np.zeros((0, 5)))
    with pytest.raises(CacheError, match=r"empty\.npz: 'features' must be a non-empty"):
        read_feature_file(tmp_path / "empty.npz")
    np.savez(tmp_path / "badcoords.npz", features=FEATS, coords=np.zeros((3, 2)))
    with pytest.raises(CacheError, match=r"badcoords.npz: 'coords' has shape \(3, 2\), expected \(7, 2\)"):
        read_feature_file(tmp_path / "badcoords.npz")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(CacheError, match=r"junk\.h5: cannot read"):
        read_feature_file(tmp_path / "junk.h5")
