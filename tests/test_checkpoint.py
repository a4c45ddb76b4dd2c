"""Checkpoints: safetensors + JSON config, round trip, refusal of foreign embeddings and files."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_regional_mil.errors import CheckpointError
from napari_regional_mil.model.checkpoint import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.model.first_model import FirstModel
from napari_regional_mil.training.predict import predict_slide


@pytest.fixture
def slide(labelled_synthetic):
    return labelled_synthetic(2, seed=5)[0][0].embeddings


@pytest.fixture
def checkpoint(slide):
    torch.manual_seed(1)
    cfg = ModelConfig(
        input_dim=slide.embedding_dim,
        n_classes=3,
        hidden_dim=16,
        attention_dim=8,
        selection=SelectionConfig(n_neighbours=2),
    )
    model = FirstModel(cfg).eval()
    model.set_feature_normalisation(torch.full((slide.embedding_dim,), 0.3), torch.full((slide.embedding_dim,), 2.0))
    return Checkpoint(
        model=model,
        class_names=("a", "b", "c"),
        threshold=0.7,
        encoder={"name": "synthetic-prototypes", "weights_hash": "prototypes-12345", "dim": slide.embedding_dim},
        tiling={"target_mpp": 0.5, "patch_size": 32, "region_size": 5},
        training={"best_epoch": 3},
    )


def test_round_trip_gives_identical_predictions(tmp_path, checkpoint, slide):
    path = save_checkpoint(checkpoint, tmp_path / "model.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left
    loaded = load_checkpoint(path)
    assert loaded.class_names == ("a", "b", "c") and loaded.threshold == 0.7
    assert loaded.config == checkpoint.config and loaded.path == path
    assert loaded.encoder["name"] == "synthetic-prototypes" and loaded.tiling["region_size"] == 5
    assert loaded.training["best_epoch"] == 3 and "torch" in loaded.versions
    a, b = predict_slide(checkpoint, slide), predict_slide(loaded, slide)
    assert np.array_equal(a.probabilities, b.probabilities)
    assert np.array_equal(a.patch_attention, b.patch_attention)
    assert torch.equal(loaded.model.feature_scale, checkpoint.model.feature_scale)


def test_config_is_json_in_the_safetensors_header(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        config = json.loads(fh.metadata()["napari_regional_mil"])
    assert config["model"]["model_type"] == "regional" and config["class_names"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoder": "another-encoder"}, "trained on encoder 'synthetic-prototypes'.*'another-encoder'"),
        ({"encoder_hash": "deadbeef"}, "encoder weights hash 'prototypes-12345'.*'deadbeef'"),
        ({"patch_size": 64}, "tiling patch_size=32.*patch_size=64"),
        ({"target_mpp": 0.25}, "tiling target_mpp=0.5.*target_mpp=0.25"),
        ({"region_size": 8}, "tiling region_size=5.*region_size=8"),
    ],
)
def test_foreign_encoder_or_tiling_is_refused(tmp_path, checkpoint, slide, change, message):
    loaded = load_checkpoint(save_checkpoint(checkpoint, tmp_path / "m.safetensors"))
    foreign = dataclasses.replace(slide, meta={**slide.meta, **change})
    with pytest.raises(CheckpointError, match=message):
        predict_slide(loaded, foreign)
    predict_slide(loaded, slide)  # its own embeddings are fine


def test_other_embedding_dimension_is_refused(checkpoint, slide):
    wider = dataclasses.replace(slide, features=np.zeros((slide.n_patches, slide.embedding_dim + 3), np.float32))
    with pytest.raises(CheckpointError, match="expects 12-dimensional"):
        checkpoint.check_compatible(wider)


def test_truncated_file_is_refused_naming_it(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "m.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
        load_checkpoint(cut)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.safetensors"):
        load_checkpoint(empty)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"state": _Exploit(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"model\.pt.*never loaded"):
        load_checkpoint(evil)
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match=r"model\.pkl"):
        load_checkpoint(plain)
    assert not marker.exists()


def test_foreign_safetensors_file_is_refused(tmp_path, checkpoint):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other))
    with pytest.raises(CheckpointError, match=r"other\.safetensors: not a napari-regional-mil"):
        load_checkpoint(other)
    # right metadata, wrong weights
    meta = {"napari_regional_mil": json.dumps(checkpoint.to_json())}
    save_file({"weight": torch.zeros(3)}, str(other), metadata=meta)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(other)


def test_missing_file_and_missing_folder(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(checkpoint, tmp_path / "no" / "such" / "m.safetensors")


def test_failed_save_keeps_the_previous_file(tmp_path, checkpoint, monkeypatch):
    path = save_checkpoint(checkpoint, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(checkpoint, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.safetensors"]
