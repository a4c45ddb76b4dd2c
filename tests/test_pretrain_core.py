"""Training the second model: patch sampling, augmentations, autoencoder, saved encoders, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_regional_mil.encoders import (
    hash_file,
    hash_state_dict,
    list_encoders,
    load_encoder,
    read_encoder_metadata,
)
from napari_regional_mil.errors import EncoderError, TrainingError
from napari_regional_mil.jobs import run_job
from napari_regional_mil.pretrain import (
    PatchCNN,
    ReconstructionPreview,
    augment,
    sample_patches,
    train_autoencoder,
)


@pytest.fixture(scope="module")
def trained_autoencoder(tmp_path_factory, pretrain_cohort):
    """An autoencoder trained for 3 tiny epochs on the cohort's first two slides."""
    from napari_regional_mil.pretrain import AutoencoderConfig

    config = AutoencoderConfig(
        patch_size=32, mpp=0.5, max_patches=64, min_patches=16, epochs=3, batch_size=16, widths=(8, 16),
        embedding_dim=16, learning_rate=3e-3, preview_patches=3,
    )
    out = tmp_path_factory.mktemp("ae") / "tissue-ae.safetensors"
    events = []
    result = run_job(train_autoencoder(pretrain_cohort.slides[:2], out=out, config=config), events.append)
    return result, events, config


