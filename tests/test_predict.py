"""Prediction: SlidePrediction from a checkpoint, attention files beside the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_regional_mil.errors import CacheError
from napari_regional_mil.model.checkpoint import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from napari_regional_mil.model.config import ModelConfig
from napari_regional_mil.model.first_model import FirstModel
from napari_regional_mil.training.predict import (
    attention_path,
    predict_slide,
    read_attention,
    write_attention,
)


@pytest.fixture
def slide(labelled_synthetic):
    return labelled_synthetic(2, seed=31)[0][0].embeddings


def _checkpoint(slide, model_type="regional", threshold=0.5):
    torch.manual_seed(0)
    model = FirstModel(
        ModelConfig(input_dim=slide.embedding_dim, model_type=model_type, hidden_dim=16, attention_dim=8)
    )
    return Checkpoint(model=model.eval(), class_names=("neg", "pos"), threshold=threshold)


def test_prediction_record_from_a_checkpoint_file(tmp_path, slide):
    path = save_checkpoint(_checkpoint(slide, threshold=0.8), tmp_path / "m.safetensors")
    pred = predict_slide(path, slide)
    assert pred.class_names == ("neg", "pos") and pred.threshold == 0.8
    assert pred.probabilities.shape == (2,) and pred.probabilities.sum() == pytest.approx(1.0)
    assert pred.patch_attention.shape == (slide.n_patches,) and pred.patch_attention.sum() == pytest.approx(1, abs=1e-5)
    assert pred.region_attention.shape == (slide.n_regions,)
    assert pred.predicted == ("pos" if pred.probabilities[1] >= 0.8 else "neg")
    assert predict_slide(load_checkpoint(path), slide, threshold=0.0).predicted == "pos"


def test_regional_model_without_all_regions_path_reports_region_sums(slide):
    torch.manual_seed(0)
    model = FirstModel(ModelConfig(input_dim=slide.embedding_dim, all_regions=False, hidden_dim=16, attention_dim=8))
    pred = predict_slide(model, slide)
    sums = np.bincount(slide.region_index, weights=pred.patch_attention, minlength=slide.n_regions)
    np.testing.assert_allclose(pred.region_attention, sums, rtol=1e-5, atol=1e-7)
    assert pred.class_names == ("0", "1")


def test_abmil_has_no_region_attention(slide):
    pred = predict_slide(_checkpoint(slide, "abmil"), slide)
    assert pred.region_attention is None and np.array_equal(pred.region_index, slide.region_index)


def test_attention_file_round_trip_beside_the_cache(tmp_path, slide):
    cache = tmp_path / "case-0123456789ab.zarr"
    cache.mkdir()
    pred = predict_slide(_checkpoint(slide), slide)
    path = write_attention(pred, attention_path(cache), embeddings=slide)
    assert path == tmp_path / "case-0123456789ab.zarr.attention.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.name, path.name]  # nothing else left
    back = read_attention(path)
    assert back.slide_name == slide.slide_name and back.class_names == pred.class_names
    np.testing.assert_array_equal(back.patch_attention, pred.patch_attention)
    np.testing.assert_array_equal(back.region_attention, pred.region_attention)
    np.testing.assert_array_equal(back.class_evidence, pred.class_evidence)
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["grid_xy"], slide.grid_xy)


def test_unreadable_attention_file(tmp_path):
    bad = tmp_path / "x.attention.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CacheError, match=r"x\.attention\.npz"):
        read_attention(bad)
