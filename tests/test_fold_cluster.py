"""Cross-validation folds as dask tasks on a 2-worker LocalCluster: the serial run's results, readable caches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_regional_mil.cli import main
from napari_regional_mil.embedding.store import (
    StoredEmbeddings,
    import_key,
    write_slide_embeddings,
)
from napari_regional_mil.errors import CacheError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.training.crossval import cross_validate
from napari_regional_mil.training.train import TrainConfig

FAST = TrainConfig(epochs=2, min_epochs=1, val_fraction=0.25, threads=1)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (processes: torch's random state is per process)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as local:
        yield local


def _cache(slides, folder):
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder.parent / f"{folder.name}.id"
    marker.write_bytes(b"x")
    out = []
    for s in slides:
        key = import_key(marker, region_size=5, patch_size_level0=None, encoder=s.name)
        path = write_slide_embeddings(folder, s.embeddings, key=key)
        out.append(dataclasses.replace(s, embeddings=StoredEmbeddings(path), source=path))
    return out


def _strip(fold):
    return {k: v for k, v in dataclasses.asdict(fold).items() if k != "train_seconds"}


def test_folds_on_two_workers_give_the_serial_results(labelled_synthetic, tmp_path, cluster):
    slides, classes = labelled_synthetic(12, seed=21)
    stored = _cache(slides, tmp_path / "cache")
    cfg = ModelConfig(input_dim=slides[0].embeddings.embedding_dim, hidden_dim=16, attention_dim=8,
                      selection=SelectionConfig(min_patches=8, max_patches=24, patches_per_region=3))
    serial = run_job(cross_validate(stored, class_names=classes, n_folds=3, model_config=cfg, config=FAST))
    events = []
    distributed = run_job(cross_validate(stored, class_names=classes, n_folds=3, model_config=cfg, config=FAST,
                                         scheduler=cluster.scheduler_address, keep_models=True), events.append)
    assert [_strip(f) for f in distributed.folds] == [_strip(f) for f in serial.folds]
    assert len(distributed.models) == 3
    folds_reported = {e.metrics["fold"] for e in events if "train_loss" in e.metrics}
    assert folds_reported == {1, 2, 3}  # every fold's epochs came back from its worker
    assert sorted(e.metrics["fold"] for e in events if "fold_auc" in e.metrics) == [1, 2, 3]
    assert events[-1].done == events[-1].total


def test_a_worker_that_cannot_read_the_cache_is_named(labelled_synthetic, tmp_path, cluster):
    slides, classes = labelled_synthetic(6, seed=22)
    stored = _cache(slides, tmp_path / "cache")  # opened here ...
    (tmp_path / "cache").rename(tmp_path / "elsewhere")  # ... but not where the workers look
    with pytest.raises(CacheError) as info:
        run_job(cross_validate(stored, class_names=classes, n_folds=2, config=FAST,
                               scheduler=cluster.scheduler_address))
    message = str(info.value)
    assert "\n" not in message and "worker tcp://" in message and "cannot read the embedding cache" in message
    assert str(tmp_path / "cache") in message and "same path" in message


def test_crossval_cli_on_a_scheduler_prints_each_fold(labelled_synthetic, tmp_path, cluster, capsys):
    slides, classes = labelled_synthetic(9, seed=23)
    _cache(slides, tmp_path / "cache")
    csv = tmp_path / "labels.csv"
    csv.write_text("slide,label\n" + "".join(f"{s.name},{classes[s.label]}\n" for s in slides))
    code = main(["crossval", "--labels", str(csv), "--cache", str(tmp_path / "cache"), "--folds", "3",
                 "--epochs", "2", "--hidden-dim", "16", "--threads", "1", "--scheduler", cluster.scheduler_address])
    out = capsys.readouterr().out
    assert code == 0
    for k in (1, 2, 3):
        assert f"fold {k}/3 done: AUC " in out
    for k in (1, 2, 3):  # each worker decides for its own fold, and says so
        assert f"memory: fold {k}/3: holding 6 slides, " in out
    assert np.isfinite(float(out.split("regional: AUC ")[1].split()[0]))
