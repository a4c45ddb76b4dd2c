"""Frozen encoders: built-in H&E extractor, registry and names, TorchScript, one-file safetensors, timm."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from napari_regional_mil.encoders import (
    EncoderSpec,
    canonical_name,
    hash_state_dict,
    list_encoders,
    load_encoder,
    read_encoder_metadata,
    register_architecture,
    save_encoder,
)
from napari_regional_mil.errors import EncoderError

pytestmark = [  # TorchScript is an exchange format here, deprecated upstream
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
]


def _patches(n=5, h=48, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def linear_probe_accuracy(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Multinomial logistic regression (LBFGS) on a random half; accuracy on the other half."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    train, test = idx[: len(y) // 2], idx[len(y) // 2 :]
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    mu, sd = xt[train].mean(0), xt[train].std(0) + 1e-6
    xt = (xt - mu) / sd
    n_cls = int(y.max()) + 1
    w = torch.zeros(x.shape[1], n_cls, requires_grad=True)
    b = torch.zeros(n_cls, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xt[train] @ w + b, yt[train]) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((xt[test] @ w + b).argmax(1) == yt[test]).float().mean())


# --- built-in ------------------------------------------------------------------------------


def test_builtin_is_deterministic_and_takes_any_size():
    a, b = load_encoder("builtin-he"), load_encoder("builtin-he")
    assert a.spec.weights_hash == b.spec.weights_hash and len(a.spec.weights_hash) == 64
    assert a.spec.input_size is None and a.spec.embedding_dim == 185
    x = _patches(4, 61, 61)
    fa = a.embed(x)
    assert fa.shape == (4, 185) and torch.isfinite(fa).all()
    assert torch.equal(fa, b.embed(x))
    assert a.embed(_patches(3, 37, 53)).shape == (3, 185)  # non-square, odd
    assert a.embed(_patches(2, 224, 224)).shape == (2, 185)


def test_uint8_nhwc_and_float_nchw_inputs_agree_exactly():
    enc = load_encoder("builtin-he")
    for size in (40, 224, 97):  # below and above the 2 x 2 binning threshold, odd
        x = _patches(3, size, size)
        as_float = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(enc.embed(x), enc.embed(as_float))


class _ColourOnly(nn.Module):
    """An encoder that sees per-channel colour only: mean, std and a 16-bin histogram of R, G, B."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (N, 3, P) in [0, 1]
        bins = (flat * 15.999).long()
        hist = torch.stack([(bins == b).float().mean(2) for b in range(16)], 2).flatten(1)
        return torch.cat([flat.mean(2), flat.std(2), hist], 1)


def test_builtin_reads_texture_when_every_patch_has_the_same_colour_distribution():
    """Colour-controlled texture probe: per-channel colour is identical in every patch, so a colour-only
    encoder is at chance; builtin-he still tells the six tissue types apart."""
    from napari_regional_mil.encoders import FrozenEncoder
    from napari_regional_mil.synth.probe import (
        colour_baseline,
        colour_matched_patches,
        linear_probe,
    )

    patches, labels, groups = colour_matched_patches(n_per_type=12, seeds=(0, 1, 2))
    assert len(patches) == 6 * 12 * 3 and np.bincount(labels).tolist() == [36] * 6
    baseline = colour_baseline(patches)
    assert np.ptp(baseline, axis=0).max() == 0.0  # the same mean and std of R, G, B in every patch
    chance = 1 / 6
    assert linear_probe(baseline, labels, groups) <= chance + 0.05
    colour_only = FrozenEncoder(
        _ColourOnly(), EncoderSpec(name="colour-only", embedding_dim=54, input_size=None)
    )
    assert (
        linear_probe(colour_only.embed(patches).numpy(), labels, groups) <= chance + 0.1
    )  # the probe fails it
    builtin = load_encoder("builtin-he")
    features = torch.cat([builtin.embed(patches[i : i + 64]) for i in range(0, len(patches), 64)]).numpy()
    assert linear_probe(features, labels, groups) >= 0.90


