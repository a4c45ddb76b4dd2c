"""Training and prediction streamed from the caches give bit for bit the in-memory results; damaged caches fail.

A small cohort is written into real stores (float32 and float16); the same training runs
once with every slide held in memory and once streamed step by step (``stream="always"``),
and the final weights, histories and predictions must be equal, not close.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_regional_mil.clinical import parse_clinical_columns
from napari_regional_mil.embedding.store import (
    StoredEmbeddings,
    import_key,
    write_slide_embeddings,
)
from napari_regional_mil.errors import CacheError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.training.memory import plan_memory, prepare_slides
from napari_regional_mil.training.predict import predict_bags
from napari_regional_mil.training.streaming import BagSequence
from napari_regional_mil.training.train import TrainConfig, train_model

FAST = TrainConfig(epochs=3, min_epochs=1, val_fraction=0.25, threads=1)


def _stored(slides, folder: Path, dtype="float32"):
    """The slides written as stores (patch rows in chunks of 1024, as ``embed`` writes them), opened lazily."""
    out = []
    for s in slides:
        key = import_key(_dummy(folder), region_size=5, patch_size_level0=None, encoder=s.name + dtype)
        path = write_slide_embeddings(folder, s.embeddings, key=key, dtype=dtype)
        out.append(dataclasses.replace(s, embeddings=StoredEmbeddings(path), source=path))
    return out


def _dummy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "identity.bin"
    if not marker.exists():
        marker.write_bytes(b"x")
    return marker


def _held(slides):
    return [dataclasses.replace(s, embeddings=s.embeddings.load()) for s in slides]


def _config(slides, model_type="regional", **kwargs):
    kwargs.setdefault("selection", SelectionConfig(min_patches=8, max_patches=30, patches_per_region=3))
    return ModelConfig(input_dim=slides[0].embeddings.embedding_dim, model_type=model_type, hidden_dim=16,
                       attention_dim=8, **kwargs)


def _train(slides, classes, cfg, stream, clinical=None):
    events = []
    result = run_job(train_model(slides, class_names=classes, model_config=cfg, config=dataclasses.replace(
        FAST, stream=stream), clinical=clinical), events.append)
    return result, events


def _assert_same(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.history == b.history or all(
        all(x == y or (np.isnan(x) and np.isnan(y)) for x, y in zip(ha.values(), hb.values()))
        for ha, hb in zip(a.history, b.history)
    )
    assert a.best_epoch == b.best_epoch and a.validation_slides == b.validation_slides


CASES = {
    "equal_per_region+neighbours": {"selection": SelectionConfig(min_patches=8, max_patches=30, n_neighbours=3)},
    "uniform": {"selection": SelectionConfig(strategy="uniform", min_patches=8, max_patches=20)},
    "weighted-attention": {"selection": SelectionConfig(strategy="weighted", weight_source="attention",
                                                        min_patches=8, max_patches=24)},
    "weighted-tissue-abmil": {"model_type": "abmil", "selection": SelectionConfig(
        strategy="weighted", weight_source="tissue", min_patches=8, max_patches=24, n_neighbours=2)},
    "max-pooled-regions": {"regional_source": "max"},
    "attention-regions": {"regional_source": "attention"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_training_is_bitwise_the_in_memory_training(labelled_synthetic, tmp_path, case):
    slides, classes = labelled_synthetic(12, seed=4)
    stored = _stored(slides, tmp_path)
    cfg = _config(slides, **CASES[case])
    streamed, events = _train(stored, classes, cfg, "always")
    held, held_events = _train(_held(stored), classes, cfg, "auto")
    _assert_same(streamed, held)
    plans = [e for e in events if "memory" in e.metrics]
    assert plans[0].metrics["memory"] == "streamed" and plans[0].message.startswith("streaming 12 slides")
    assert next(e for e in held_events if "memory" in e.metrics).metrics["memory"] == "in memory"
    # predictions over every patch, one slide at a time from the caches, equal those of the slides in memory
    p_streamed = predict_bags(streamed.model, BagSequence(stored, streamed.model.config))
    p_held = predict_bags(held.model, BagSequence(_held(stored), held.model.config))
    assert np.array_equal(p_streamed, p_held)


def test_float16_caches_stream_like_they_load(labelled_synthetic, tmp_path):
    slides, classes = labelled_synthetic(12, seed=5)
    stored = _stored(slides, tmp_path, dtype="float16")
    assert stored[0].embeddings.load().features.dtype == np.float16
    cfg = _config(slides, selection=SelectionConfig(min_patches=8, max_patches=30, n_neighbours=2))
    streamed, _ = _train(stored, classes, cfg, "always")
    held, _ = _train(stored, classes, cfg, "never")  # loads them into memory (float16, cast per bag)
    _assert_same(streamed, held)


def test_clinical_variables_are_carried_when_streaming(clinical_synthetic, tmp_path):
    slides, classes, _ = clinical_synthetic(12, seed=3)
    stored = _stored(slides, tmp_path)
    assert all(s.clinical is not None for s in stored)
    spec = parse_clinical_columns("grade,age,sex")
    cfg = _config(slides)
    streamed, _ = _train(stored, classes, cfg, "always", clinical=spec)
    held, _ = _train(_held(stored), classes, cfg, "never", clinical=spec)
    _assert_same(streamed, held)
    assert torch.equal(streamed.model.slide_logit_reference, held.model.slide_logit_reference)


def test_auto_holds_a_cohort_that_fits_and_streams_one_that_does_not(labelled_synthetic, tmp_path):
    slides, _ = labelled_synthetic(4, seed=6)
    stored = _stored(slides, tmp_path)
    need = sum(s.embeddings.n_patches * s.embeddings.embedding_dim * 8 for s in stored)
    assert not plan_memory(stored, available=need * 10).stream
    big = plan_memory(stored, available=need)
    assert big.stream and big.needed == need and "would exceed 40% of" in big.reason
    assert plan_memory(stored, mode="always", available=need * 100).stream
    assert not plan_memory(stored, mode="never", available=1).stream
    held = run_job(prepare_slides(stored, mode="never"))
    assert all(not isinstance(s.embeddings, StoredEmbeddings) for s in held)
    assert [s.clinical for s in held] == [s.clinical for s in stored]


def _broken_during_training(stored, classes, cfg, damage):
    job = train_model(stored, class_names=classes, model_config=cfg,
                      config=dataclasses.replace(FAST, stream="always", epochs=4))
    for event in job:
        if event.metrics.get("epoch") == 1:
            damage()
    return job


def test_a_cache_deleted_during_training_fails_the_step_naming_slide_and_store(labelled_synthetic, tmp_path):
    slides, classes = labelled_synthetic(8, seed=7)
    stored = _stored(slides, tmp_path / "cache")
    victim = stored[0]
    with pytest.raises(CacheError) as info:
        _broken_during_training(stored, classes, _config(slides), lambda: shutil.rmtree(victim.source))
    message = str(info.value)
    assert "\n" not in message
    assert f"slide {victim.name!r}" in message and str(victim.source) in message and "is gone" in message


def test_a_truncated_chunk_fails_the_step(labelled_synthetic, tmp_path):
    slides, classes = labelled_synthetic(8, seed=8)
    stored = _stored(slides, tmp_path / "cache")
    victim = stored[3]
    chunk = Path(victim.source) / "features" / "c" / "0" / "0"

    def truncate():
        chunk.write_bytes(chunk.read_bytes()[:100])

    with pytest.raises(CacheError, match=rf"slide '{victim.name}': embedding cache .* truncated chunk features/c/0/0"):
        _broken_during_training(stored, classes, _config(slides), truncate)


def test_a_cache_replaced_by_an_older_float16_one_fails_the_step(labelled_synthetic, tmp_path):
    slides, classes = labelled_synthetic(8, seed=9)
    stored = _stored(slides, tmp_path / "cache")
    older = _stored(slides[:1], tmp_path / "older", dtype="float16")[0]
    victim = stored[0]

    def replace_store():
        shutil.rmtree(victim.source)
        shutil.copytree(older.source, victim.source)

    with pytest.raises(CacheError, match=rf"slide '{victim.name}': .* was replaced while in use \(now float16"):
        _broken_during_training(stored, classes, _config(slides), replace_store)


def test_streamed_validation_bags_are_read_one_slide_at_a_time(labelled_synthetic, tmp_path):
    slides, _ = labelled_synthetic(3, seed=10)
    stored = _stored(slides, tmp_path)
    cfg = _config(slides)
    bags = BagSequence(stored, cfg)
    assert bags._kept == [None, None, None]  # nothing held
    first = list(bags)
    again = [bags[i] for i in range(3)]
    for a, b, s in zip(first, again, slides):
        assert torch.equal(a.features, b.features) and a.name == s.name
        assert torch.equal(a.features, torch.from_numpy(s.embeddings.features.astype(np.float32)))
    shutil.rmtree(stored[1].source)
    with pytest.raises(CacheError, match="is gone"):
        list(bags)


def test_model_file_is_untouched_when_training_fails(labelled_synthetic, tmp_path):
    from napari_regional_mil.cli import main

    slides, classes = labelled_synthetic(8, seed=11)
    cache = tmp_path / "cache"
    _stored(slides, cache)
    (cache / "identity.bin").unlink()
    csv = tmp_path / "labels.csv"
    csv.write_text("slide,label\n" + "".join(f"{s.name},{classes[s.label]}\n" for s in slides))
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"the previous model")
    store = next(cache.glob(f"{slides[2].name}-*.zarr"))
    (store / "features" / "c" / "0" / "0").write_bytes(b"short")
    code = main(["train", "--labels", str(csv), "--cache", str(cache), "--out", str(model), "--epochs", "2",
                 "--stream", "always", "--hidden-dim", "16"])
    assert code == 2
    assert model.read_bytes() == b"the previous model"


def _feature_files(slides, folder: Path, layout: str) -> list:
    """The slides written as other tools' ``.h5`` files, rows shuffled (a file's order is not the grid's)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for s in slides:
        emb = s.embeddings
        order = rng.permutation(emb.n_patches)
        path = folder / f"{s.name}.h5"
        with h5py.File(path, "w") as fh:
            if layout == "clam":
                fh["features"] = emb.features[order]
                fh["coords"] = emb.grid_xy[order].astype(np.int64) * 64
                fh["coords"].attrs["patch_size"] = 64
            else:  # STAMP: float16 'feats', coordinates in micrometres
                fh["feats"] = emb.features[order].astype(np.float16)
                fh["coords"] = (emb.grid_xy[order] * 112.0).astype(np.float32)
                fh.attrs.update(unit="um", tile_size_um=112.0, tile_size_px=224, extractor="x", feat_type="tile")
        paths.append(path)
    return paths


