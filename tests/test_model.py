"""The first model: permutation invariance, bag-size consistency, chunking, evidence, bad bags."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_regional_mil.embedding.types import SlideEmbeddings
from napari_regional_mil.errors import TrainingError
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.first_model import FirstModel, make_bag
from napari_regional_mil.training.predict import predict_slide

VARIANTS = [
    {"model_type": "regional"},
    {"model_type": "regional", "regional_source": "attention", "selection": SelectionConfig(n_neighbours=3)},
    {"model_type": "regional", "regional_source": "max", "all_regions": False},
    {"model_type": "abmil"},
    {"model_type": "mean"},
]


@pytest.fixture
def slide(labelled_synthetic):
    slides, _ = labelled_synthetic(2, seed=3)
    return slides[0].embeddings


def _model(emb, **kwargs):
    torch.manual_seed(0)
    cfg = ModelConfig(input_dim=emb.embedding_dim, hidden_dim=16, attention_dim=8, **kwargs)
    return FirstModel(cfg).eval()


def _permuted(emb: SlideEmbeddings, perm: np.ndarray) -> SlideEmbeddings:
    return dataclasses.replace(
        emb,
        features=emb.features[perm],
        coords_px=emb.coords_px[perm],
        grid_xy=emb.grid_xy[perm],
        region_index=emb.region_index[perm],
        tissue_fraction=emb.tissue_fraction[perm],
    )


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "-".join(str(v) for v in k.values())[:40])
def test_permuting_patches_changes_nothing(slide, kwargs):
    model = _model(slide, **kwargs)
    perm = np.random.default_rng(0).permutation(slide.n_patches)
    a = predict_slide(model, slide)
    b = predict_slide(model, _permuted(slide, perm))
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.patch_attention[perm], b.patch_attention, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a.class_evidence[perm], b.class_evidence, rtol=1e-4, atol=1e-6)
    if a.region_attention is not None:
        np.testing.assert_allclose(a.region_attention, b.region_attention, rtol=1e-4, atol=1e-7)
    assert a.patch_attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(a.probabilities, 0.5)  # a real, non-trivial output


@pytest.mark.parametrize("kwargs", VARIANTS[:1] + VARIANTS[3:], ids=["regional", "abmil", "mean"])
def test_duplicating_every_patch_changes_nothing(slide, kwargs):
    """Attention pooling is a weighted mean: the bag size does not matter, only its content.

    This is what lets a model trained on selected subsets run on every patch.
    """
    model = _model(slide, **kwargs)
    twice = np.r_[np.arange(slide.n_patches), np.arange(slide.n_patches)]
    doubled = dataclasses.replace(
        slide,
        features=slide.features[twice],
        coords_px=slide.coords_px[twice],
        grid_xy=slide.grid_xy[twice],
        region_index=slide.region_index[twice],
        tissue_fraction=slide.tissue_fraction[twice],
    )
    a, b = predict_slide(model, slide), predict_slide(model, doubled)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5, atol=1e-6)


def test_mean_model_has_uniform_attention(slide):
    pred = predict_slide(_model(slide, model_type="mean"), slide)
    np.testing.assert_allclose(pred.patch_attention, 1.0 / slide.n_patches, rtol=1e-5)
    assert pred.region_attention is None


def test_chunked_inference_equals_whole_bag(slide):
    model = _model(slide, model_type="regional", regional_source="attention", selection=SelectionConfig(n_neighbours=2))
    whole = predict_slide(model, slide, chunk_size=100_000)
    chunked = predict_slide(model, slide, chunk_size=7)
    np.testing.assert_allclose(whole.probabilities, chunked.probabilities, rtol=1e-5)
    np.testing.assert_allclose(whole.patch_attention, chunked.patch_attention, rtol=1e-4, atol=1e-8)


def test_inference_is_deterministic_despite_dropout(slide):
    model = _model(slide, model_type="regional", dropout=0.5)
    model.train()  # predict_slide must switch to eval and back
    a, b = predict_slide(model, slide), predict_slide(model, slide)
    assert np.array_equal(a.probabilities, b.probabilities)
    assert model.training


@pytest.mark.parametrize("model_type", ["regional", "abmil"])
def test_evidence_sums_to_the_selected_paths_logit_contribution(slide, model_type):
    model = _model(slide, model_type=model_type)
    bag = make_bag(slide, model.config)
    with torch.inference_mode():
        out = model(bag, evidence=True)
        # logits without the selected-patch path: zero its part of the classifier
        weight = model.classifier.weight.clone()
        model.classifier.weight[:, : model.config.hidden_dim] = 0
        rest = model(bag).logits
        model.classifier.weight.copy_(weight)
    np.testing.assert_allclose(out.patch_evidence.sum(0).numpy(), (out.logits - rest).numpy(), rtol=1e-4, atol=1e-5)


def test_region_index_and_attention_shapes(slide):
    pred = predict_slide(_model(slide, model_type="regional"), slide)
    assert pred.region_attention.shape == (slide.n_regions,)
    assert np.array_equal(pred.region_index, slide.region_index)
    assert pred.class_evidence.shape == (slide.n_patches, 2)


def test_training_step_on_selected_patches_has_gradients(slide):
    model = _model(slide, model_type="regional", selection=SelectionConfig(n_neighbours=2)).train()
    bag = make_bag(slide, model.config)
    out = model(bag, torch.tensor([0, 3, 4, 20]))
    assert out.patch_indices.tolist() == [0, 3, 4, 20] and out.patch_attention.shape == (4,)
    out.logits[1].backward()
    assert model.fuse.weight.grad is not None and model.fuse.weight.grad.abs().sum() > 0
    assert model.neighbour_attention.attention.value.weight.grad.abs().sum() > 0


def test_several_scales_context_embeddings_enter_the_global_embedding(slide):
    rng = np.random.default_rng(0)
    ctx = rng.normal(size=(slide.n_regions, 5)).astype(np.float32)
    emb = dataclasses.replace(slide, context_embeddings={"x5": ctx})
    model = _model(emb, context_dims={"x5": 5})
    a = predict_slide(model, emb).probabilities
    b = predict_slide(model, dataclasses.replace(emb, context_embeddings={"x5": ctx * -3})).probabilities
    assert not np.allclose(a, b)
    with pytest.raises(TrainingError, match="no context embeddings 'x5'"):
        make_bag(slide, model.config)


def test_bad_bags_are_refused(slide):
    cfg = ModelConfig(input_dim=slide.embedding_dim)
    empty = dataclasses.replace(slide, features=np.zeros((0, slide.embedding_dim), np.float32))
    with pytest.raises(TrainingError, match="empty bag"):
        make_bag(empty, cfg)
    with pytest.raises(TrainingError, match="dimension"):
        make_bag(slide, dataclasses.replace(cfg, input_dim=slide.embedding_dim + 1))
    no_regions = SlideEmbeddings(slide_name="bag", features=slide.features)
    with pytest.raises(TrainingError, match="needs patch grid and regions"):
        make_bag(no_regions, cfg)
    assert make_bag(no_regions, cfg.without_regions()).n_patches == slide.n_patches


def test_hundred_thousand_patches_run_in_chunks():
    rng = np.random.default_rng(0)
    n_rows, n_cols, k = 250, 401, 8
    gy, gx = np.mgrid[:n_rows, :n_cols]
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.int32)
    rid = (grid[:, 1] // k) * 1000 + grid[:, 0] // k
    present, region_index = np.unique(rid, return_inverse=True)
    emb = SlideEmbeddings(
        slide_name="big",
        features=rng.normal(size=(grid.shape[0], 8)).astype(np.float32),
        grid_xy=grid,
        region_index=region_index.astype(np.int32),
        region_xy=np.stack([present % 1000, present // 1000], 1).astype(np.int32),
    )
    assert emb.n_patches > 100_000
    pred = predict_slide(_model(emb, model_type="regional"), emb, chunk_size=8192)
    assert pred.patch_attention.shape == (emb.n_patches,) and np.isfinite(pred.probabilities).all()