def test_a_new_builtin_version_is_a_new_encoder_for_caches_and_models(
    embed_slide_path, small_tiling, tmp_path
):
    """Version 2 has another weights hash: caches and models of version 1 are recomputed or refused."""
    from napari_regional_mil.embedding import embed_slide
    from napari_regional_mil.encoders import FrozenEncoder, encoder_for_stored
    from napari_regional_mil.encoders.builtin import VERSION, BuiltinHE
    from napari_regional_mil.jobs import run_job

    current = load_encoder("builtin-he")
    assert VERSION == 2 and current.spec.extra["version"] == 2
    older = BuiltinHE()
    older.version.fill_(1)
    old_hash = hash_state_dict(older)
    assert old_hash != current.spec.weights_hash  # the version is part of the hash
    old = FrozenEncoder(
        BuiltinHE(), current.spec.with_(weights_hash=old_hash)
    )  # what version 1 left in a cache
    first = run_job(
        embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling, encoder=old)
    )
    second = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling))
    assert second.computed and second.cache_path != first.cache_path  # not reused
    with pytest.raises(
        EncoderError, match=r"made with another version of builtin-he.*embed the slides again"
    ):
        encoder_for_stored({"name": "builtin-he", "weights_hash": old_hash})
    assert (
        encoder_for_stored({"name": "builtin-he", "weights_hash": current.spec.weights_hash}).spec.name
        == "builtin-he"
    )


def test_builtin_separates_synthetic_tissue_types_with_a_linear_probe(
    embed_slide_path, embed_layout, small_tiling, tmp_path
):
    """On a synthetic slide with 3 textures, a linear probe on the cached embeddings is >= 95 % accurate."""
    from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
    from napari_regional_mil.jobs import run_job

    types = embed_layout(3)
    result = run_job(
        embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling, batch_size=32)
    )
    emb = load_slide_embeddings(result.cache_path)
    labels = types[emb.grid_xy[:, 1], emb.grid_xy[:, 0]]
    tissue = labels >= 0  # tissue detection fills the small background hole
    assert tissue.sum() >= 140 and len(np.unique(labels[tissue])) == 3
    assert linear_probe_accuracy(emb.features[tissue], labels[tissue].astype(np.int64)) >= 0.95


def test_builtin_embeddings_differ_between_tissue_types():
    """Sanity for the probe: the mean embeddings of different textures are far apart."""
    from napari_regional_mil.synth.slides import render_patch_types

    enc = load_encoder("builtin-he")
    means = []
    for t in range(3):
        img = render_patch_types(np.full((2, 2), t), (0, 0, 96, 96), patch_px=48, mpp=0.5, seed=11)
        patches = img.reshape(2, 48, 2, 48, 3).transpose(0, 2, 1, 3, 4).reshape(4, 48, 48, 3)
        means.append(enc.embed(patches).mean(0))
    assert min(float((means[i] - means[j]).norm()) for i in range(3) for j in range(i + 1, 3)) > 1.0


# --- registry, names, ResNet-50 -----------------------------------------------------------


def test_registry_lists_builtins_and_known_encoders_under_tridents_names():
    names = list_encoders()
    assert names[:2] == ["builtin-he", "resnet50-random"]
    for name in (
        "uni_v1",
        "uni_v2",
        "virchow",
        "virchow2",
        "hoptimus0",
        "hoptimus1",
        "gigapath",
        "phikon",
        "phikon_v2",
        "conch_v1",
        "conch_v15",
        "ctranspath",
        "resnet50",
    ):
        assert name in names
    for alias, name in (
        ("uni", "uni_v1"),
        ("uni2-h", "uni_v2"),
        ("h-optimus-0", "hoptimus0"),
        ("prov-gigapath", "gigapath"),
        ("phikon-v2", "phikon_v2"),
        ("conch-vision", "conch_v1"),
    ):
        assert canonical_name(alias) == name and alias not in names


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(EncoderError, match=r"unknown encoder 'nope'.*builtin-he"):
        load_encoder("nope")


