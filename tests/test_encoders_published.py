"""Published encoders through the real code path, offline.

Random weights are saved in the exact layout each hub repository publishes (file name,
state-dict keys; transformers layout with ``config.json`` for Phikon) into a local hub
cache (``HF_HUB_CACHE`` in tmp, ``HF_HUB_OFFLINE=1``), then loaded with the same code a
download uses. The reference embedding is computed here directly with timm /
transformers calls on the same weights. UNI (timm layout) and Phikon (transformers
layout) go through the full round trip on real tensors; every other known encoder is
checked on the meta device against TRIDENT's own architecture arguments (copied below
from ``trident/patch_encoder_models/load.py``).
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from hubfake import FakeHub, point_hub_at, publish
from napari_regional_mil.encoders import (
    KNOWN_ENCODERS,
    expected_keys,
    hash_file,
    load_encoder,
)
from napari_regional_mil.encoders.hub import cached_file, fetch_weights_job
from napari_regional_mil.errors import EncoderError
from napari_regional_mil.jobs import run_job

timm = pytest.importorskip("timm")  # part of the default install; only a broken environment lacks it

_IMAGENET = (
    torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
    torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty, offline hub cache in tmp; ``publish(repo, {file: writer})`` fills one snapshot."""
    cache = tmp_path / "hub"
    cache.mkdir()
    point_hub_at(monkeypatch, cache, offline=True)

    def publish_here(repo: str, files: dict, *, repo_type: str = "model") -> Path:
        return publish(cache, repo, files, repo_type=repo_type)

    publish_here.cache = cache
    return publish_here


def _patches(n: int = 2, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _normalised(x: np.ndarray, mean=_IMAGENET[0], std=_IMAGENET[1]) -> torch.Tensor:
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std


# --- full round trips on real tensors ------------------------------------------------------


def _random_vit(arch: str, seed: int, **kwargs) -> torch.nn.Module:
    """A timm ViT with random weights of realistic scale, filled fast (built on the meta device first)."""
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, **kwargs)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or (".norm" in name and name.endswith("weight")):
                param.normal_(1.0, 0.1, generator=gen)
            elif name.endswith(".gamma"):  # LayerScale
                param.normal_(0.0, 0.1, generator=gen)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def test_uni_v1_round_trip_through_the_hub_cache(hub_cache):
    """timm layout: ``pytorch_model.bin`` of MahmoodLab/UNI, TRIDENT's timm arguments."""
    model = _random_vit(
        "vit_large_patch16_224",
        0,
        img_size=224,
        patch_size=16,
        init_values=1e-5,
        num_classes=0,
        dynamic_img_size=True,
    )
    x = _patches(1)
    with torch.inference_mode():
        reference = model(_normalised(x))
    assert float(reference.std()) > 0.1  # an embedding of real scale: 1e-5 means something
    state = model.state_dict()
    del model
    snapshot = hub_cache("MahmoodLab/UNI", {"pytorch_model.bin": lambda p: torch.save(state, p)})
    gc.collect()

    assert cached_file(KNOWN_ENCODERS["uni_v1"]) == snapshot / "pytorch_model.bin"  # "present locally"
    with pytest.raises(
        EncoderError, match=r"uni_v1: give its weights file .*--from-hub \(already in the hub cache"
    ):
        load_encoder("uni_v1")  # present, but never used without the user's choice
    enc = load_encoder("uni", from_hub=True)  # today's name is an alias of TRIDENT's
    assert (enc.spec.name, enc.spec.embedding_dim, enc.spec.input_size, enc.spec.mpp) == (
        "uni_v1",
        1024,
        224,
        0.5,
    )
    assert enc.spec.kind == "timm" and enc.spec.source == "hf-hub:MahmoodLab/UNI/pytorch_model.bin"
    out = enc.embed(x)
    assert out.shape == (1, 1024) and float((out - reference).abs().max()) <= 1e-5
    assert enc.spec.weights_hash == hash_file(
        snapshot / "pytorch_model.bin"
    )  # the same as --weights FILE gives


