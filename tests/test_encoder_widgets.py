"""The encoder part of the Embed widget and the Predict widget's model-encoder fields (GUI).

A published encoder needs its weights file or the "download from the Hugging Face hub" box
(never implicit); the box shows the repository, licence and gating, and the download's
progress appears while it runs (a local stand-in of the hub, :mod:`hubfake`).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from hubfake import FakeHub, point_hub_at, publish
from napari_regional_mil._widgets import _layers, _worker
from napari_regional_mil._widgets._encoder_fields import EncoderFields
from napari_regional_mil._widgets._encoder_weights import ModelEncoderFields
from napari_regional_mil.errors import EncoderError
from napari_regional_mil.tiling import TilingParams

pytestmark = pytest.mark.gui

PARAMS = TilingParams(patch_size=32, target_mpp=0.5, region_size=4, tissue_threshold=0.5)


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    _worker.cancel_all(wait=True, timeout=30)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    point_hub_at(monkeypatch, cache, offline=True)
    return cache


def test_published_encoder_needs_a_file_or_the_download(qtbot, offline_hub, tmp_path):
    fields = EncoderFields()
    qtbot.addWidget(fields)
    assert fields.choice() == ("builtin-he", {}) and not fields.source.isVisibleTo(fields)
    fields.name.setCurrentText("uni_v1")
    assert fields.source.isVisibleTo(fields)
    note = fields.source.note.text()
    assert "pytorch_model.bin" in note and "MahmoodLab/UNI" in note and "CC-BY-NC-ND-4.0" in note
    assert "Gated" in note and "In the hub cache: no" in note
    with pytest.raises(EncoderError, match=r"uni_v1: choose its weights file \(pytorch_model\.bin of MahmoodLab/UNI\) "
                       r"or tick \"Download from the Hugging Face hub\""):
        fields.choice()
    fields.name_weights.set_text(str(tmp_path / "pytorch_model.bin"))
    assert fields.choice() == ("uni_v1", {"weights": str(tmp_path / "pytorch_model.bin")})
    fields.from_hub.setChecked(True)
    assert fields.choice() == ("uni_v1", {"from_hub": True}) and not fields.name_weights.isEnabled()
    # present locally: said so
    publish(offline_hub, "owkin/phikon", {"pytorch_model.bin": lambda p: p.write_bytes(b"x")})
    fields.name.setCurrentText("phikon")
    assert "In the hub cache: yes" in fields.source.note.text() and "Gated" not in fields.source.note.text()
    # an encoder whose code is not on the registry is listed, not selectable
    index = fields.name.findText("conch_v1")
    assert index >= 0 and not fields.name.model().item(index).isEnabled()


def test_torchscript_page_warns_that_the_file_runs_code(qtbot):
    fields = EncoderFields()
    qtbot.addWidget(fields)
    fields.kind.setCurrentIndex(1)
    assert "only files you trust" in fields.script.toolTip()
    assert ".pth" not in fields.script._filter  # only TorchScript suffixes are offered


def test_model_encoder_fields_ask_only_for_what_the_model_needs(qtbot, tmp_path):
    fields = ModelEncoderFields()
    qtbot.addWidget(fields)
    fields.set_record({"name": "builtin-he", "weights_hash": "0" * 64})
    assert not fields.isVisibleTo(fields.parentWidget() or fields) and fields.options() == {}
    fields.set_record({"name": "virchow2", "weights_hash": "1" * 64})
    assert fields.source.isVisibleTo(fields) and not fields.file.isVisibleTo(fields)
    assert fields.options() == {}
    fields.source.from_hub.setChecked(True)
    assert fields.options() == {"from_hub": True}
    fields.set_record({"name": str(tmp_path / "evil.pt"), "weights_hash": "2" * 64})
    assert fields.file.isVisibleTo(fields) and not fields.source.isVisibleTo(fields)
    assert "TorchScript runs code" in fields.note.text() and "never loaded from a stored path" in fields.note.text()
    assert fields.options() == {}
    fields.file.set_text(str(tmp_path / "mine.pt"))
    assert fields.options() == {"encoder_weights": str(tmp_path / "mine.pt")}


def test_embed_widget_downloads_with_progress_then_embeds(make_napari_viewer, synthetic_slide, tmp_path, qtbot,
                                                          monkeypatch):
    """resnet50 ticked "download from the hub": the download's progress shows, then the slide is embedded."""
    import timm
    from safetensors.torch import save_file

    from napari_regional_mil._widgets.embed_widget import EmbedWidget
    from napari_regional_mil.embedding.store import list_caches
    from napari_regional_mil.slide import open_slide

    torch.manual_seed(7)
    save_file(timm.create_model("resnet50", pretrained=False).state_dict(), str(tmp_path / "w.safetensors"))
    hub = FakeHub({"timm/resnet50.tv_in1k": {"model.safetensors": (tmp_path / "w.safetensors").read_bytes()}})
    point_hub_at(monkeypatch, tmp_path / "hub", offline=False, endpoint=hub.url)
    try:
        slide_path = synthetic_slide(np.zeros((4, 5), np.int16), patch_px=32, mpp=0.5, seed=2)
        viewer = make_napari_viewer()
        layer = _layers.add_slide_layer(viewer, open_slide(slide_path))
        layer.metadata["tiling_params"] = asdict(PARAMS)
        widget = EmbedWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.cache_dir.set_text(str(tmp_path / "cache"))
        widget._cache_dir_auto = False
        widget.batch_size.setValue(8)
        widget.encoder.name.setCurrentText("resnet50")
        widget.encoder.from_hub.setChecked(True)
        shown = []
        original = widget._on_progress
        monkeypatch.setattr(widget, "_on_progress", lambda e: (original(e), shown.append(widget.status.text())))
        widget.embed()
        qtbot.waitUntil(lambda: widget.job is not None and widget.job.status != "running", timeout=180000)
        assert widget.job.status == "done", widget.status.text()
    finally:
        hub.close()
    assert any("downloading model.safetensors of resnet50" in text and "MB" in text for text in shown)
    [cache] = [c for c in list_caches(tmp_path / "cache") if c.complete]
    assert cache.encoder == "resnet50" and cache.embedding_dim == 1024
