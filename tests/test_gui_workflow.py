"""The whole GUI workflow on a real viewer: cohort -> embed -> train -> predict -> heatmaps -> export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_regional_mil._widgets._cohort_model import EMBEDDED, PREDICTION
from napari_regional_mil._widgets._worker import running_job
from napari_regional_mil._widgets.cohort_widget import CohortWidget
from napari_regional_mil._widgets.predict_widget import PredictWidget
from napari_regional_mil._widgets.train_widget import TrainWidget

pytestmark = pytest.mark.gui


def _idle(kind):
    return lambda: running_job(kind) is None


def test_label_embed_train_predict_export(make_napari_viewer, gui_cohort, tmp_path, qtbot, shown_notes):
    viewer = make_napari_viewer()
    cohort, train, predict = CohortWidget(viewer), TrainWidget(viewer), PredictWidget(viewer)
    for widget, name in ((cohort, "Cohort"), (train, "Train"), (predict, "Predict")):
        viewer.window.add_dock_widget(widget, name=name, area="right")

    # 1. the cohort: add the slide folder, define the classes, label every slide
    cohort.embed_box.tiling.set_params(gui_cohort.tiling)
    assert cohort.add_folder(gui_cohort.dir) == 6
    cohort.embed_box.set_cache_dir(tmp_path / "cache")
    for name in gui_cohort.class_names:
        assert cohort.classes.add_class(name)
    truth = {p.stem: json.loads(p.with_suffix(".truth.json").read_text())["label"] for p in gui_cohort.slides}
    for i, row in enumerate(cohort.table.rows):
        cohort.view.selectRow(i)
        cohort.label_selected(truth[row.name])
    assert [r.label for r in cohort.table.rows] == [truth[p.stem] for p in gui_cohort.slides]
    csv_path = cohort.export_csv(tmp_path / "cohort.csv")
    assert csv_path is not None

    # 2. embed the missing slides in the background
    cohort.embed_box.embed_button.click()
    qtbot.waitUntil(_idle("embed"), timeout=300000)
    assert [cohort.model.data(cohort.model.index(r, EMBEDDED)) for r in range(6)] == ["yes"] * 6

    # 3. train a few epochs from the Train widget (the cohort and cache come from the Cohort widget)
    train.model_fields.hidden_dim.setValue(16)
    train.model_fields.attention_dim.setValue(8)
    train.model_fields.min_patches.setValue(8)
    train.model_fields.max_patches.setValue(24)
    train.optim_fields.epochs.setValue(3)
    train.out_path.setText(str(tmp_path / "model.safetensors"))
    train.start_button.click()
    qtbot.waitUntil(lambda: _idle("train")() and train.start_button.isEnabled(), timeout=300000)
    assert (tmp_path / "model.safetensors").is_file()
    assert predict.model is not None  # handed over

    # 4. double-click a slide: it opens with its grids; predict it with its cache
    row = 1
    assert cohort.open_row(row) is not None
    qtbot.waitUntil(lambda: _idle("cohort-open")() and _idle("tiling")(), timeout=60000)
    slide = cohort.state.slide_layer
    predict.predict_button.click()
    qtbot.waitUntil(lambda: predict.maps is not None and _idle("predict")() and not predict.layers_pending,
                    timeout=120000)
    maps = predict.maps
    name = cohort.table.rows[row].name
    assert maps.prediction.slide_name == name
    assert not (gui_cohort.dir / "embeddings").exists()  # the cohort's cache folder was used

    # 5. the heatmaps lie on the slide's patch and region grids
    patch, region = predict.heatmap_layers["patch"], predict.heatmap_layers["region"]
    emb = maps.embeddings
    s = float(emb.meta["patch_size_level0"])
    i = emb.n_patches // 2
    x, y = emb.coords_px[i]
    gx, gy = emb.grid_xy[i]
    centre = np.asarray(slide.data_to_world((y + (s - 1) / 2, x + (s - 1) / 2)))
    assert np.asarray(patch.data_to_world((gy, gx))) == pytest.approx(centre)
    assert np.asarray(region.data_to_world((gy, gx))) == pytest.approx(centre)  # drawn on the patch grid
    k = gui_cohort.tiling.region_size
    assert region.data[gy, gx] == pytest.approx(maps.region_image("rank")[gy // k, gx // k])

    # 6. the cohort table shows the prediction
    shown = cohort.model.data(cohort.model.index(row, PREDICTION))
    assert shown.startswith(maps.prediction.predicted)

    # 7. export: QuPath GeoJSON and per-patch CSV
    for kind, out in (("geojson", "out.geojson"), ("csv", "out.csv")):
        predict.export(kind, tmp_path / out)
        qtbot.waitUntil(_idle("predict-export"), timeout=60000)
    features = json.loads((tmp_path / "out.geojson").read_text())["features"]
    assert len(features) == emb.n_patches + emb.n_regions
    with open(tmp_path / "out.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == emb.n_patches
    assert not [m for kind, m in shown_notes if kind == "show_error"]