def test_phikon_round_trip_in_transformers_layout(hub_cache):
    """transformers layout: ``config.json`` + ``pytorch_model.bin`` (with its pooler) of owkin/phikon."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=224,
        patch_size=16,
        qkv_bias=True,
        layer_norm_eps=1e-6,
    )
    torch.manual_seed(1)
    state = ViTModel(config).state_dict()  # saved with the pooler, as a full ViTModel checkpoint is
    snapshot = hub_cache(
        "owkin/phikon",
        {
            "config.json": lambda p: config.to_json_file(str(p)),
            "pytorch_model.bin": lambda p: torch.save(state, p),
        },
    )
    # the reference: TRIDENT's call, straight from transformers
    reference_model = ViTModel.from_pretrained(str(snapshot), add_pooling_layer=False).eval()
    x = _patches(2, seed=2)
    with torch.inference_mode():
        reference = reference_model(pixel_values=_normalised(x)).last_hidden_state[:, 0]
    assert float(reference.std()) > 0.1
    enc = load_encoder("phikon", from_hub=True)
    assert (enc.spec.embedding_dim, enc.spec.kind) == (768, "transformers")
    assert float((enc.embed(x) - reference).abs().max()) <= 1e-5
    # the config.json beside a local weights file is used too (layer_norm_eps 1e-6, not the table's default)
    local = load_encoder("phikon", weights=str(snapshot / "pytorch_model.bin"))
    assert float((local.embed(x) - reference).abs().max()) <= 1e-5


def test_resnet50_is_imagenet_resnet_cut_after_layer3(hub_cache):
    """TRIDENT's resnet50: timm resnet50.tv_in1k, features after layer 3, average-pooled (1024-d)."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    full = timm.create_model("resnet50", pretrained=False).eval()  # the published file has layer4 and fc
    hub_cache("timm/resnet50.tv_in1k", {"model.safetensors": lambda p: save_file(full.state_dict(), str(p))})
    reference_model = timm.create_model("resnet50", pretrained=False, features_only=True, out_indices=[3])
    reference_model.load_state_dict(full.state_dict(), strict=False)
    x = _patches(2, seed=4)
    with torch.inference_mode():
        reference = reference_model.eval()(_normalised(x))[0].mean(dim=(2, 3))
    enc = load_encoder("resnet50", from_hub=True)
    assert enc.spec.embedding_dim == 1024
    assert float((enc.embed(x) - reference).abs().max()) <= 1e-5


# --- every known encoder: architecture against TRIDENT's arguments, on the meta device ------

