"""The Predict dock widget on a real viewer (under Xvfb)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from napari_regional_mil._widgets._heatmap_layers import camera_of
from napari_regional_mil._widgets._layers import set_slide_mpp
from napari_regional_mil._widgets._state import viewer_state
from napari_regional_mil._widgets.predict_widget import PredictWidget
from napari_regional_mil.heatmap import AttentionMaps, normalise

pytestmark = pytest.mark.gui

MPP = 0.4  # the attention_case's slide mpp



def _edges(layer) -> np.ndarray:
    """World (y, x) min and max *edges* of an image layer (napari extents are pixel centres)."""
    ext = np.asarray(layer.extent.world, dtype=float)[:, -2:]
    half = np.asarray(layer.scale, dtype=float)[-2:] / 2
    return np.stack([ext[0] - half, ext[1] + half])

@pytest.fixture
def notes(monkeypatch):
    """Every napari notification shown, as ``(kind, message)``."""
    from napari.utils import notifications

    shown = []
    for kind in ("show_info", "show_warning", "show_error"):
        monkeypatch.setattr(notifications, kind, lambda msg, kind=kind: shown.append((kind, str(msg))))
    return shown


@pytest.fixture
def hand_case(make_napari_viewer, attention_case, tmp_path):
    """A viewer with a synthetic slide layer, the Predict widget and hand-made maps on it."""
    emb, pred = attention_case(seed=4)
    n_rows, n_cols, k, s = attention_case.grid
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    pixels = rng.integers(120, 255, size=(int(n_rows * s) + 5, int(n_cols * s) + 3, 3), dtype=np.uint8)
    slide = viewer.add_image(pixels, name="case", rgb=True, scale=(MPP, MPP),
                             metadata={"slide_path": str(tmp_path / "case.tif"), "mpp": (MPP, MPP)})
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    maps = AttentionMaps.from_prediction(emb, pred, mpp=(MPP, MPP))
    widget._slide_layer = slide
    widget.show_maps(maps)
    return SimpleNamespace(viewer=viewer, widget=widget, maps=maps, slide=slide, emb=emb, pred=pred, s=s, k=k)


def test_probabilities_and_threshold_decision(hand_case):
    w = hand_case.widget
    table = [(w.prob_table.item(r, 0).text(), float(w.prob_table.item(r, 1).text())) for r in range(2)]
    assert table == [("negative", pytest.approx(0.3)), ("positive", pytest.approx(0.7))]
    assert w.decision_label.text().startswith("positive")
    w.threshold.setValue(0.8)
    assert w.decision_label.text().startswith("negative")
    w.threshold.setValue(0.65)
    assert w.decision_label.text().startswith("positive")


def test_heatmap_layers_align_with_the_slide(hand_case):
    w, s, k = hand_case.widget, hand_case.s, hand_case.k
    patch, region = w.heatmap_layers["patch"], w.heatmap_layers["region"]
    assert patch in hand_case.viewer.layers and region in hand_case.viewer.layers
    # both lie on the patch grid: a region cut by the slide's edge is cut there too
    assert patch.data.shape == (7, 11) and region.data.shape == (7, 11)
    slide = hand_case.slide
    for gx, gy in [(0, 0), (10, 6), (5, 2)]:
        # the centre of patch (gx, gy) in the slide layer's own pixel coordinates
        centre_px = (gy * s + (s - 1) / 2, gx * s + (s - 1) / 2)
        expected = np.asarray(slide.data_to_world(centre_px))
        assert np.asarray(patch.data_to_world((gy, gx))) == pytest.approx(expected)
        assert np.asarray(region.data_to_world((gy, gx))) == pytest.approx(expected)
    rank = normalise(hand_case.pred.region_attention, "rank")
    for r, (rx, ry) in enumerate(hand_case.emb.region_xy):
        cells = region.data[ry * k : (ry + 1) * k, rx * k : (rx + 1) * k]  # the region's square, cut by the grid
        assert np.all(cells == pytest.approx(rank[r]))
    # the overlays end inside the slide (the 7 x 11 grid of 3 x 3 regions leaves partial regions)
    for layer in (patch, region):
        lo, hi = _edges(layer)
        s_lo, s_hi = _edges(slide)
        assert np.all(lo >= s_lo - 1e-6) and np.all(hi <= s_hi + 1e-6), layer.name
    gx, gy = hand_case.emb.grid_xy[0]
    assert patch.data[gy, gx] == pytest.approx(hand_case.maps.patch_image("rank")[gy, gx])
    # the user corrects the slide's mpp (anisotropic): the heatmaps and clicks follow
    set_slide_mpp(hand_case.viewer, slide, (0.5, 0.3))  # (mpp_x, mpp_y)
    assert tuple(slide.scale) == pytest.approx((0.3, 0.5))
    gx, gy = 9, 4
    centre_px = (gy * s + (s - 1) / 2, gx * s + (s - 1) / 2)
    assert np.asarray(patch.data_to_world((gy, gx))) == pytest.approx(np.asarray(slide.data_to_world(centre_px)))
    target = int(np.flatnonzero(hand_case.emb.region_index == 0)[0])
    gx, gy = hand_case.emb.grid_xy[target]
    world = slide.data_to_world((gy * s + s / 2, gx * s + s / 2))
    assert w.select_at(tuple(world)) == 0
    assert f"patch {target}:" in w.selection_label.text()


def _layers_made(qtbot, widget):
    """Wait for the heatmap layers made again in their worker (normalisation, evidence, ...) and
    added one per turn of the event loop."""
    from napari_regional_mil._widgets._worker import running_job

    qtbot.waitUntil(lambda: running_job("predict-layers") is None and not widget.layers_pending, timeout=10000)


def test_normalisation_and_evidence_update_layers_in_place(hand_case, qtbot):
    w = hand_case.widget
    patch = w.heatmap_layers["patch"]
    w.normalisation.setCurrentText("raw")
    _layers_made(qtbot, w)
    assert w.heatmap_layers["patch"] is patch  # updated in place
    gx, gy = hand_case.emb.grid_xy[3]
    assert patch.data[gy, gx] == pytest.approx(hand_case.pred.patch_attention[3])
    assert patch.contrast_limits[1] == pytest.approx(np.nanmax(patch.data))
    w.normalisation.setCurrentText("minmax")
    _layers_made(qtbot, w)
    assert np.nanmax(patch.data) == pytest.approx(1.0) and np.nanmin(patch.data) == 0
    w.evidence_check.setChecked(True)
    _layers_made(qtbot, w)
    names = [layer.name for layer in hand_case.viewer.layers]
    assert "case evidence positive" in names and "case evidence negative" in names
    w.evidence_check.setChecked(False)
    _layers_made(qtbot, w)
    assert "case evidence positive" not in [layer.name for layer in hand_case.viewer.layers]
    w.opacity.setValue(25)
    assert patch.opacity == pytest.approx(0.25)
    # region attention on the tissue patches only (NaN on the region squares' background)
    region = w.heatmap_layers["region"]
    assert np.isfinite(region.data).sum() > hand_case.emb.n_patches
    w.region_on_tissue.setChecked(True)
    _layers_made(qtbot, w)
    assert w.heatmap_layers["region"] is region
    assert np.array_equal(np.isfinite(region.data), np.isfinite(patch.data))


def test_click_lists_top_k_patches_with_thumbnails_and_jumps(hand_case, qtbot):
    w, maps = hand_case.widget, hand_case.maps
    w.top_k.setValue(3)
    region = int(np.bincount(hand_case.emb.region_index).argmax())
    target = np.flatnonzero(hand_case.emb.region_index == region)[0]
    world = maps.patch_centre_world(int(target))
    # a click: press then release without a move, through the viewer's drag callback
    event = SimpleNamespace(position=world, type="mouse_press", button=1)
    gen = w._on_mouse_drag(hand_case.viewer, event)
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    expected = list(maps.top_patches(region, 3))
    listed = [w.patch_list.item(r).data(256) for r in range(w.patch_list.count())]
    assert listed == expected and len(listed) == 3
    assert f"region {region}" in w.selection_label.text()
    assert f"patch {target}" in w.selection_label.text()
    qtbot.waitUntil(lambda: all(not w.patch_list.item(r).icon().isNull() for r in range(3)), timeout=5000)
    # the region and its listed patches are outlined, on the slide's scale
    outline = w.selection_layer
    assert outline in hand_case.viewer.layers and len(outline.data) == 4 * 4  # 4 rectangles of 4 edges

    def corners(i):  # the two ends of the 4 edges of rectangle i, in world um
        starts, steps = outline.data[4 * i : 4 * i + 4, 0], outline.data[4 * i : 4 * i + 4, 1]
        return np.array([outline.data_to_world(v) for v in np.concatenate([starts, starts + steps])])

    s, k = hand_case.s, hand_case.k
    x, y = hand_case.emb.coords_px[expected[0]]
    # in world um: the patch's top-left pixel border is at (corner - 0.5) * mpp
    slide = hand_case.slide
    assert corners(1).min(axis=0) == pytest.approx(np.asarray(slide.data_to_world((y - 0.5, x - 0.5))))
    assert corners(1).max(axis=0) == pytest.approx(np.asarray(slide.data_to_world((y + s - 0.5, x + s - 0.5))))
    rx, ry = hand_case.emb.region_xy[region]
    corners = corners(0)
    assert corners.min(axis=0) == pytest.approx(np.asarray(slide.data_to_world((ry * k * s - 0.5, rx * k * s - 0.5))))
    assert np.asarray(camera_of(hand_case.viewer).center[-2:]) == pytest.approx(maps.region_centre_world(region))
    # a drag (pan) selects nothing
    w.patch_list.clear()
    event = SimpleNamespace(position=world, type="mouse_press", button=1)
    gen = w._on_mouse_drag(hand_case.viewer, event)
    next(gen)
    event.type = "mouse_move"
    with pytest.raises(StopIteration):
        next(gen)
    assert w.patch_list.count() == 0
    # painting on a Labels layer (e.g. the tissue mask) is not a click on the heatmaps
    labels = hand_case.viewer.add_labels(np.zeros((5, 5), dtype=np.uint8))
    labels.mode = "paint"
    event = SimpleNamespace(position=world, type="mouse_press", button=1)
    assert list(w._on_mouse_drag(hand_case.viewer, event)) == []  # returns at once
    assert w.patch_list.count() == 0


def _export(widget, kind, path, qtbot):
    handle = widget.export(kind, path)
    qtbot.waitUntil(lambda: not handle.running and handle.status != "running", timeout=10000)


def test_exports_from_the_widget(hand_case, tmp_path, notes, qtbot):
    w = hand_case.widget
    _export(w, "geojson", tmp_path / "a.geojson", qtbot)
    _export(w, "csv", tmp_path / "a.csv", qtbot)
    _export(w, "tiff", tmp_path / "a.tif", qtbot)
    feats = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert len(feats) == hand_case.emb.n_patches + hand_case.emb.n_regions
    with open(tmp_path / "a.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == hand_case.emb.n_patches
    assert tifffile.imread(tmp_path / "a.tif").shape == (4, 7, 11)
    assert [kind for kind, _ in notes] == ["show_info"] * 3
    _export(w, "csv", tmp_path / "missing" / "a.csv", qtbot)
    assert notes[-1][0] == "show_error" and "does not exist" in notes[-1][1]


def test_no_model_and_no_slide_give_notifications(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    widget.predict()
    assert notes[-1][0] == "show_warning" and "no model loaded" in notes[-1][1]
    widget.model = SimpleNamespace(class_names=("a", "b"))
    widget.predict()
    assert notes[-1][0] == "show_warning" and "no slide open" in notes[-1][1]
    widget.export("csv", "x.csv")
    assert "predict a slide first" in notes[-1][1]


def test_corrupt_checkpoint_gives_an_error_and_keeps_no_model(make_napari_viewer, notes, tmp_path, qtbot):
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    widget.set_model(str(bad))
    qtbot.waitUntil(lambda: any(kind == "show_error" for kind, _ in notes), timeout=10000)
    assert widget.model is None
    assert "model.safetensors" in next(m for k, m in notes if k == "show_error")


# -- end to end: a synthetic slide, the real embedding pipeline, a trained checkpoint ------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic slide (9 x 13 cells of 64 px at 0.5 um/px) and a model trained on its embeddings.

    The model is trained (2 epochs) on this slide's embeddings and a reversed copy, through
    the real pipeline (synth writer, ``embed_slide`` with ``builtin-he``, ``train_model``);
    its cache lives in a folder the widget does not use, so the widget embeds again.
    """
    import dataclasses

    from napari_regional_mil.embedding.pipeline import embed_slide
    from napari_regional_mil.embedding.store import load_slide_embeddings
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.model.config import ModelConfig, SelectionConfig
    from napari_regional_mil.synth.slides import write_synthetic_slide
    from napari_regional_mil.tiling import TilingParams
    from napari_regional_mil.training.datasets import LabelledSlide
    from napari_regional_mil.training.train import TrainConfig, train_model

    root = tmp_path_factory.mktemp("predict_e2e")
    rng = np.random.default_rng(0)
    types = np.full((9, 13), -1, np.int16)
    types[1:8, 1:12] = rng.integers(0, 6, size=(7, 11))
    slide_path = write_synthetic_slide(root / "slide_a.tif", types, patch_px=64, mpp=0.5, seed=1)
    params = TilingParams(patch_size=64, target_mpp=0.5, region_size=4)
    result = run_job(
        embed_slide(slide_path, cache_dir=root / "train_cache", tiling_params=params, encoder="builtin-he")
    )
    emb = load_slide_embeddings(result.cache_path)
    other = dataclasses.replace(emb, slide_name="slide_b", features=emb.features[::-1].copy())
    config = ModelConfig(input_dim=emb.embedding_dim, hidden_dim=16, attention_dim=8,
                         selection=SelectionConfig(min_patches=8, max_patches=16, patches_per_region=2))
    trained = run_job(train_model([LabelledSlide(emb, 0, "p0"), LabelledSlide(other, 1, "p1")],
                                  class_names=("negative", "positive"), model_config=config,
                                  config=TrainConfig(epochs=2, val_fraction=0.0, min_epochs=1)))
    model_path = trained.save(root / "model.safetensors")
    return SimpleNamespace(slide_path=slide_path, model_path=model_path, checkpoint=trained.checkpoint, emb=emb)


