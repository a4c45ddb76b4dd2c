"""The demo: the core job in fast mode, its napari view, and the command's display handling."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from napari_regional_mil.cli import cmd_demo, main
from napari_regional_mil.demo import FAST, DemoSettings, run_demo
from napari_regional_mil.jobs import run_job
from napari_regional_mil.tiling import TilingParams


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    """The demo job run once with the tiny settings."""
    events = []
    result = run_job(run_demo(tmp_path_factory.mktemp("demo"), settings=FAST), events.append)
    return SimpleNamespace(result=result, events=events)


def test_fast_demo_writes_cohort_model_and_predictions(demo_result):
    r = demo_result.result
    stages = [e.stage for e in demo_result.events]
    assert {"synth", "embed", "train", "predict"} <= set(stages)
    assert stages.index("synth") < stages.index("embed") < stages.index("train") < stages.index("predict")
    assert r.model_path.is_file() and r.slide_path.is_file()
    with open(r.cohort_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == FAST.n_slides
    held = [row for row in rows if row["split"] == "test"]
    assert sorted(row["label"] for row in held) == ["excluded", "inflamed"]
    with open(r.predictions_csv, newline="") as fh:
        preds = list(csv.DictReader(fh))
    assert [p["slide"] for p in preds] == [row["slide"] for row in held if row["label"] == "inflamed"] + [
        row["slide"] for row in held if row["label"] == "excluded"]
    for p in preds:
        assert p["predicted"] in ("excluded", "inflamed")
        assert float(p["prob_excluded"]) + float(p["prob_inflamed"]) == pytest.approx(1.0, abs=1e-5)
    truth = json.loads(r.truth_path.read_text())
    assert truth["label"] == "inflamed" and truth["slide"] == r.slide_name
    assert len(r.history) == FAST.epochs
    assert sorted(r.cache_dir.glob("*.attention.npz"))  # heatmaps for the CLI/QuPath too


@pytest.mark.gui
def test_demo_view_shows_probabilities_and_both_heatmaps(make_napari_viewer, demo_result, tmp_path):
    demo_result = demo_result.result
    from napari_regional_mil._widgets._demo_view import save_screenshot, show_demo

    viewer = make_napari_viewer(show=True)
    tiling = TilingParams(patch_size=FAST.patch_px, target_mpp=0.5, region_size=FAST.region_size)
    shown = show_demo(demo_result, tiling=tiling, viewer=viewer)
    predict, cohort, train = shown["predict"], shown["cohort"], shown["train"]
    assert predict.maps is not None and predict.maps.prediction.slide_name == demo_result.slide_name
    expected = demo_result.predictions[demo_result.slide_name].probabilities
    table = [float(predict.prob_table.item(r, 1).text()) for r in range(2)]
    assert table == pytest.approx(expected, abs=1e-3)
    assert set(predict.heatmap_layers) >= {"patch", "region"}
    assert all(layer in viewer.layers and layer.visible for layer in predict.heatmap_layers.values())
    assert len(cohort.table) == FAST.n_slides and cohort.table.rows[0].embedded == "yes"
    assert len(train.plot.series("train_loss")) == FAST.epochs
    png = save_screenshot(viewer, tmp_path / "demo.png", size=(1200, 800))
    import imageio.v3 as iio

    pixels = iio.imread(png)
    assert pixels.shape[0] >= 600 and pixels[..., :3].std() > 20  # a real render, not a black canvas


def test_command_without_display_or_xvfb_still_writes_predictions(monkeypatch, demo_result, capsys, tmp_path):
    demo_result = demo_result.result
    calls = []

    def fake_run_demo(out_dir, *, settings):
        calls.append((out_dir, settings))
        return demo_result
        yield  # a generator, like the real job

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv(cmd_demo.UNDER_XVFB, raising=False)
    monkeypatch.setattr(cmd_demo.sys, "platform", "linux")
    monkeypatch.setattr(cmd_demo.shutil, "which", lambda name: None)
    monkeypatch.setattr("napari_regional_mil.demo.run_demo", fake_run_demo)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "apt-get install xvfb" in captured.err
    assert f"predictions: {demo_result.predictions_csv}" in captured.out
    assert "held-out" in captured.out and "opening napari" not in captured.out
    assert calls[0][0] == tmp_path and calls[0][1].epochs == FAST.epochs


def test_command_reruns_itself_under_xvfb(monkeypatch, tmp_path):
    seen = {}

    def fake_call(argv, env):
        seen.update(argv=argv, env=env)
        return 0

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv(cmd_demo.UNDER_XVFB, raising=False)
    monkeypatch.setattr(cmd_demo.sys, "platform", "linux")
    monkeypatch.setattr(cmd_demo.shutil, "which", lambda name: "/usr/bin/xvfb-run" if name == "xvfb-run" else None)
    monkeypatch.setattr(cmd_demo.subprocess, "call", fake_call)
    assert main(["demo", "--slides", "8", "--out", str(tmp_path), "--screenshot", str(tmp_path / "s.png")]) == 0
    argv = seen["argv"]
    assert argv[:4] == ["/usr/bin/xvfb-run", "-a", "-s", cmd_demo.XVFB_SCREEN]
    assert argv[argv.index("demo") + 1:] == ["--out", str(tmp_path), "--slides", "8", "--seed", "0",
                                             "--screenshot", str(tmp_path / "s.png")]
    assert seen["env"][cmd_demo.UNDER_XVFB] == "1"


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_xvfb_is_never_used_on_macos_or_windows(monkeypatch, platform):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(cmd_demo.sys, "platform", platform)
    assert not cmd_demo._headless_linux()
    monkeypatch.setattr(cmd_demo.sys, "platform", "linux")
    assert cmd_demo._headless_linux()
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert not cmd_demo._headless_linux()


def test_too_few_slides_is_a_one_line_error(capsys, tmp_path):
    assert main(["demo", "--no-gui", "--slides", "3", "--out", str(tmp_path)]) == 2
    assert "at least 6 slides" in capsys.readouterr().err
    with pytest.raises(ValueError):
        DemoSettings(n_slides=2)
    assert np.isfinite(FAST.epochs)
