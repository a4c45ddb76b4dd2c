"""A checkpoint's stored encoder never starts a download or loads code: crafted checkpoints.

Predicting a slide that has no cache yet embeds it with the model's encoder
(``embedding.workflow.embeddings_for``, used by the Predict widget's job); ``predict`` on the
command line only reads caches. Either way the encoder named in the checkpoint is built only
when it needs nothing from outside (the built-in encoders) or from what the user chose (a
file they picked, their "download from the hub"), and it must carry the recorded weights hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_regional_mil.embedding.workflow import embeddings_for
from napari_regional_mil.encoders import hash_file, load_encoder
from napari_regional_mil.errors import EncoderError
from napari_regional_mil.jobs import run_job

TILING = {"patch_size": 32, "target_mpp": 0.5, "region_size": 4}


def _checkpoint(tmp_path: Path, encoder: dict, *, dim: int = 185, name: str = "model.safetensors"):
    from napari_regional_mil.model.checkpoint import (
        Checkpoint,
        load_checkpoint,
        save_checkpoint,
    )
    from napari_regional_mil.model.config import ModelConfig
    from napari_regional_mil.model.first_model import FirstModel

    torch.manual_seed(0)
    model = FirstModel(ModelConfig(input_dim=dim, n_classes=2, hidden_dim=16, attention_dim=8)).eval()
    path = save_checkpoint(
        Checkpoint(model, ("neg", "pos"), encoder={**encoder, "dim": dim}, tiling=TILING), tmp_path / name
    )
    return load_checkpoint(path)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if anything downloads, loads TorchScript or builds a hub model."""
    import huggingface_hub
    import timm

    calls: list[str] = []

    def refuse(what):
        def called(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} was called")

        return called

    monkeypatch.setattr(torch.jit, "load", refuse("torch.jit.load"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(timm, "create_model", refuse("timm.create_model"))
    yield calls
    assert calls == []


def _stores(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.zarr*")) if folder.exists() else []


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"name": "hf-hub:someone/any-model"}, r"encoder hf-hub:someone/any-model.*allow the download"),
        ({"name": "timm:vit_large_patch16_224"}, r"give the weights file of this timm architecture"),
        (
            {"name": "uni_v1", "weights_hash": "ab" * 32},
            (
                r"encoder uni_v1 \(weights sha256 abababababab\.\.\.\): give its weights file \(pytorch_model\.bin "
                r"of MahmoodLab/UNI; licence CC-BY-NC-ND-4\.0, gated.*\) or allow the download from the hub"
            ),
        ),
        ({"name": "conch_v1"}, r"needs its authors' CONCH package.*TorchScript export"),
        ({"name": "something-unknown"}, r"not known here; pick the encoder file"),
    ],
)
def test_a_stored_name_alone_never_downloads_or_loads_code(
    embed_slide_path, tmp_path, nothing_runs, record, expected
):
    checkpoint = _checkpoint(tmp_path, record)
    with pytest.raises(EncoderError, match=rf"model\.safetensors was made with (encoder )?.*{expected}"):
        run_job(embeddings_for(checkpoint, embed_slide_path, cache_dir=tmp_path / "cache"))
    assert _stores(tmp_path / "cache") == []


def test_a_stored_torchscript_path_is_never_loaded(embed_slide_path, tmp_path, nothing_runs):
    """Even an existing TorchScript file named by the checkpoint: the user must pick it (it runs code)."""
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"stands for a TorchScript archive")
    checkpoint = _checkpoint(tmp_path, {"name": str(evil), "weights_hash": hash_file(evil)})
    with pytest.raises(
        EncoderError,
        match=r"evil\.pt.*pick that encoder file yourself \(TorchScript runs code: only "
        r"a file you trust\); it is never loaded from a stored path",
    ):
        run_job(embeddings_for(checkpoint, embed_slide_path, cache_dir=tmp_path / "cache"))
    assert _stores(tmp_path / "cache") == []


def test_the_built_in_encoder_needs_no_choice_and_must_be_the_same_version(embed_slide_path, tmp_path):
    current = load_encoder("builtin-he").spec.weights_hash
    good = _checkpoint(tmp_path, {"name": "builtin-he", "weights_hash": current})
    emb = run_job(embeddings_for(good, embed_slide_path, cache_dir=tmp_path / "cache"))
    assert emb.embedding_dim == 185 and len(_stores(tmp_path / "cache")) == 1
    old = _checkpoint(tmp_path, {"name": "builtin-he", "weights_hash": "0" * 64}, name="old.safetensors")
    with pytest.raises(EncoderError, match=r"old\.safetensors was made with another version of builtin-he"):
        run_job(embeddings_for(old, embed_slide_path, cache_dir=tmp_path / "other"))
    assert _stores(tmp_path / "other") == []