@pytest.fixture
def opened(make_napari_viewer, trained, tmp_path):
    """A viewer with the synthetic slide opened as the Slide widget does, and the Predict widget."""
    from napari_regional_mil._widgets._layers import add_slide_layer
    from napari_regional_mil.slide import open_slide

    viewer = make_napari_viewer()
    slide = open_slide(trained.slide_path)
    layer = add_slide_layer(viewer, slide)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.cache_dir.setText(str(tmp_path / "cache"))
    yield SimpleNamespace(viewer=viewer, widget=widget, layer=layer, cache=tmp_path / "cache")
    slide.close()


def _load(widget, path, qtbot):
    widget.model_path.setText(str(path))
    widget.load_button.click()
    qtbot.waitUntil(lambda: widget.model is not None, timeout=20000)


def test_predict_end_to_end(opened, trained, qtbot, notes, tmp_path):
    from napari_regional_mil._widgets._worker import running_job
    from napari_regional_mil.training.predict import predict_slide

    w = opened.widget
    _load(w, trained.model_path, qtbot)
    assert "regional model" in w.model_label.text() and "builtin-he" in w.model_label.text()
    assert not opened.cache.exists()
    w.predict_button.click()  # no cache yet: embeds first, then predicts
    qtbot.waitUntil(lambda: w.maps is not None and running_job("predict") is None and not w.layers_pending,
                    timeout=60000)
    assert len(list(opened.cache.glob("slide_a-*.zarr"))) == 1
    maps = w.maps
    # the widget's numbers are the core's on the same embeddings
    expected = predict_slide(trained.checkpoint, maps.embeddings)
    shown = [float(w.prob_table.item(r, 1).text()) for r in range(2)]
    assert shown == pytest.approx(expected.probabilities, abs=1e-3)
    assert np.allclose(maps.prediction.patch_attention, expected.patch_attention)
    p_pos = float(expected.probabilities[1])
    w.threshold.setValue(max(0.0, p_pos - 0.05))
    assert w.decision_label.text().startswith("positive")
    w.threshold.setValue(min(1.0, p_pos + 0.05))
    assert w.decision_label.text().startswith("negative")
    # heatmaps lie on the slide: heatmap pixel (gx, gy) -> centre of that patch of the slide layer
    s = float(maps.embeddings.meta["patch_size_level0"])
    patch, region = w.heatmap_layers["patch"], w.heatmap_layers["region"]
    assert patch.data.shape == (9, 13) and region.data.shape == (9, 13)  # 9 x 13 patches: partial regions
    for i in (0, maps.embeddings.n_patches - 1):
        x, y = maps.embeddings.coords_px[i]
        gx, gy = maps.embeddings.grid_xy[i]
        centre = np.asarray(opened.layer.data_to_world((y + (s - 1) / 2, x + (s - 1) / 2)))
        assert np.asarray(patch.data_to_world((gy, gx))) == pytest.approx(centre)
        assert np.asarray(region.data_to_world((gy, gx))) == pytest.approx(centre)
    for layer in (patch, region):  # the overlays end inside the slide
        lo, hi = _edges(layer)
        s_lo, s_hi = _edges(opened.layer)
        assert np.all(lo >= s_lo - 1e-6) and np.all(hi <= s_hi + 1e-6), layer.name
    # click a region: its top-k patches with thumbnails
    w.top_k.setValue(4)
    r = int(np.bincount(maps.embeddings.region_index).argmax())
    assert w.select_at(maps.region_centre_world(r)) == r
    assert w.patch_list.count() == 4
    qtbot.waitUntil(lambda: all(not w.patch_list.item(j).icon().isNull() for j in range(4)), timeout=10000)
    # exports parse
    _export(w, "geojson", tmp_path / "out.geojson", qtbot)
    feats = json.loads((tmp_path / "out.geojson").read_text())["features"]
    assert len(feats) == maps.embeddings.n_patches + maps.embeddings.n_regions
    x, y = maps.embeddings.coords_px[0]
    ring = np.array(feats[0]["geometry"]["coordinates"][0])
    assert ring.min(axis=0) == pytest.approx([x, y]) and ring.max(axis=0) == pytest.approx([x + s, y + s])
    _export(w, "tiff", tmp_path / "out.tif", qtbot)
    assert tifffile.imread(tmp_path / "out.tif").shape[-2:] == (9, 13)
    # a second prediction reuses the cache (nothing embedded again)
    before = sorted(opened.cache.iterdir())
    assert w.predict_button.isEnabled()
    with qtbot.waitSignal(w.predicted, timeout=30000):
        w.predict_button.click()
    assert sorted(opened.cache.iterdir()) == before
    assert w.maps is not maps and np.allclose(w.maps.prediction.probabilities, maps.prediction.probabilities)
    assert not [m for k, m in notes if k == "show_error"]