_SWIGLU = {"mlp_layer": "swiglu", "act_layer": "silu"}
#: TRIDENT's timm calls (trident/patch_encoder_models/load.py), written out independently of the table.
TRIDENT_TIMM = {
    "uni_v1": (
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
    ),
    "uni_v2": (
        "vit_giant_patch14_224",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
    ),
    "virchow": (
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
    ),
    "hoptimus0": (
        "vit_giant_patch14_reg4_dinov2",
        {
            "num_classes": 0,
            "img_size": 224,
            "global_pool": "token",
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
    ),
    "hoptimus1": (
        "vit_giant_patch14_reg4_dinov2",
        {
            "num_classes": 0,
            "img_size": 224,
            "global_pool": "token",
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
    ),
    "gigapath": (
        "vit_giant_patch14_dinov2",
        {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
    ),
    "lunit-vits8": ("vit_small_patch8_224", {"img_size": 224, "dynamic_img_size": True}),
}


def _trident_model(name: str) -> torch.nn.Module:
    arch, kwargs = TRIDENT_TIMM[name]
    layers = {"swiglu": timm.layers.SwiGLUPacked, "silu": torch.nn.SiLU}
    kwargs = {
        k: layers.get(v, v) if isinstance(v, str) and k.endswith("_layer") else v for k, v in kwargs.items()
    }
    return timm.create_model(arch, pretrained=False, **kwargs)


@pytest.mark.parametrize("name", sorted(TRIDENT_TIMM))
def test_timm_encoders_match_tridents_architecture(name):
    """Shapes, output dim and the exact state-dict keys a published file must carry (meta device)."""
    from napari_regional_mil.encoders.published import build_known

    known = KNOWN_ENCODERS[name]
    with torch.device("meta"):
        reference = _trident_model(name)
        ours = build_known(known)
        out = ours(torch.zeros(2, 3, known.input_size, known.input_size))
        tokens = reference(torch.zeros(2, 3, known.input_size, known.input_size))
    ref_keys = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert expected_keys(known) == ref_keys
    assert tuple(out.shape) == (2, known.embedding_dim)
    if known.pooling == "cls+mean":  # Virchow: class token + mean patch token of TRIDENT's token output
        assert tokens.shape[-1] * 2 == known.embedding_dim
        assert tokens.shape[1] - known.skip_tokens == (known.input_size // 14) ** 2
    else:
        assert tuple(tokens.shape) == (2, known.embedding_dim)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    assert abs(params - known.params_m) < 0.05 * known.params_m + 0.1


def test_phikon_v2_architecture_on_the_meta_device():
    """Dinov2Model of owkin/phikon-v2: ViT-L/16, 1024-d class token (TRIDENT: last_hidden_state[:, 0])."""
    from transformers import Dinov2Config, Dinov2Model

    known = KNOWN_ENCODERS["phikon_v2"]
    with torch.device("meta"):
        reference = Dinov2Model(
            Dinov2Config(
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=224,
                patch_size=16,
                layerscale_value=1e-5,
            )
        )
    keys = expected_keys(known)
    assert keys == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert keys["embeddings.position_embeddings"] == (1, 197, 1024)
    assert known.weights_file == "model.safetensors" and known.config_file == "config.json"


def test_every_known_encoder_is_listed_with_its_source():
    names = set(KNOWN_ENCODERS)
    assert {
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
    } <= names
    for known in KNOWN_ENCODERS.values():
        assert known.hub_repo and known.weights_file and known.licence
        assert known.loadable == (known.name not in ("conch_v1", "conch_v15", "ctranspath"))


# --- bad input: one line naming the encoder, the file or repository, what to do ------------


def test_unavailable_encoder_says_what_to_use_instead():
    with pytest.raises(
        EncoderError, match=r"encoder conch_v1: needs its authors' CONCH package.*TorchScript.*import-h5"
    ):
        load_encoder("conch_v1", weights="whatever.bin")
    with pytest.raises(EncoderError, match="encoder ctranspath: needs timm-ctp"):
        load_encoder("ctranspath", from_hub=True)


def test_weights_of_another_model_name_encoder_file_and_expected_layout(tmp_path):
    from safetensors.torch import save_file

    wrong = tmp_path / "phikon.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("vit_small_patch8_224", num_classes=0).state_dict(), str(wrong))
    with pytest.raises(
        EncoderError,
        match=r"^encoder uni_v1: .*phikon\.safetensors: weights do not fit the "
        r"architecture: .*shape .*; expected pytorch_model\.bin of MahmoodLab/UNI",
    ):
        load_encoder("uni_v1", weights=str(wrong))
    with pytest.raises(EncoderError, match=r"missing\.bin: weights file not found"):
        load_encoder("uni_v1", weights=str(tmp_path / "missing.bin"))
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(EncoderError, match=r"weights\.npz: unknown weights file type '\.npz'"):
        load_encoder("virchow2", weights=str(odd))


def test_not_in_the_offline_cache_names_repository_and_what_to_do(hub_cache):
    with pytest.raises(
        EncoderError,
        match=r"^encoder virchow2: paige-ai/Virchow2: cannot download pytorch_model\.bin "
        r"\(no network, or HF_HUB_OFFLINE is set\).*--weights FILE",
    ):
        load_encoder("virchow2", from_hub=True)
    assert not any(hub_cache.cache.iterdir())  # nothing written to the hub cache


@pytest.fixture
def gated_hub(hub_cache, monkeypatch):
    hub = FakeHub({}, gated=("MahmoodLab/UNI",))
    point_hub_at(monkeypatch, hub_cache.cache, offline=False, endpoint=hub.url)
    yield hub_cache
    hub.close()


def test_gated_repository_without_a_token(gated_hub):
    with pytest.raises(
        EncoderError,
        match=r"^encoder uni_v1: MahmoodLab/UNI is gated: accept its terms "
        r"\(CC-BY-NC-ND-4\.0\) at https://huggingface\.co/MahmoodLab/UNI.*HF_TOKEN",
    ):
        load_encoder("uni_v1", from_hub=True)
    weights = [p for p in gated_hub.cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert weights == []  # no weights (or partial weights) written


def test_download_from_the_hub_with_progress_then_offline(hub_cache, monkeypatch, tmp_path):
    """A real ``hf_hub_download`` from a local stand-in of the hub: progress, the hub cache, then offline reuse."""
    from safetensors.torch import save_file

    torch.manual_seed(6)
    save_file(timm.create_model("resnet50", pretrained=False).state_dict(), str(tmp_path / "w.safetensors"))
    payload = (tmp_path / "w.safetensors").read_bytes()
    hub = FakeHub({"timm/resnet50.tv_in1k": {"model.safetensors": payload}})
    try:
        point_hub_at(monkeypatch, hub_cache.cache, offline=False, endpoint=hub.url)
        known = KNOWN_ENCODERS["resnet50"]
        assert cached_file(known) is None
        events = []
        [path] = run_job(fetch_weights_job(known), events.append)
        assert path.read_bytes() == payload and cached_file(known) == path
        assert events[-1].stage == "download" and events[-1].done == events[-1].total == len(payload)
        assert run_job(fetch_weights_job(known)) == [path]  # cached: no second download
        assert [r for r in hub.requests if r[0] == "GET" and "resolve" in r[1]] == [
            ("GET", "/timm/resnet50.tv_in1k/resolve/main/model.safetensors")]
    finally:
        hub.close()
    point_hub_at(monkeypatch, hub_cache.cache, offline=True)
    enc = load_encoder("resnet50", from_hub=True)
    assert enc.spec.weights_hash == hash_file(tmp_path / "w.safetensors")


def test_no_network(hub_cache, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda s: None))  # the client's retry back-off
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}"
    )
    with pytest.raises(
        EncoderError, match=r"^encoder phikon_v2: owkin/phikon-v2: cannot download model\.safetensors"
    ):
        load_encoder("phikon_v2", from_hub=True)


def test_hf_hub_name_of_a_known_repository_builds_the_known_encoder(hub_cache):
    """``hf-hub:paige-ai/Virchow2`` is Virchow2 as TRIDENT builds it, not timm's reading of its config."""
    with pytest.raises(EncoderError, match="encoder virchow2: paige-ai/Virchow2: cannot download"):
        load_encoder("hf-hub:paige-ai/Virchow2")


# --- the CLI: embed --encoder NAME --weights FILE / --from-hub, and the encoders list ------------

_TINY = ["--patch-size", "32", "--region-size", "4", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny_slide(synthetic_slide):
    """20 tissue patches of 32 px (5 x 4 cells): a published encoder embeds them in seconds."""
    return synthetic_slide(np.zeros((4, 5), np.int16), patch_px=32, mpp=0.5, seed=2)


def _stores(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.zarr*")) if folder.exists() else []


def test_embed_with_a_published_encoder_from_a_file_and_from_the_hub(hub_cache, tiny_slide, tmp_path, capsys):
    from safetensors.torch import save_file

    from napari_regional_mil.cli import main
    from napari_regional_mil.embedding import find_slide_cache, load_slide_embeddings

    torch.manual_seed(5)
    state = timm.create_model("resnet50", pretrained=False).state_dict()
    downloaded = tmp_path / "model.safetensors"
    save_file(state, str(downloaded))
    out = tmp_path / "cache"
    assert (
        main(
            [
                "embed",
                str(tiny_slide),
                "--out",
                str(out),
                "--encoder",
                "resnet50",
                "--weights",
                str(downloaded),
                *_TINY,
            ]
        )
        == 0
    )
    assert "resnet50 (1024-d)" in capsys.readouterr().out
    emb = load_slide_embeddings(find_slide_cache(out, tiny_slide, encoder="resnet50"))
    assert emb.embedding_dim == 1024 and emb.meta["encoder"] == "resnet50"
    # the same weights from the (offline) hub cache: the same encoder and hash, so the cache is reused
    hub_cache("timm/resnet50.tv_in1k", {"model.safetensors": lambda p: save_file(state, str(p))})
    assert (
        main(["embed", str(tiny_slide), "--out", str(out), "--encoder", "resnet50", "--from-hub", *_TINY])
        == 0
    )
    assert "already cached" in capsys.readouterr().out
    assert main(["encoders"]) == 0
    listed = capsys.readouterr().out
    resnet = next(line for line in listed.splitlines() if line.startswith("resnet50 "))
    assert "timm/resnet50.tv_in1k (model.safetensors)" in resnet and resnet.rstrip().endswith(
        "yes"
    )  # present
    uni = next(line for line in listed.splitlines() if line.startswith("uni_v1 "))
    assert "MahmoodLab/UNI" in uni and "CC-BY-NC-ND-4.0" in uni and uni.rstrip().endswith("no")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--encoder", "uni_v1"],
            r"encoder uni_v1: give its weights file \(pytorch_model\.bin of MahmoodLab/UNI\)",
        ),
        (
            ["--encoder", "uni", "--weights", "{tmp}/missing.bin"],
            r"encoder uni_v1: .*missing\.bin: weights file not found; give the pytorch_model\.bin",
        ),
        (
            ["--encoder", "virchow2", "--weights", "{tmp}/other.safetensors"],
            r"encoder virchow2: .*other\.safetensors: weights do not fit .*expected pytorch_model\.bin of",
        ),
        (
            ["--encoder", "virchow2", "--from-hub"],
            r"encoder virchow2: paige-ai/Virchow2: cannot download pytorch_model\.bin \(no net.*--weights",
        ),
        (
            ["--encoder", "builtin-he", "--from-hub"],
            r"--from-hub downloads a published encoder's weights; builtin-he",
        ),
        (["--encoder", "conch_v1", "--from-hub"], r"encoder conch_v1: needs its authors' CONCH package"),
        (["--encoder", "{tmp}/model.onnx"], r"model\.onnx: unknown encoder file type '\.onnx'"),
    ],
)
def test_embed_with_a_bad_encoder_choice_is_one_line_and_writes_nothing(
    hub_cache, tiny_slide, tmp_path, capsys, args, expected
):
    import re

    from safetensors.torch import save_file

    from napari_regional_mil.cli import main

    save_file({"proj.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    out = tmp_path / "cache"
    code = main(
        ["embed", str(tiny_slide), "--out", str(out), *[a.format(tmp=tmp_path) for a in args], *_TINY]
    )
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert re.search(expected, lines[0]), lines[0]
    assert _stores(out) == []  # nothing written to the cache
    assert not [p for p in hub_cache.cache.rglob("*") if p.is_file()]  # nor to the hub cache