@pytest.mark.parametrize("layout", ["clam", "stamp"])
def test_h5_feature_bags_stream_by_rows_like_they_load(labelled_synthetic, tmp_path, layout):
    """``--features`` cohorts: each step reads the selected rows of the .h5 file, and the run is the in-memory run."""
    from napari_regional_mil.training.feature_files import read_feature_file
    from napari_regional_mil.training.feature_rows import FeatureFileEmbeddings

    slides, classes = labelled_synthetic(10, seed=6)
    paths = _feature_files(slides, tmp_path / "features", layout)
    lazy = [dataclasses.replace(s, embeddings=FeatureFileEmbeddings(p, slide_name=s.name, region_size=5), source=p)
            for s, p in zip(slides, paths)]
    held = [dataclasses.replace(s, embeddings=read_feature_file(p, slide_name=s.name, region_size=5), source=p)
            for s, p in zip(slides, paths)]
    assert lazy[0].embeddings.n_patches == slides[0].embeddings.n_patches and lazy[0].embeddings.has_regions
    picked = np.array([5, 0, 5, held[0].embeddings.n_patches - 1])
    assert np.array_equal(lazy[0].embeddings.features[picked], held[0].embeddings.features[picked])
    cfg = _config(held, selection=SelectionConfig(min_patches=8, max_patches=30, n_neighbours=2))
    streamed, events = _train(lazy, classes, cfg, "always")
    in_memory, _ = _train(held, classes, cfg, "never")
    _assert_same(streamed, in_memory)
    assert next(e for e in events if "memory" in e.metrics).metrics["memory"] == "streamed"
    p_streamed = predict_bags(streamed.model, BagSequence(lazy, streamed.model.config))
    p_held = predict_bags(in_memory.model, BagSequence(held, in_memory.model.config))
    assert np.array_equal(p_streamed, p_held)
    # a file deleted while training fails the step naming the slide and the file
    paths[3].unlink()
    with pytest.raises(CacheError, match=rf"slide '{slides[3].name}': feature file .*{paths[3].name} is gone"):
        _train(lazy, classes, cfg, "always")