def test_threshold_is_the_users_and_starts_at_the_models(opened, trained, qtbot, notes):
    """A model sets the threshold once, when it becomes the current model (its stored value,
    said next to the spin box); the user's value then survives predicting; "Model's" goes back."""
    import dataclasses

    from napari_regional_mil._widgets._worker import running_job

    w = opened.widget
    state = viewer_state(opened.viewer)
    model = dataclasses.replace(trained.checkpoint, threshold=0.37)
    state.model = model  # as the Train widget hands over a model
    assert w.model is model
    assert w.threshold.value() == pytest.approx(0.37) and state.threshold == 0.37
    assert "model's stored threshold" in w.result.threshold_note.text()
    assert not w.result.model_button.isEnabled()

    w.threshold.setValue(0.9)  # the user's choice
    assert state.threshold == pytest.approx(0.9)
    assert "yours" in w.result.threshold_note.text() and "0.37" in w.result.threshold_note.text()
    w.predict_button.click()
    qtbot.waitUntil(lambda: w.maps is not None and running_job("predict") is None and not w.layers_pending,
                    timeout=60000)
    assert w.threshold.value() == pytest.approx(0.9) and state.threshold == pytest.approx(0.9)
    p_pos = float(w.maps.prediction.probabilities[1])
    expected = "positive" if p_pos >= 0.9 else "negative"
    assert w.decision_label.text().startswith(expected)

    w.result.model_button.click()
    assert w.threshold.value() == pytest.approx(0.37) and state.threshold == 0.37
    assert w.decision_label.text().startswith("positive" if p_pos >= 0.37 else "negative")
    # a second Predict widget of the same viewer shows the same model and threshold
    other = PredictWidget(opened.viewer)
    assert other.model is model and other.threshold.value() == pytest.approx(0.37)
    assert not [m for k, m in notes if k == "show_error"]


