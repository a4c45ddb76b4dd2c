"""Attention-MIL pretraining, the hand-over to the first model, and the ``pretrain`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_regional_mil.cli import main
from napari_regional_mil.encoders import hash_state_dict, load_encoder
from napari_regional_mil.errors import CohortError, EncoderError, TrainingError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.pretrain import (
    AttentionMilPretrainer,
    HandoverConfig,
    PatchCNN,
    fine_tune_handover,
    train_mil_encoder,
)


@pytest.fixture(scope="module")
def mil_encoder(tmp_path_factory, pretrain_cohort):
    from napari_regional_mil.pretrain import MilPretrainConfig

    config = MilPretrainConfig(
        patch_size=32, mpp=0.5, patches_per_slide=24, bag_size=8, epochs=2, widths=(8, 16), embedding_dim=16,
        attention_dim=8,
    )
    out = tmp_path_factory.mktemp("mil") / "mil-encoder.safetensors"
    events = []
    result = run_job(
        train_mil_encoder(pretrain_cohort.out_dir, labels=pretrain_cohort.labels_csv, out=out, config=config),
        events.append,
    )
    return result, events


def _write_csv(path, rows):
    path.write_text("slide,label\n" + "".join(f"{s},{label}\n" for s, label in rows), encoding="utf-8")
    return path


def test_mil_pretraining_saves_its_feature_extractor(mil_encoder):
    result, events = mil_encoder
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and 0.0 <= h["accuracy"] <= 1.0 for h in result.history)
    assert result.n_patches == 4 * 24
    assert sum(1 for e in events if e.stage == "pretrain" and not e.metrics) == 2 * 4 * 2 + 1  # bags + saving
    enc = load_encoder(result.path)
    assert isinstance(enc.module, PatchCNN) and enc.module.pooling == "mean"
    assert enc.spec.extra["method"] == "attention-mil"
    assert enc.spec.extra["classes"] == ["absent", "present"]
    assert enc.spec.weights_hash == result.spec.weights_hash == hash_state_dict(enc.module)
    out = enc.embed(np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    assert out.shape == (4, 16 + 8 + 16) and torch.isfinite(out).all()


def test_attention_mil_pretrainer_pools_a_bag():
    torch.manual_seed(0)
    model = AttentionMilPretrainer(PatchCNN(16, (4, 8), 6, "mean"), n_classes=3, attention_dim=4)
    logits, weights = model(torch.randn(5, 3, 16, 16))
    assert logits.shape == (3,) and weights.shape == (5,)
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    logits.sum().backward()
    assert model.extractor.stages[0][0].weight.grad is not None  # trained end to end


def test_labels_with_one_class_are_refused(pretrain_cohort, tmp_path, tiny_mil_config):
    csv = _write_csv(tmp_path / "one.csv", [("synth_000", "present"), ("synth_002", "present")])
    with pytest.raises(CohortError, match="only one class"):
        run_job(
            train_mil_encoder(
                pretrain_cohort.out_dir, labels=csv, out=tmp_path / "e.safetensors", config=tiny_mil_config
            )
        )
    assert not (tmp_path / "e.safetensors").exists()


def test_slides_covering_one_class_are_refused(pretrain_cohort, tmp_path, tiny_mil_config):
    present = [p for p, lay in zip(pretrain_cohort.slides, pretrain_cohort.layouts) if lay.label == "present"]
    with pytest.raises(CohortError, match="not among the 2 slide files given"):
        run_job(
            train_mil_encoder(
                present, labels=pretrain_cohort.labels_csv, out=tmp_path / "e.safetensors", config=tiny_mil_config
            )
        )
    csv = _write_csv(tmp_path / "two.csv", [(p.stem, "present") for p in present] + [("ghost", "absent")])
    with pytest.raises(CohortError, match="line 4: unknown slide 'ghost'"):
        run_job(train_mil_encoder(present, labels=csv, out=tmp_path / "e.safetensors", config=tiny_mil_config))


def test_slides_without_tissue_leaving_one_class_raise_training_error(
    synthetic_slide, pretrain_cohort, tmp_path, tiny_mil_config
):
    import shutil

    empty = synthetic_slide(np.full((7, 9), -1, np.int16), patch_px=32, mpp=0.5, seed=11)
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(empty, folder / "blank.tiff")
    present = next(p for p, lay in zip(pretrain_cohort.slides, pretrain_cohort.layouts) if lay.label == "present")
    csv = _write_csv(tmp_path / "labels.csv", [(present.stem, "present"), ("blank", "absent")])
    with pytest.raises(TrainingError, match=r"only one class \('present'\) .*1 slide\(s\) without tissue"):
        run_job(
            train_mil_encoder(
                [present, folder / "blank.tiff"], labels=csv, out=tmp_path / "e.safetensors", config=tiny_mil_config
            )
        )


def test_handover_fine_tunes_the_extractor_inside_the_first_model(mil_encoder, pretrain_cohort, tmp_path):
    result, _ = mil_encoder
    config = HandoverConfig(patches_per_slide=16, bag_size=8, epochs=2, region_size=4, hidden_dim=8, attention_dim=8)
    out = tmp_path / "fine-tuned.safetensors"
    handover = run_job(
        fine_tune_handover(
            pretrain_cohort.out_dir, labels=pretrain_cohort.labels_csv, encoder=result.path, out=out, config=config
        )
    )
    assert handover.class_names == ("absent", "present")
    assert len(handover.encoder.history) == 2 and np.isfinite(handover.encoder.history[-1]["loss"])
    tuned = load_encoder(out)
    assert tuned.spec.extra["method"] == "handover"
    assert tuned.spec.extra["initial_hash"] == result.spec.weights_hash != tuned.spec.weights_hash
    assert (tuned.spec.input_size, tuned.spec.mpp, tuned.spec.mean) == (
        result.spec.input_size,
        result.spec.mpp,
        result.spec.mean,
    )
    assert handover.model.config.input_dim == 40 and not handover.model.training


def test_handover_refuses_a_foreign_encoder(pretrain_cohort, tmp_path):
    with pytest.raises(EncoderError, match="trained by the tool"):
        next(fine_tune_handover(pretrain_cohort.out_dir, labels=pretrain_cohort.labels_csv, encoder="builtin-he",
                                out=tmp_path / "x.safetensors"))


def test_cli_pretrain_autoencoder_and_errors(pretrain_cohort, tmp_path, capsys):
    out = tmp_path / "cli-ae.safetensors"
    argv = ["pretrain", "autoencoder", "--slides", str(pretrain_cohort.slides[0]), str(pretrain_cohort.slides[1]),
            "--out", str(out), "--epochs", "1", "--patch-size", "32", "--mpp", "0.5", "--patches", "32",
            "--batch-size", "16", "--embedding-dim", "8"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"saved {out}" in text and "184-d, 32 px at 0.5 um/px" in text  # 8 + stage means 16+32+64+64
    assert load_encoder(out).spec.embedding_dim == 184
    assert (
        main(["pretrain", "mil", "--slides", str(pretrain_cohort.out_dir), "--out", str(tmp_path / "m.safetensors")])
        == 2
    )
    assert "error: pretrain mil needs --labels" in capsys.readouterr().err
    assert (
        main(["pretrain", "autoencoder", "--slides", str(tmp_path / "none"), "--out", str(tmp_path / "m.safetensors")])
        == 2
    )
    assert "slide file not found" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain",
                "autoencoder",
                "--slides",
                str(pretrain_cohort.out_dir),
                "--out",
                str(out),
                "--patch-size",
                "20",
            ]
        )
        == 2
    )
    assert "invalid option: patch_size must be a multiple of 16" in capsys.readouterr().err


def test_cli_pretrain_handover(mil_encoder, pretrain_cohort, tmp_path, capsys):
    result, _ = mil_encoder
    out = tmp_path / "cli-tuned.safetensors"
    base = [
        "pretrain",
        "handover",
        "--slides",
        str(pretrain_cohort.out_dir),
        "--labels",
        str(pretrain_cohort.labels_csv),
        "--out",
        str(out),
    ]
    assert main(base + ["--epochs", "1"]) == 2
    assert "error: pretrain handover needs --encoder" in capsys.readouterr().err
    assert main(base + ["--encoder", str(result.path), "--epochs", "1", "--patches", "16", "--batch-size", "8"]) == 0
    assert f"saved {out}" in capsys.readouterr().out
    tuned = load_encoder(out).spec
    assert tuned.extra["method"] == "handover" and tuned.extra["initial_hash"] == result.spec.weights_hash
