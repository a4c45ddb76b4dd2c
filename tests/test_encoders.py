"""Frozen encoders: built-in H&E extractor, registry, TorchScript, safetensors, timm path."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from napari_regional_mil.encoders import (
    EncoderSpec,
    list_encoders,
    load_encoder,
    register_architecture,
    save_encoder,
)
from napari_regional_mil.errors import EncoderError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is our exchange format


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


def test_uint8_nhwc_and_float_nchw_inputs_agree():
    enc = load_encoder("builtin-he")
    x = _patches(3, 40, 40)
    as_float = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(enc.embed(x), enc.embed(as_float), atol=1e-5)


def test_builtin_separates_synthetic_tissue_types_with_a_linear_probe(embed_slide_path, embed_layout, small_tiling, tmp_path):
    """On a synthetic slide with 3 textures, a linear probe on the cached embeddings is >= 95 % accurate."""
    from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
    from napari_regional_mil.jobs import run_job

    types = embed_layout(3)
    result = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling, batch_size=32))
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


# --- registry, ResNet-50 -------------------------------------------------------------------


def test_registry_lists_builtins_and_known_encoders():
    names = list_encoders()
    assert names[0] == "builtin-he"
    for name in ("resnet50-random", "resnet50", "uni", "virchow2", "h-optimus-0", "prov-gigapath", "conch-vision"):
        assert name in names


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(EncoderError, match="unknown encoder 'nope'.*builtin-he"):
        load_encoder("nope")


def test_resnet50_random_truncated_after_layer3():
    enc = load_encoder("resnet50-random")
    assert enc.spec.embedding_dim == 1024 and enc.spec.input_size == 224
    assert load_encoder("resnet50-random").spec.weights_hash == enc.spec.weights_hash  # seeded
    out = enc.embed(_patches(2, 64, 64))  # resized to 224 by the spec
    assert out.shape == (2, 1024)


def test_resnet50_with_foreign_weights_names_the_file_and_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(EncoderError, match=r"foreign\.safetensors: weights do not fit.*missing conv1\.weight.*unexpected encoder\.weight"):
        load_encoder("resnet50", weights=str(path))
    with pytest.raises(EncoderError, match="give a local weights file"):
        load_encoder("resnet50")


# --- TorchScript and saved encoders --------------------------------------------------------


class _Tiny(nn.Module):
    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def test_torchscript_file_with_sidecar(tmp_path):
    torch.manual_seed(0)
    module = _Tiny(5).eval()
    path = tmp_path / "mine.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    (tmp_path / "mine.pt.json").write_text(json.dumps({"input_size": 24, "mpp": 1.0, "mean": [0.5] * 3, "std": [0.25] * 3}))
    enc = load_encoder(str(path))
    assert (enc.spec.name, enc.spec.input_size, enc.spec.mpp, enc.spec.kind) == ("mine", 24, 1.0, "torchscript")
    assert enc.spec.embedding_dim == 5  # inferred by a dummy forward pass
    x = _patches(3, 24, 24)
    expected = module((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25)
    assert torch.allclose(enc.embed(x), expected, atol=1e-5)
    assert load_encoder(str(path), mpp=0.25).spec.mpp == 0.25  # options override the sidecar


def test_file_that_is_not_torchscript(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a zip archive at all")
    with pytest.raises(EncoderError, match=r"weights\.pt: not a TorchScript file"):
        load_encoder(str(bad))
    with pytest.raises(EncoderError, match="missing.pt: encoder file not found"):
        load_encoder(str(tmp_path / "missing.pt"))


def test_save_encoder_round_trips_torchscript_and_safetensors(tmp_path):
    register_architecture("test-tiny", lambda dim=6: _Tiny(dim), overwrite=True)
    torch.manual_seed(1)
    module = _Tiny(7).eval()
    spec = EncoderSpec(name="my-pretrained", embedding_dim=7, input_size=32, mpp=0.5)
    x = _patches(2, 32, 32)
    for suffix, kwargs in ((".ts", {}), (".safetensors", {"arch": "test-tiny", "arch_kwargs": {"dim": 7}})):
        path = save_encoder(module, spec, tmp_path / f"enc{suffix}", **kwargs)
        assert (tmp_path / f"enc{suffix}.json").exists()
        enc = load_encoder(str(path))
        assert enc.spec.name == "my-pretrained" and enc.spec.embedding_dim == 7 and enc.spec.weights_hash
        ref = load_encoder(str(path)).embed(x)
        assert torch.allclose(enc.embed(x), ref) and torch.allclose(
            ref, module((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1))
                        / torch.tensor(spec.std).view(1, 3, 1, 1)), atol=1e-5)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_safetensors_with_wrong_shapes(tmp_path):
    register_architecture("test-tiny", lambda dim=6: _Tiny(dim), overwrite=True)
    path = save_encoder(_Tiny(4), EncoderSpec(name="t", embedding_dim=4), tmp_path / "t.safetensors", arch="test-tiny",
                        arch_kwargs={"dim": 4})
    side = json.loads((tmp_path / "t.safetensors.json").read_text())
    side["arch_kwargs"] = {"dim": 9}
    (tmp_path / "t.safetensors.json").write_text(json.dumps(side))
    with pytest.raises(EncoderError, match=r"t\.safetensors: weights do not fit.*shape conv\.weight"):
        load_encoder(str(path))


# --- timm (stand-in here, real when timm imports) -----------------------------------------


class _FakeViT(nn.Module):
    """Tokens ``(N, 1 + reg + 4, dim)`` when ``global_pool=""``, else a pooled ``(N, dim)``."""

    def __init__(self, dim: int = 8, reg_tokens: int = 0, global_pool: str = "token") -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1 + reg_tokens, dim))
        self.global_pool = global_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(nn.functional.adaptive_avg_pool2d(x, 16)).flatten(2).transpose(1, 2)  # (N, 4, dim)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1)
        return tokens if self.global_pool == "" else tokens[:, 0]


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []

    def create_model(name, pretrained=False, num_classes=1000, **kwargs):
        calls.append((name, pretrained, num_classes, kwargs))
        torch.manual_seed(0)
        return _FakeViT(dim=8, reg_tokens=kwargs.get("reg_tokens", 0), global_pool=kwargs.get("global_pool", "token"))

    module = types.ModuleType("timm")
    module.create_model = create_model
    layers = types.ModuleType("timm.layers")
    layers.SwiGLUPacked = type("SwiGLUPacked", (), {})
    module.layers = layers
    monkeypatch.setitem(sys.modules, "timm", module)
    monkeypatch.setitem(sys.modules, "timm.layers", layers)
    return calls


def test_timm_model_with_local_weights(fake_timm, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "vit.safetensors"
    save_file(_FakeViT(8).state_dict(), str(weights))
    enc = load_encoder("timm:vit_small_fake", weights=str(weights), input_size=32)
    assert fake_timm[-1][:3] == ("vit_small_fake", False, 0)  # no download, pooled features
    assert enc.spec.kind == "timm" and enc.spec.embedding_dim == 8 and enc.spec.input_size == 32
    assert enc.embed(_patches(2, 32, 32)).shape == (2, 8)
    with pytest.raises(EncoderError, match="give a local weights file"):
        load_encoder("timm:vit_small_fake")


def test_timm_weights_that_do_not_fit(fake_timm, tmp_path):
    weights = tmp_path / "other.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(2, 2), "proj.weight": torch.zeros(1)}, weights)
    with pytest.raises(EncoderError, match=r"other\.pth: weights do not fit.*missing .*cls.*unexpected blocks\.0\.attn\.qkv\.weight"):
        load_encoder("timm:vit_small_fake", weights=str(weights))


def test_known_encoder_builds_its_architecture(fake_timm, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "virchow2.safetensors"
    save_file(_FakeViT(8, reg_tokens=4).state_dict(), str(weights))
    enc = load_encoder("virchow2", weights=str(weights))
    name, pretrained, _, kwargs = fake_timm[-1]
    assert name == "vit_huge_patch14_224" and not pretrained
    assert kwargs["reg_tokens"] == 4 and kwargs["act_layer"] is torch.nn.SiLU and kwargs["mlp_layer"].__name__ == "SwiGLUPacked"
    assert enc.spec.embedding_dim == 16  # class token + mean of patch tokens (skipping 4 registers)
    assert enc.spec.name == "virchow2" and enc.spec.input_size == 224
    with pytest.raises(EncoderError, match="point at the downloaded weights"):
        load_encoder("uni")


def test_known_encoder_without_timm_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(EncoderError, match=r"timm is not installed.*\[timm\]"):
        load_encoder("uni", weights=str(tmp_path / "w.safetensors"))


def test_real_timm_model_with_local_weights(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    weights = tmp_path / "r18.safetensors"
    save_file(model.state_dict(), str(weights))
    enc = load_encoder("timm:resnet18", weights=str(weights), input_size=64)
    assert enc.embed(_patches(2, 64, 64)).shape == (2, 512)