def test_a_published_encoder_from_the_file_the_user_picked(embed_slide_path, tmp_path):
    """resnet50 (a known encoder): the user's weights file, checked against the recorded hash."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    weights = tmp_path / "model.safetensors"
    save_file(timm.create_model("resnet50", pretrained=False).state_dict(), str(weights))
    checkpoint = _checkpoint(
        tmp_path,
        {"name": "resnet50", "weights_hash": hash_file(weights)},
        dim=1024,
        name="resnet_model.safetensors",
    )
    with pytest.raises(
        EncoderError, match=r"give its weights file \(model\.safetensors of timm/resnet50\.tv_in1k"
    ):
        run_job(embeddings_for(checkpoint, embed_slide_path, cache_dir=tmp_path / "cache"))
    other = tmp_path / "other.safetensors"
    torch.manual_seed(4)
    save_file(timm.create_model("resnet50", pretrained=False).state_dict(), str(other))
    with pytest.raises(
        EncoderError,
        match=r"made with resnet50 \(encoder weights hash .*other\.safetensors has .*give the "
        r"weights it was trained with",
    ):
        run_job(
            embeddings_for(checkpoint, embed_slide_path, cache_dir=tmp_path / "cache", encoder_weights=other)
        )
    assert _stores(tmp_path / "cache") == []
    emb = run_job(
        embeddings_for(
            checkpoint,
            embed_slide_path,
            cache_dir=tmp_path / "cache",
            encoder_weights=weights,
            tiling_params=None,
        )
    )
    assert emb.embedding_dim == 1024 and emb.meta["encoder_hash"] == hash_file(weights)
    np.testing.assert_array_equal(np.isfinite(emb.features), True)


def test_a_stored_encoder_file_is_loaded_only_from_the_file_the_user_picked(embed_slide_path, tmp_path):
    """A pretrained .safetensors encoder: the stored path is not opened, the picked file is (and checked)."""
    from napari_regional_mil.encoders import EncoderSpec, PatchCNN, save_encoder

    torch.manual_seed(5)
    module = PatchCNN(input_size=32, widths=(4, 8), embedding_dim=6, pooling="mean")
    picked = save_encoder(
        module,
        EncoderSpec(name="mine", embedding_dim=6, input_size=32, mpp=0.5),
        tmp_path / "mine.safetensors",
        arch="pretrained-patch-cnn",
        arch_kwargs=module.arch_kwargs(),
    )
    digest = load_encoder(picked).spec.weights_hash
    checkpoint = _checkpoint(
        tmp_path, {"name": str(tmp_path / "elsewhere" / "mine.safetensors"), "weights_hash": digest}, dim=6
    )
    with pytest.raises(
        EncoderError, match=r"pick that encoder file yourself; it is never loaded from a stored path"
    ):
        run_job(embeddings_for(checkpoint, embed_slide_path, cache_dir=tmp_path / "cache"))
    emb = run_job(
        embeddings_for(checkpoint, embed_slide_path, cache_dir=tmp_path / "cache", encoder_weights=picked)
    )
    assert emb.embedding_dim == 6 and emb.meta["encoder_hash"] == digest


def test_predict_on_the_command_line_says_how_to_embed_for_the_model(embed_slide_path, tmp_path, capsys):
    from napari_regional_mil.cli import main

    checkpoint = _checkpoint(tmp_path, {"name": "virchow2", "weights_hash": "cd" * 32}, dim=2560)
    (tmp_path / "cache").mkdir()
    code = main(
        [
            "predict",
            "--model",
            str(checkpoint.path),
            "--cache",
            str(tmp_path / "cache"),
            embed_slide_path.stem,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "encoder 'virchow2'; embed it first: embed SLIDE --out" in err[0]
    assert (
        "--encoder virchow2 --weights FILE (pytorch_model.bin of paige-ai/Virchow2; CC-BY-NC-ND-4.0, gated) "
        "or --from-hub" in err[0]
    )


def test_the_predict_widgets_job_goes_through_the_same_policy(embed_slide_path, tmp_path, nothing_runs):
    from napari_regional_mil._widgets._predict_job import predict_job

    checkpoint = _checkpoint(tmp_path, {"name": "hf-hub:someone/any-model"})
    with pytest.raises(EncoderError, match="allow the download from the hub"):
        run_job(predict_job(checkpoint, str(embed_slide_path), cache_dir=tmp_path / "cache"))
    assert _stores(tmp_path / "cache") == []
