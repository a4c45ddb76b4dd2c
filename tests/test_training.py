"""Training the first model: seeds, progress and metrics, stopping, bags without coordinates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_regional_mil.embedding.types import SlideEmbeddings
from napari_regional_mil.errors import TrainingError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.first_model import make_bag
from napari_regional_mil.training.datasets import LabelledSlide
from napari_regional_mil.training.metrics import roc_auc
from napari_regional_mil.training.predict import predict_bags
from napari_regional_mil.training.train import (
    TrainConfig,
    split_validation,
    train_model,
)

FAST = TrainConfig(epochs=3, min_epochs=1, val_fraction=0.25, threads=1)


def _config(slides, model_type="regional", **kwargs):
    kwargs.setdefault("selection", SelectionConfig(min_patches=16, max_patches=48, patches_per_region=3))
    return ModelConfig(
        input_dim=slides[0].embeddings.embedding_dim, model_type=model_type, hidden_dim=16, attention_dim=8, **kwargs
    )


def _weights(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_same_seed_gives_identical_weights(labelled_synthetic):
    slides, classes = labelled_synthetic(12, seed=1)
    cfg = _config(slides, selection=SelectionConfig(min_patches=8, max_patches=30, n_neighbours=2))
    a = _weights(run_job(train_model(slides, class_names=classes, model_config=cfg, config=FAST)))
    torch.manual_seed(999)  # global state before the call must not matter
    b = _weights(run_job(train_model(slides, class_names=classes, model_config=cfg, config=FAST)))
    c = _weights(
        run_job(train_model(slides, class_names=classes, model_config=cfg, config=dataclasses.replace(FAST, seed=1)))
    )
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_progress_carries_per_epoch_metrics(labelled_synthetic):
    slides, classes = labelled_synthetic(12, seed=2)
    events = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    result = run_job(
        train_model(slides, class_names=classes, model_config=_config(slides), config=FAST), events.append
    )
    epochs = [e for e in events if "train_loss" in e.metrics]
    assert [e.metrics["epoch"] for e in epochs] == [1, 2, 3]
    for e in epochs:
        assert e.stage == "train" and 0 < e.fraction <= 1
        assert {"train_loss", "train_auc", "val_loss", "val_auc", "val_bacc", "lr", "best_epoch"} <= set(e.metrics)
        assert np.isfinite(e.metrics["val_loss"]) and np.isfinite(e.metrics["val_auc"])
    assert events[-1].fraction == 1.0
    assert len(result.history) == 3 and 1 <= result.best_epoch <= 3
    assert len(result.validation_slides) == 4  # a quarter of the 12 slides, both classes
    assert result.checkpoint.encoder["name"] == "synthetic-prototypes"
    assert result.checkpoint.tiling["region_size"] == 5
    assert result.checkpoint.training["n_train"] == 8
    assert torch.get_num_threads() == 2  # the job trained on 1 thread and restored the setting
    torch.set_num_threads(threads)


def test_closing_the_job_stops_training_and_writes_nothing(labelled_synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    slides, classes = labelled_synthetic(8, seed=3)
    job = train_model(slides, class_names=classes, model_config=_config(slides), config=TrainConfig(epochs=50))
    for event in job:
        if event.metrics.get("epoch") == 2:
            break
    job.close()
    with pytest.raises(StopIteration):
        next(job)
    assert list(tmp_path.iterdir()) == []


def test_early_stopping_keeps_the_best_epoch(labelled_synthetic):
    slides, classes = labelled_synthetic(12, seed=4)
    # weights that barely move: nothing improves after epoch 1, so training stops at min_epochs
    frozen = TrainConfig(epochs=40, patience=2, min_epochs=4, val_fraction=0.25, learning_rate=1e-12, threads=1)
    result = run_job(train_model(slides, class_names=classes, model_config=_config(slides), config=frozen))
    assert len(result.history) == 4 and result.best_epoch == 1
    learning = dataclasses.replace(frozen, learning_rate=3e-3, patience=3)
    result = run_job(train_model(slides, class_names=classes, model_config=_config(slides), config=learning))
    best = result.history[result.best_epoch - 1]
    assert best["val_auc"] == max(h["val_auc"] for h in result.history)
    assert len(result.history) == 40 or len(result.history) - result.best_epoch == 3


def test_regional_model_beats_abmil_on_the_context_task(labelled_synthetic):
    """Same patch-type counts in both classes: only where the motif lies tells them apart."""
    train, classes = labelled_synthetic(24, seed=10)
    test, _ = labelled_synthetic(12, seed=11)
    labels = np.array([s.label for s in test])
    config = TrainConfig(epochs=15, min_epochs=15, val_fraction=0.0, learning_rate=3e-3, threads=1)
    auc = {}
    for model_type in ("regional", "abmil"):
        result = run_job(
            train_model(train, class_names=classes, model_config=_config(train, model_type), config=config)
        )
        probs = predict_bags(result.model, [make_bag(s.embeddings, result.model.config) for s in test])
        auc[model_type] = roc_auc(probs, labels)
    assert auc["regional"] >= 0.9
    assert auc["abmil"] <= 0.75


def test_bags_without_coordinates_train_as_patch_level_mil(labelled_synthetic):
    slides, classes = labelled_synthetic(10, seed=5, task="presence")
    bare = [
        dataclasses.replace(s, embeddings=SlideEmbeddings(slide_name=s.name, features=s.embeddings.features))
        for s in slides
    ]
    with pytest.warns(UserWarning, match="regional parts are switched off"):
        result = run_job(train_model(bare, class_names=classes, model_config=_config(bare), config=FAST))
    assert result.model.config.model_type == "abmil"


def test_class_weights_and_their_validation(labelled_synthetic):
    slides, classes = labelled_synthetic(8, seed=6)
    run_job(
        train_model(
            slides,
            class_names=classes,
            model_config=_config(slides),
            config=dataclasses.replace(FAST, class_weights="balanced"),
        )
    )
    with pytest.raises(TrainingError, match="3 class weights given for 2 classes"):
        run_job(
            train_model(
                slides,
                class_names=classes,
                model_config=_config(slides),
                config=dataclasses.replace(FAST, class_weights=(1.0, 2.0, 3.0)),
            )
        )


def test_one_class_or_empty_training_set_is_refused(labelled_synthetic):
    slides, classes = labelled_synthetic(8, seed=7)
    one_class = [s for s in slides if s.label == 0]
    with pytest.raises(TrainingError, match="only one class"):
        run_job(train_model(one_class, class_names=classes, config=dataclasses.replace(FAST, val_fraction=0.0)))
    with pytest.raises(TrainingError, match="no training slides"):
        run_job(train_model([], class_names=classes))


def test_mixed_encoders_are_refused(labelled_synthetic):
    slides, classes = labelled_synthetic(6, seed=8)
    odd = slides[3].embeddings
    slides[3] = dataclasses.replace(
        slides[3], embeddings=dataclasses.replace(odd, meta={**odd.meta, "encoder": "other"})
    )
    with pytest.raises(TrainingError, match="differ in name"):
        run_job(train_model(slides, class_names=classes, model_config=_config(slides), config=FAST))


def test_validation_split_is_stratified_and_keeps_patients_together():
    labels = np.array([0] * 10 + [1] * 10)
    patients = np.array([f"p{i // 2}" for i in range(20)], dtype=object)
    train, val = split_validation(labels, patients, fraction=0.2, rng=np.random.default_rng(0))
    assert set(patients[train]).isdisjoint(patients[val])
    assert np.bincount(labels[val]).tolist() == [2, 2]
    assert np.array_equal(np.sort(np.r_[train, val]), np.arange(20))


def test_labelled_slide_name(labelled_synthetic):
    slides, _ = labelled_synthetic(2)
    assert isinstance(slides[0], LabelledSlide) and slides[0].name == "synth_000"