def test_augment_is_deterministic_and_only_moves_pixels_without_jitter():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    a = augment(batch, generator=torch.Generator().manual_seed(3))
    b = augment(batch, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    plain = augment(batch, generator=torch.Generator().manual_seed(3), stain_jitter=0.0)
    for i in range(5):  # flips and rotations only permute the pixels of each patch
        got = np.sort((plain[i].permute(1, 2, 0).numpy() * 255).round().reshape(-1, 3), axis=0)
        assert np.array_equal(got, np.sort(batch[i].reshape(-1, 3), axis=0))
    moved = sum(not np.array_equal((plain[i].permute(1, 2, 0).numpy() * 255).round(), batch[i]) for i in range(5))
    assert moved >= 2
    jittered = augment(
        batch, generator=torch.Generator().manual_seed(4), flips=False, rotations=False, stain_jitter=0.2
    )
    delta = (jittered.permute(0, 2, 3, 1).numpy() * 255 - batch).__abs__().mean()
    assert 0.5 < delta < 60


def test_sample_patches_reads_tissue_patches_at_target_mpp_deterministically(pretrain_cohort):
    from napari_regional_mil.slide import open_slide

    slides = pretrain_cohort.slides[:2]
    first = run_job(sample_patches(slides, patch_size=32, mpp=0.5, max_patches=40, seed=7))
    again = run_job(sample_patches(slides, patch_size=32, mpp=0.5, max_patches=40, seed=7))
    other = run_job(sample_patches(slides, patch_size=32, mpp=0.5, max_patches=40, seed=8))
    assert len(first) == 40 and first.patches.shape == (40, 32, 32, 3)
    assert np.bincount(first.slide_index).tolist() == [20, 20]
    assert np.array_equal(first.patches, again.patches) and np.array_equal(first.coords_px, again.coords_px)
    assert not np.array_equal(first.coords_px, other.coords_px)
    with open_slide(slides[1]) as slide:  # level 0 is at 0.5 um/px: patches are level-0 reads
        for i in first.of_slide(1)[:3]:
            x, y = first.coords_px[i]
            assert np.array_equal(first.patches[i], slide.read_region((int(x), int(y)), 0, (32, 32)))
    layout = pretrain_cohort.layouts[0]
    cells = first.coords_px[first.of_slide(0)] // 32
    assert (layout.patch_types[cells[:, 1], cells[:, 0]] >= 0).all()  # (x, y): tissue cells only


def test_too_few_tissue_patches_is_a_clear_error(synthetic_slide, tmp_path, tiny_autoencoder_config):
    empty = synthetic_slide(np.full((7, 9), -1, np.int16), patch_px=32, mpp=0.5, seed=11)
    out = tmp_path / "enc.safetensors"
    with pytest.raises(TrainingError, match=r"only 0 tissue patches .* no tissue patch in"):
        run_job(train_autoencoder([empty], out=out, config=tiny_autoencoder_config))
    assert list(tmp_path.iterdir()) == []


def test_output_path_is_checked_before_training(pretrain_cohort, tmp_path, tiny_autoencoder_config):
    job = train_autoencoder(pretrain_cohort.slides[:1], out=tmp_path / "enc.pt", config=tiny_autoencoder_config)
    with pytest.raises(EncoderError, match=r"\.safetensors"):
        next(job)
    with pytest.raises(EncoderError, match="does not exist"):
        next(train_autoencoder(pretrain_cohort.slides[:1], out=tmp_path / "no" / "e.safetensors"))


def test_autoencoder_loss_goes_down_and_yields_previews(trained_autoencoder):
    result, events, config = trained_autoencoder
    losses = [h["loss"] for h in result.history]
    assert len(losses) == config.epochs and losses[-1] < losses[0]
    epochs = [e for e in events if e.metrics.get("epoch")]
    assert [e.metrics["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e.rate and e.rate > 0 for e in epochs)
    preview = epochs[-1].metrics["preview"]
    assert isinstance(preview, ReconstructionPreview) and preview.epoch == 3
    assert preview.originals.shape == preview.reconstructions.shape == (3, 32, 32, 3)
    assert preview.reconstructions.dtype == np.uint8
    assert preview.montage().shape == (2 * 32 + 2, 3 * 32 + 2 * 2, 3)
    assert result.extra["preview"] is preview
    assert {e.stage for e in events} >= {"sample", "pretrain"}


def test_saved_autoencoder_loads_by_path_with_its_spec_and_hash(
    trained_autoencoder, embed_slide_path, small_tiling, tmp_path
):
    from napari_regional_mil.embedding import embed_slide, load_slide_embeddings

    result, _, _config = trained_autoencoder
    enc = load_encoder(result.path)
    spec = enc.spec
    assert (spec.input_size, spec.mpp, spec.embedding_dim) == (32, 0.5, 16 + 8 + 16)  # bottleneck + stage means
    assert spec.weights_hash == result.spec.weights_hash == hash_state_dict(enc.module)
    assert isinstance(enc.module, PatchCNN) and enc.module.pooling == "flatten"
    assert spec.extra["method"] == "autoencoder" and spec.name == "tissue-ae"
    side = read_encoder_metadata(result.path)  # weights and description in one file
    assert side["arch"] == "pretrained-patch-cnn" and side["spec"]["mean"] == list(spec.mean)
    assert not result.path.with_name(result.path.name + ".json").exists()
    assert all(0.0 < s < 1.0 for s in spec.std)
    patches = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = enc.embed(patches)
    assert out.shape == (3, 40) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])
    with torch.no_grad():
        assert torch.allclose(out[:, :16], enc.module.bottleneck(enc.preprocess(patches)), atol=1e-5)
    assert result.registered_as == "tissue-ae" and "tissue-ae" in list_encoders()
    assert load_encoder("tissue-ae").spec.weights_hash == spec.weights_hash
    emb = run_job(
        embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling, encoder=str(result.path))
    )
    loaded = load_slide_embeddings(emb.cache_path)
    assert loaded.embedding_dim == 40 and loaded.meta["encoder_hash"] == spec.weights_hash


def test_saved_encoder_with_another_input_size_is_a_clear_error(trained_autoencoder):
    result, _, _ = trained_autoencoder
    enc = load_encoder(result.path, input_size=48)
    with pytest.raises(EncoderError, match=r"trained on 32 x 32 px patches and got 48 x 48 px"):
        enc.embed(np.zeros((2, 32, 32, 3), np.uint8))


def test_cancelling_training_keeps_the_previous_encoder(trained_autoencoder, pretrain_cohort, tiny_autoencoder_config):
    result, _, _ = trained_autoencoder
    folder = result.path.parent
    before = {p.name: hash_file(p) for p in folder.iterdir()}
    job = train_autoencoder(pretrain_cohort.slides[:1], out=result.path, config=tiny_autoencoder_config, register=False)
    for event in job:
        if event.stage == "pretrain" and event.done >= 2:
            break
    job.close()
    assert {p.name: hash_file(p) for p in folder.iterdir()} == before
    assert load_encoder(result.path).spec.weights_hash == result.spec.weights_hash
