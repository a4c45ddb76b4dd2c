"""Several scales in the GUI: context encoders in the Embed widget, context embeddings in the Train widget."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors import safe_open

from napari_regional_mil._widgets import _layers, _worker
from napari_regional_mil._widgets.embed_widget import EmbedWidget
from napari_regional_mil._widgets.train_widget import TrainWidget
from napari_regional_mil.cli import main
from napari_regional_mil.embedding.store import list_caches, load_slide_embeddings
from napari_regional_mil.errors import EncoderError
from napari_regional_mil.tiling import TilingParams

pytestmark = pytest.mark.gui

PARAMS = TilingParams(patch_size=64, target_mpp=0.5, region_size=4, tissue_threshold=0.5)
X2, X4 = "builtin-he_x2", "builtin-he_x4"
#: Small training settings, given to the widget and to the CLI alike.
FAST = {
    "epochs": 2,
    "hidden_dim": 16,
    "attention_dim": 8,
    "min_patches": 8,
    "max_patches": 24,
    "seed": 3,
    "lr": 3e-3,
    "val_fraction": 0.34,
}


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=30)


def _builtin_dim() -> int:
    from napari_regional_mil.encoders import load_encoder

    return load_encoder("builtin-he").spec.embedding_dim


# --- Embed widget ---------------------------------------------------------------------------


@pytest.fixture
def embed_setup(make_napari_viewer, widget_slide, tmp_path):
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    layer = _layers.add_slide_layer(viewer, open_slide(widget_slide))
    layer.metadata["tiling_params"] = asdict(PARAMS)
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.cache_dir.set_text(str(tmp_path / "cache"))
    widget._cache_dir_auto = False
    widget.batch_size.setValue(16)
    return viewer, widget, tmp_path / "cache"


def test_context_encoder_list_add_remove_and_bad_choice(embed_setup):
    _, widget, _ = embed_setup
    ctx = widget.contexts
    assert ctx.requests() == [] and not ctx.remove_button.isEnabled()
    ctx.scale.setCurrentIndex(1)
    ctx.add_current()
    ctx.add_current()  # the same encoder at the same scale: once
    ctx.scale.setCurrentIndex(0)
    ctx.add_current()
    assert ctx.requests() == [("builtin-he", {}, 4.0), ("builtin-he", {}, 2.0)]
    ctx.list.setCurrentRow(0)
    ctx.remove_selected()
    assert ctx.requests() == [("builtin-he", {}, 2.0)]
    ctx.encoder.name.setCurrentText("uni_v1")  # a published encoder needs its weights file
    with pytest.raises(EncoderError, match="weights"):
        ctx.add_current()
    assert ctx.requests() == [("builtin-he", {}, 2.0)]


def test_embed_widget_caches_context_embeddings_per_region(embed_setup, qtbot, notes):
    _viewer, widget, cache_dir = embed_setup
    widget.contexts.scale.setCurrentIndex(0)
    widget.contexts.add_current()
    widget.contexts.scale.setCurrentIndex(1)
    widget.contexts.add_current()
    widget.embed_button.click()
    qtbot.waitUntil(lambda: widget.job is not None and widget.job.status != "running", timeout=120000)
    assert widget.job.status == "done", notes
    emb = load_slide_embeddings(widget.result.cache_path)
    dim = _builtin_dim()
    assert set(emb.context_embeddings) == {X2, X4}
    for key in (X2, X4):
        ctx = emb.context_embeddings[key]
        assert ctx.shape == (emb.n_regions, dim) and ctx.dtype == np.float32 and np.isfinite(ctx).all()
    assert emb.n_regions == len(emb.region_xy) > 1
    assert not np.allclose(emb.context_embeddings[X2], emb.context_embeddings[X4], atol=1e-3)  # two scales
    assert not np.allclose(emb.context_embeddings[X2], emb.regional_embeddings["mean"], atol=1e-3)
    record = json.loads((widget.result.cache_path / "zarr.json").read_text())["attributes"]["context"]
    assert record[X2]["scale"] == 2.0 and record[X4]["input_mpp"] == pytest.approx(4 * PARAMS.target_mpp)
    assert [r.name for r in widget.context_results] == [X2, X4] and all(r.computed for r in widget.context_results)
    assert f"context {X2} ({emb.n_regions} regions x {dim})" in widget.status.text()
    # the same embedding again: the patch cache and both context arrays are reused
    widget.embed_button.click()
    qtbot.waitUntil(lambda: widget.job.status != "running", timeout=120000)
    assert widget.job.status == "done" and not any(r.computed for r in widget.context_results)
    assert "(cached)" in widget.status.text()
    assert [c.path for c in list_caches(cache_dir) if c.complete] == [widget.result.cache_path]


def test_embed_widget_without_context_encoder_caches_none(embed_setup, qtbot, notes):
    _, widget, _ = embed_setup
    widget.embed_button.click()
    qtbot.waitUntil(lambda: widget.job is not None and widget.job.status != "running", timeout=120000)
    assert widget.job.status == "done", notes
    assert load_slide_embeddings(widget.result.cache_path).context_embeddings == {}
    assert widget.context_results == []


# --- Train widget ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context_cohort(gui_cohort, tmp_path_factory):
    """``gui_cohort``'s caches copied (the shared ones stay untouched), every slide with
    context embeddings at 2 x, the first three also at 4 x."""
    from napari_regional_mil.embedding.context import context_requests, embed_contexts
    from napari_regional_mil.jobs import run_job

    cache = tmp_path_factory.mktemp("context_cohort") / "cache"
    shutil.copytree(gui_cohort.cache, cache)
    stores = sorted(c.path for c in list_caches(cache) if c.complete)
    assert len(stores) == len(gui_cohort.slides)
    x2, x4 = context_requests(["builtin-he", "builtin-he"], [2, 4])
    for i, store in enumerate(stores):
        run_job(embed_contexts(store, [x2, x4] if i < 3 else [x2], batch_size=64))
    return SimpleNamespace(labels_csv=gui_cohort.labels_csv, cache=cache, n=len(stores))


@pytest.fixture
def train_widget(make_napari_viewer, context_cohort):
    train = TrainWidget(make_napari_viewer())
    train.source.setCurrentIndex(1)
    train.csv.set_text(str(context_cohort.labels_csv))
    train.cache_dir.set_text(str(context_cohort.cache))
    m, o = train.model_fields, train.optim_fields
    m.hidden_dim.setValue(FAST["hidden_dim"])
    m.attention_dim.setValue(FAST["attention_dim"])
    m.min_patches.setValue(FAST["min_patches"])
    m.max_patches.setValue(FAST["max_patches"])
    o.epochs.setValue(FAST["epochs"])
    o.seed.setValue(FAST["seed"])
    o.learning_rate.setValue(FAST["lr"])
    o.val_fraction.setValue(FAST["val_fraction"])
    train.refresh_contexts()
    return train


def _train(train, qtbot, out):
    train.out_path.setText(str(out))
    assert train.start() is not None
    qtbot.waitUntil(lambda: _worker.running_job("train") is None and train.start_button.isEnabled(), timeout=120000)
    return train.job.status


def _model_meta(path):
    with safe_open(str(path), framework="pt") as fh:
        names = fh.keys()  # safe_open is not iterable
        return {k: fh.get_tensor(k) for k in names}, json.loads(fh.metadata()["napari_regional_mil"])


def test_train_widget_lists_the_cached_contexts(train_widget, context_cohort, tmp_path):
    fields = train_widget.context_fields
    assert fields.available() == [X2, X4]
    assert fields.selected() == (X2,)  # in every cache: checked; in 3 of 6: listed, unchecked
    assert f"(3 of {context_cohort.n} slides)" in fields.list.item(1).text()
    fields.set_checked(X2, False)
    train_widget.refresh_contexts()  # the user's choice survives a refresh
    assert fields.selected() == ()
    train_widget.cache_dir.set_text(str(tmp_path))  # no caches there
    train_widget.refresh_contexts()
    assert fields.available() == [] and fields.selected() == ()
    train_widget.model_fields.model_type.setCurrentText("abmil")
    assert not fields.isEnabled()


def test_train_widget_with_contexts_matches_the_cli(train_widget, context_cohort, tmp_path, qtbot, shown_notes):
    from napari_regional_mil.model.checkpoint import load_checkpoint

    assert _train(train_widget, qtbot, tmp_path / "gui.safetensors") == "done", shown_notes
    dim = _builtin_dim()
    assert load_checkpoint(tmp_path / "gui.safetensors").config.context_dims == {X2: dim}
    cli = tmp_path / "cli.safetensors"
    assert main(["train", "--labels", str(context_cohort.labels_csv), "--cache", str(context_cohort.cache),
                 "--out", str(cli), "--epochs", str(FAST["epochs"]), "--hidden-dim", str(FAST["hidden_dim"]),
                 "--attention-dim", str(FAST["attention_dim"]), "--min-patches", str(FAST["min_patches"]),
                 "--max-patches", str(FAST["max_patches"]), "--seed", str(FAST["seed"]), "--lr", str(FAST["lr"]),
                 "--val-fraction", str(FAST["val_fraction"])]) == 0
    gui_w, gui_meta = _model_meta(tmp_path / "gui.safetensors")
    cli_w, cli_meta = _model_meta(cli)
    assert gui_meta["model"] == cli_meta["model"] and gui_meta["model"]["context_dims"] == {X2: dim}
    assert gui_w.keys() == cli_w.keys()
    for key in gui_w:
        assert gui_w[key].equal(cli_w[key]), key


def test_train_widget_with_contexts_disabled_trains_without(train_widget, tmp_path, qtbot, shown_notes):
    from napari_regional_mil.model.checkpoint import load_checkpoint

    train_widget.context_fields.set_checked(X2, False)
    assert _train(train_widget, qtbot, tmp_path / "plain.safetensors") == "done", shown_notes
    assert load_checkpoint(tmp_path / "plain.safetensors").config.context_dims == {}


def test_a_context_some_slides_lack_is_refused(train_widget, tmp_path, qtbot, shown_notes):
    train_widget.context_fields.set_checked(X4, True)
    assert _train(train_widget, qtbot, tmp_path / "m.safetensors") == "failed"
    errors = [m for k, m in shown_notes if k == "show_error"]
    assert len(errors) == 1 and f"'{X4}' missing for 3 slide(s)" in errors[0]
    assert not (tmp_path / "m.safetensors").exists()