def test_resnet50_random_truncated_after_layer3():
    enc = load_encoder("resnet50-random")
    assert enc.spec.embedding_dim == 1024 and enc.spec.input_size == 224
    assert load_encoder("resnet50-random").spec.weights_hash == enc.spec.weights_hash  # seeded
    out = enc.embed(_patches(2, 64, 64))  # resized to 224 by the spec
    assert out.shape == (2, 1024)


def test_resnet50_with_foreign_weights_names_the_encoder_file_and_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(
        EncoderError,
        match=r"encoder resnet50: .*foreign\.safetensors: weights do not fit.*"
        r"missing conv1\.weight.*unexpected encoder\.weight.*timm/resnet50\.tv_in1k",
    ):
        load_encoder("resnet50", weights=str(path))
    with pytest.raises(
        EncoderError, match=r"encoder resnet50: give its weights file .*--weights FILE.*--from-hub"
    ):
        load_encoder("resnet50")


# --- TorchScript and saved encoders: one file each -----------------------------------------


class _Tiny(nn.Module):
    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def _reference(module: nn.Module, x: np.ndarray, mean, std) -> torch.Tensor:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    return module((t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))


def test_torchscript_file_with_a_legacy_sidecar(tmp_path):
    torch.manual_seed(0)
    module = _Tiny(5).eval()
    path = tmp_path / "mine.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    (tmp_path / "mine.pt.json").write_text(
        json.dumps({"input_size": 24, "mpp": 1.0, "mean": [0.5] * 3, "std": [0.25] * 3})
    )
    enc = load_encoder(str(path))
    assert (enc.spec.name, enc.spec.input_size, enc.spec.mpp, enc.spec.kind) == (
        "mine",
        24,
        1.0,
        "torchscript",
    )
    assert enc.spec.embedding_dim == 5  # inferred by a dummy forward pass
    x = _patches(3, 24, 24)
    assert torch.allclose(enc.embed(x), _reference(module, x, [0.5] * 3, [0.25] * 3), atol=1e-5)
    assert load_encoder(str(path), mpp=0.25).spec.mpp == 0.25  # options override the description


def test_only_torchscript_suffixes_load_code_and_unknown_suffixes_are_refused(tmp_path):
    torch.manual_seed(0)
    scripted = torch.jit.script(_Tiny(3).eval())
    for name in ("model.pth", "model.bin", "model.onnx", "model"):
        path = tmp_path / name
        torch.jit.save(scripted, str(path))  # a real TorchScript archive, named as something else
        with pytest.raises(
            EncoderError, match=rf"{name}: unknown encoder file type .*TorchScript file \(\.pt, \.ts"
        ):
            load_encoder(str(path))
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a zip archive at all")
    with pytest.raises(EncoderError, match=r"weights\.pt: not a TorchScript file"):
        load_encoder(str(bad))
    with pytest.raises(EncoderError, match=r"missing\.pt: encoder file not found"):
        load_encoder(str(tmp_path / "missing.pt"))


