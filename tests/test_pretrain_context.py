"""Several scales: context embeddings per region, cached with the others, merged into the global embedding."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_regional_mil.cli import main
from napari_regional_mil.embedding import find_slide_cache, load_slide_embeddings
from napari_regional_mil.embedding.context import (
    context_corners,
    context_name,
    embed_context,
)
from napari_regional_mil.errors import CacheError, TrainingError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig
from napari_regional_mil.model.first_model import FirstModel, make_bag

KEY = "builtin-he_x2"


@pytest.fixture(scope="module")
def context_cache(tmp_path_factory, embed_slide_path):
    """The small embedding slide embedded by the CLI with a context encoder at 2 x the mpp."""
    cache = tmp_path_factory.mktemp("context_cache")
    argv = ["embed", str(embed_slide_path), "--out", str(cache), "--patch-size", "32", "--region-size", "4",
            "--context-encoder", "builtin-he", "--context-scale", "2"]
    assert main(argv) == 0
    return find_slide_cache(cache, embed_slide_path)


def test_context_corners_centre_regions_inside_the_slide():
    region_xy = np.array([[0, 0], [2, 1], [4, 3]])  # (x, y)
    corners = context_corners(region_xy, region_size=4, patch_size_level0=10.0, scale=2, slide_dimensions=(170, 130))
    # region (2, 1) spans x 80..120, y 40..80: a 20 px context patch centred at (100, 60)
    assert corners[1].tolist() == [90, 50]
    assert corners[0].tolist() == [10, 10]
    assert corners[2].tolist() == [150, 110]  # centre (180, 140) shifted inside a 170 x 130 slide
    assert context_name("my.encoder", 2.5) == "my_encoder_x2_5"


def test_cli_embed_caches_context_embeddings_per_region(context_cache, embed_slide_path):
    emb = load_slide_embeddings(context_cache)
    assert set(emb.context_embeddings) == {KEY}
    ctx = emb.context_embeddings[KEY]
    assert ctx.shape == (emb.n_regions, 185) and ctx.dtype == np.float32 and np.isfinite(ctx).all()
    assert not np.allclose(ctx, emb.regional_embeddings["mean"], atol=1e-3)  # another scale, not the pooled patches
    attrs = json.loads((context_cache / "zarr.json").read_text())["attributes"]["context"][KEY]
    assert attrs["scale"] == 2.0 and attrs["encoder"] == "builtin-he" and attrs["input_mpp"] == pytest.approx(1.0)
    again = run_job(embed_context(context_cache, encoder="builtin-he", scale=2))
    assert not again.computed and again.name == KEY


def test_cancelled_context_embedding_leaves_the_cache_unchanged(context_cache):
    before = sorted(p.name for p in context_cache.iterdir())
    attrs_before = (context_cache / "zarr.json").read_text()
    job = embed_context(context_cache, encoder="builtin-he", scale=4, batch_size=2)
    next(job)
    next(job)
    job.close()
    assert sorted(p.name for p in context_cache.iterdir()) == before
    assert (context_cache / "zarr.json").read_text() == attrs_before
    assert set(load_slide_embeddings(context_cache).context_embeddings) == {KEY}


def test_context_needs_a_complete_cache(tmp_path):
    with pytest.raises(CacheError, match="not a complete embedding cache"):
        next(embed_context(tmp_path / "missing.zarr", encoder="builtin-he"))


def test_context_embeddings_reach_the_global_embedding(context_cache):
    emb = load_slide_embeddings(context_cache)
    config = ModelConfig(
        input_dim=185, n_classes=2, hidden_dim=16, attention_dim=8, dropout=0.0, context_dims={KEY: 185}
    )
    torch.manual_seed(0)
    model = FirstModel(config).eval()
    with torch.no_grad():
        base = model(make_bag(emb, config)).logits
        changed = replace(emb, context_embeddings={KEY: emb.context_embeddings[KEY][::-1] * -1.0})
        other = model(make_bag(changed, config)).logits
        same_patches = model(
            make_bag(replace(emb, context_embeddings={KEY: emb.context_embeddings[KEY] * 1.0}), config)
        ).logits
    assert not torch.allclose(base, other)
    assert torch.equal(base, same_patches)
    assert model.classifier.in_features == 16 * 3  # selected patches + all regions + one context vector
    with pytest.raises(TrainingError, match=f"no context embeddings '{KEY}'"):
        make_bag(replace(emb, context_embeddings={}), config)


def test_train_command_picks_up_context_embeddings(context_cache):
    from napari_regional_mil.cli.cmd_train import context_dims_of
    from napari_regional_mil.training.datasets import LabelledSlide

    emb = load_slide_embeddings(context_cache)
    slides = [LabelledSlide(emb, 0, "p0"), LabelledSlide(replace(emb, slide_name="b"), 1, "p1")]
    assert context_dims_of(slides) == {KEY: 185}
