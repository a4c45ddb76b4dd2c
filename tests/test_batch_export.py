"""Headless ``export``: the Predict widget's GeoJSON, heatmap TIFF and CSV for a batch, byte for byte."""

from __future__ import annotations

import shutil

import pytest

from napari_regional_mil._widgets import _predict_job
from napari_regional_mil.cli import main
from napari_regional_mil.jobs import run_job

FAST = ["--epochs", "2", "--min-epochs", "1", "--hidden-dim", "16", "--attention-dim", "8",
        "--min-patches", "8", "--max-patches", "24"]


@pytest.fixture(scope="module")
def predicted(gui_cohort, tmp_path_factory):
    """A model trained on the cohort and ``predict`` run on three of its slides (attention beside the caches)."""
    root = tmp_path_factory.mktemp("batch_export")
    cache = root / "cache"
    shutil.copytree(gui_cohort.cache, cache)
    model = root / "model.safetensors"
    assert main(["train", "--labels", str(gui_cohort.labels_csv), "--cache", str(cache), "--out", str(model),
                 *FAST]) == 0
    names = [p.stem for p in gui_cohort.slides[:3]]
    assert main(["predict", "--model", str(model), "--cache", str(cache), *names]) == 0
    return root, cache, model, names


def test_batch_export_is_byte_identical_to_the_predict_widget(predicted, gui_cohort, tmp_path, capsys):
    _, cache, model, names = predicted
    out = tmp_path / "exports"
    assert main(["export", "--predictions", str(cache), "--out", str(out)]) == 0
    assert f"wrote 9 files to {out}" in capsys.readouterr().out
    expected = sorted(f"{n}{s}" for n in names for s in (".geojson", "_heatmap.tif", "_scores.csv"))
    assert sorted(p.name for p in out.iterdir()) == expected
    checkpoint = _predict_job.load_model(model)
    widget = tmp_path / "widget"
    widget.mkdir()
    for slide in gui_cohort.slides[:3]:
        # what the Predict widget computes and writes for this slide (its Qt-free steps)
        maps = run_job(_predict_job.predict_job(checkpoint, str(slide), cache_dir=cache))
        for kind, suffix in (("geojson", ".geojson"), ("tiff", "_heatmap.tif"), ("csv", "_scores.csv")):
            mine = _predict_job.export(kind, widget / f"{slide.stem}{suffix}", maps, normalisation="rank")
            assert mine.read_bytes() == (out / mine.name).read_bytes(), mine.name


def test_one_format_some_slides_and_bad_inputs(predicted, tmp_path, capsys):
    root, cache, _, names = predicted
    out = tmp_path / "csv_only"
    assert main(["export", "--predictions", str(cache), "--format", "csv", "--slides", names[1], "--out",
                 str(out)]) == 0
    assert [p.name for p in out.iterdir()] == [f"{names[1]}_scores.csv"]
    capsys.readouterr()
    assert main(["export", "--predictions", str(cache), "--slides", "ghost", "--out", str(out)]) == 2
    assert "no prediction of slide(s) 'ghost'" in capsys.readouterr().err
    assert main(["export", "--predictions", str(root / "nothing"), "--out", str(out)]) == 2
    assert "nothing: no such folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--predictions", str(empty), "--out", str(out)]) == 2
    assert "no predictions (*.attention.npz); run napari-regional-mil predict first" in capsys.readouterr().err