def test_save_encoder_keeps_weights_and_description_in_one_file(tmp_path):
    register_architecture("test-tiny", lambda dim=6: _Tiny(dim), overwrite=True)
    torch.manual_seed(1)
    module = _Tiny(7).eval()
    spec = EncoderSpec(name="my-pretrained", embedding_dim=7, input_size=32, mpp=0.5)
    x = _patches(2, 32, 32)
    for suffix, kwargs in ((".ts", {}), (".safetensors", {"arch": "test-tiny", "arch_kwargs": {"dim": 7}})):
        stale = tmp_path / f"enc{suffix}.json"
        stale.write_text(json.dumps({"spec": {"name": "stale", "input_size": 99}}))  # from an earlier save
        path = save_encoder(module, spec, tmp_path / f"enc{suffix}", **kwargs)
        assert not stale.exists()  # one file: nothing beside it to be replaced separately
        enc = load_encoder(str(path))
        assert (enc.spec.name, enc.spec.embedding_dim, enc.spec.input_size) == ("my-pretrained", 7, 32)
        assert enc.spec.weights_hash
        assert torch.allclose(enc.embed(x), _reference(module, x, spec.mean, spec.std), atol=1e-5)
    meta = read_encoder_metadata(tmp_path / "enc.safetensors")
    assert meta["arch"] == "test-tiny" and meta["spec"]["name"] == "my-pretrained"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_legacy_safetensors_with_a_json_sidecar_still_loads(tmp_path):
    from safetensors.torch import save_file

    register_architecture("test-tiny", lambda dim=6: _Tiny(dim), overwrite=True)
    torch.manual_seed(2)
    module = _Tiny(4).eval()
    save_file(module.state_dict(), str(tmp_path / "old.safetensors"))  # as written before: no metadata
    (tmp_path / "old.safetensors.json").write_text(
        json.dumps(
            {
                "arch": "test-tiny",
                "arch_kwargs": {"dim": 4},
                "spec": {"name": "old", "embedding_dim": 4, "input_size": 16},
            }
        )
    )
    enc = load_encoder(str(tmp_path / "old.safetensors"))
    assert (enc.spec.name, enc.spec.input_size) == ("old", 16)
    x = _patches(2, 16, 16)
    assert torch.allclose(enc.embed(x), _reference(module, x, enc.spec.mean, enc.spec.std), atol=1e-5)
    (tmp_path / "old.safetensors.json").unlink()
    with pytest.raises(EncoderError, match=r"old\.safetensors: safetensors without an encoder description"):
        load_encoder(str(tmp_path / "old.safetensors"))


def test_safetensors_with_wrong_shapes(tmp_path):
    from safetensors.torch import save_file

    register_architecture("test-tiny", lambda dim=6: _Tiny(dim), overwrite=True)
    meta = {"arch": "test-tiny", "arch_kwargs": {"dim": 9}, "spec": {"name": "t", "embedding_dim": 9}}
    save_file(
        _Tiny(4).state_dict(),
        str(tmp_path / "t.safetensors"),
        metadata={"napari_regional_mil.encoder": json.dumps(meta)},
    )
    with pytest.raises(EncoderError, match=r"t\.safetensors: weights do not fit.*shape conv\.weight"):
        load_encoder(str(tmp_path / "t.safetensors"))


# --- timm: any architecture with a local weights file ----------------------------------------


def test_timm_model_with_local_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    weights = tmp_path / "r18.safetensors"
    save_file(model.state_dict(), str(weights))
    enc = load_encoder("timm:resnet18", weights=str(weights), input_size=64)
    assert enc.spec.kind == "timm" and enc.spec.embedding_dim == 512 and enc.spec.input_size == 64
    x = _patches(2, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(enc.embed(x), _reference(model, x, enc.spec.mean, enc.spec.std), atol=1e-5)
    with pytest.raises(EncoderError, match="give a local weights file"):
        load_encoder("timm:resnet18")
    other = tmp_path / "other.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(
        EncoderError,
        match=r"other\.pth: weights do not fit.*missing conv1\.weight.*unexpected "
        r"blocks\.0\.attn\.qkv\.weight",
    ):
        load_encoder("timm:resnet18", weights=str(other))


class _Payload:
    """Stands for any pickled object: unpickling it would import and run this module's code."""


def test_weights_files_are_never_unpickled(tmp_path):
    """A torch file with a pickled object (not tensors) is refused by ``weights_only=True``."""
    path = tmp_path / "evil.bin"
    torch.save({"weight": torch.zeros(1), "obj": _Payload()}, path)
    with pytest.raises(EncoderError, match=r"evil\.bin: cannot read weights \(UnpicklingError"):
        load_encoder("resnet50", weights=str(path))


def test_device_auto_is_the_gpu_when_torch_sees_one(monkeypatch):
    from napari_regional_mil.encoders.spec import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu"