def test_model_of_another_encoder_is_refused(opened, trained, qtbot, notes):
    import dataclasses

    from napari_regional_mil._widgets._worker import running_job
    from napari_regional_mil.embedding.pipeline import embed_slide
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.tiling import TilingParams

    run_job(embed_slide(trained.slide_path, cache_dir=opened.cache,
                        tiling_params=TilingParams(patch_size=64, target_mpp=0.5, region_size=4)))
    foreign = dataclasses.replace(trained.checkpoint, encoder={**trained.checkpoint.encoder, "weights_hash": "f" * 64})
    w = opened.widget
    viewer_state(opened.viewer).model = foreign  # as the Train widget hands over a model
    assert w.model is foreign
    w.predict()
    qtbot.waitUntil(lambda: running_job("predict") is None, timeout=30000)
    errors = [m for k, m in notes if k == "show_error"]
    assert len(errors) == 1 and "encoder weights hash" in errors[0] and "slide_a" in errors[0]
    assert w.maps is None and not w.heatmap_layers
    assert w.predict_button.isEnabled()


def test_a_closed_dock_ignores_clicks(hand_case):
    w, viewer = hand_case.widget, hand_case.viewer
    world = hand_case.maps.patch_centre_world(0)
    viewer.window.remove_dock_widget(w)
    centre = tuple(camera_of(viewer).center)
    event = SimpleNamespace(position=world, type="mouse_press", button=1)
    assert list(w._on_mouse_drag(viewer, event)) == []
    assert w.patch_list.count() == 0 and tuple(camera_of(viewer).center) == centre


def test_a_model_without_regions_shows_only_patch_attention(hand_case, attention_case):
    w, viewer = hand_case.widget, hand_case.viewer
    region_layer = w.heatmap_layers["region"]
    emb, pred = attention_case(seed=4, regional=False, evidence=False)
    w.show_maps(AttentionMaps.from_prediction(emb, pred, mpp=(MPP, MPP)))
    assert set(w.heatmap_layers) == {"patch"} and region_layer not in viewer.layers
    r = w.select_at(w.maps.patch_centre_world(0))
    assert r == emb.region_index[0] and "region attention" not in w.selection_label.text()
