"""Bags of a handful of patches (TMA cores, small biopsies) train with the defaults."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.first_model import make_bag
from napari_regional_mil.model.selection import select_patches
from napari_regional_mil.synth.bags import synthetic_bags
from napari_regional_mil.training.datasets import LabelledSlide
from napari_regional_mil.training.metrics import roc_auc
from napari_regional_mil.training.predict import predict_bags
from napari_regional_mil.training.train import TrainConfig, train_model


def test_a_small_bag_is_seen_whole_and_a_few_region_bag_gives_about_count_patches():
    cfg = SelectionConfig()  # the defaults: equal_per_region, 4 patches per region, 64-256 patches
    rng = np.random.default_rng(0)
    one_region = np.zeros(20, dtype=np.int64)  # a TMA core: 20 patches in one region
    assert select_patches(cfg, 20, region_index=one_region, rng=rng).tolist() == list(range(20))
    two_regions = np.repeat([0, 1], 150)  # a biopsy: 300 patches in two regions
    counts = [select_patches(cfg, 300, region_index=two_regions, rng=rng).size for _ in range(20)]
    assert min(counts) >= 64 and max(counts) <= 257  # not 2 x 4 = 8 patches
    many = np.repeat(np.arange(100), 4)  # a whole slide: 100 regions of 4 patches, unchanged
    sel = select_patches(SelectionConfig(min_patches=32, max_patches=32), 400, region_index=many, rng=rng)
    assert np.bincount(many[sel]).max() == 4 and sel.size == 32


@pytest.mark.parametrize("model_type", ["regional", "abmil"])
def test_tma_cores_train_with_the_default_settings(model_type):
    bags = synthetic_bags(24, kind="tma", seed=3)
    slides = [LabelledSlide(b, y, b.slide_name) for b, y in bags]
    test = synthetic_bags(20, kind="tma", seed=4)
    config = ModelConfig(input_dim=16, model_type=model_type)  # every model default
    trained = run_job(train_model(slides, class_names=("neg", "pos"), model_config=config,
                                  config=TrainConfig(epochs=15, min_epochs=15, val_fraction=0.0, threads=1)))
    probs = predict_bags(trained.model, [make_bag(b, trained.model.config) for b, _ in test])
    assert roc_auc(probs, np.array([y for _, y in test])) > 0.9
