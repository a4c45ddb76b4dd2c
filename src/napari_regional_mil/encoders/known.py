"""The table of published pathology encoders, under TRIDENT's names.

Each :class:`KnownEncoder` records what TRIDENT (``mahmoodlab/TRIDENT``,
``trident/patch_encoder_models/load.py``) builds for that name: the architecture and its
keyword arguments, how the output becomes the patch embedding, the input size and
normalisation, and where the published weights are (hub repository, file name inside it,
whether the repository is gated and under which licence). Nothing here imports timm,
transformers or the hub client: the table is cheap to read (``napari-regional-mil
encoders``, the Embed widget's list).

The names are TRIDENT's (``uni_v1``, ``virchow2``, ``hoptimus0`` ...), so features made
here and features made by TRIDENT carry the same encoder name; the names this project
used before are aliases (:data:`ALIASES`, resolved by :func:`canonical_name`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ALIASES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_ENCODERS",
    "Family",
    "KnownEncoder",
    "Pooling",
    "canonical_name",
]

#: How the architecture is built: a timm model, a transformers model, the project's own
#: ResNet-50, or code that is not on the package registry (not loadable here).
Family = Literal["timm", "transformers", "resnet50", "unavailable"]
#: How the model's output becomes the patch embedding.
Pooling = Literal["timm", "cls+mean", "cls", "pooled"]

#: ImageNet's normalisation (most published encoders', and the default of an encoder spec).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HOPT_MEAN = (0.707223, 0.578729, 0.703617)
_HOPT_STD = (0.211883, 0.230117, 0.177517)
_LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
_LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)
_SWIGLU = {"mlp_layer": "@timm.layers.SwiGLUPacked", "act_layer": "@torch.nn.SiLU"}
_NC_ND = "CC-BY-NC-ND-4.0"


@dataclass(frozen=True)
class KnownEncoder:
    """A published pathology encoder: how TRIDENT builds it and where its weights are.

    Parameters
    ----------
    name
        TRIDENT's name (``"uni_v1"``).
    title
        What it is, for people (``"UNI (ViT-L/16, MahmoodLab)"``).
    family
        ``"timm"``, ``"transformers"``, ``"resnet50"`` or ``"unavailable"``.
    arch
        timm model name (``"vit_large_patch16_224"``) or transformers model class
        (``"ViTModel"``, ``"Dinov2Model"``); empty when unavailable.
    kwargs
        timm keyword arguments, or the transformers configuration used when no
        ``config.json`` comes with the weights. Values written ``"@module.attr"`` are
        resolved at load time (timm layer classes).
    embedding_dim
        D of the patch embedding.
    input_size, mpp, mean, std, interpolation
        What the encoder takes: square input side in px, microns per pixel (20x),
        normalisation of [0, 1] RGB, and the resize used to reach ``input_size``.
    pooling
        ``"timm"`` (timm's pooled output), ``"cls+mean"`` (class token and the mean of
        the patch tokens after ``skip_tokens`` prefix tokens: Virchow), ``"cls"`` (the
        class token of a transformers model's last hidden state), ``"pooled"`` (a
        feature map average-pooled: ResNet-50).
    hub_repo, repo_type, weights_file, config_file
        The Hugging Face repository, its type (``"model"`` or ``"dataset"``), the weights
        file inside it and, for transformers models, its ``config.json``.
    gated
        The repository asks you to accept its terms (and to log in) before downloading.
    licence
        The licence on the model card.
    params_m
        Parameters in millions (as built here with random weights).
    needs
        Why the encoder cannot be built here, and what to do instead (``"unavailable"``).
    note
        Anything else a user must know.
    """

    name: str
    title: str
    family: Family
    arch: str
    kwargs: dict[str, Any]
    embedding_dim: int
    hub_repo: str
    weights_file: str
    licence: str
    gated: bool
    params_m: float
    input_size: int = 224
    mpp: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    pooling: Pooling = "timm"
    skip_tokens: int = 1
    repo_type: str = "model"
    config_file: str = ""
    needs: str = ""
    note: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def loadable(self) -> bool:
        """Whether this project can build the architecture (its code is on the registry)."""
        return self.family != "unavailable"

    @property
    def hub_url(self) -> str:
        """The repository's page on the hub (where its licence is accepted)."""
        kind = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{kind}{self.hub_repo}"


_TABLE = [
    KnownEncoder(
        "uni_v1",
        "UNI (ViT-L/16, MahmoodLab)",
        "timm",
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        1024,
        "MahmoodLab/UNI",
        "pytorch_model.bin",
        _NC_ND,
        True,
        303.4,
        aliases=("uni",),
    ),
    KnownEncoder(
        "uni_v2",
        "UNI2-h (ViT-H/14 + 8 registers, MahmoodLab)",
        "timm",
        "vit_giant_patch14_224",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        1536,
        "MahmoodLab/UNI2-h",
        "pytorch_model.bin",
        _NC_ND,
        True,
        681.4,
        aliases=("uni2-h", "uni2"),
    ),
    KnownEncoder(
        "virchow",
        "Virchow (ViT-H/14, Paige)",
        "timm",
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        2560,
        "paige-ai/Virchow",
        "pytorch_model.bin",
        "Apache-2.0",
        True,
        631.2,
        interpolation="bicubic",
        pooling="cls+mean",
        skip_tokens=1,
        note="embedding = class token + mean of the 256 patch tokens",
    ),
    KnownEncoder(
        "virchow2",
        "Virchow2 (ViT-H/14 + 4 registers, Paige)",
        "timm",
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "reg_tokens": 4,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        2560,
        "paige-ai/Virchow2",
        "pytorch_model.bin",
        _NC_ND,
        True,
        631.2,
        interpolation="bicubic",
        pooling="cls+mean",
        skip_tokens=5,
        note="embedding = class token + mean of the patch tokens (the 4 registers skipped)",
    ),
    KnownEncoder(
        "hoptimus0",
        "H-optimus-0 (ViT-g/14 + 4 registers, Bioptimus)",
        "timm",
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "global_pool": "token", "init_values": 1e-5, "dynamic_img_size": True},
        1536,
        "bioptimus/H-optimus-0",
        "pytorch_model.bin",
        "Apache-2.0",
        True,
        1134.8,
        mean=_HOPT_MEAN,
        std=_HOPT_STD,
        aliases=("h-optimus-0",),
        note="TRIDENT pins timm 0.9.16 for this model; built here with timm 1.0.31 (same state-dict keys)",
    ),
    KnownEncoder(
        "hoptimus1",
        "H-optimus-1 (ViT-g/14 + 4 registers, Bioptimus)",
        "timm",
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "global_pool": "token", "init_values": 1e-5, "dynamic_img_size": True},
        1536,
        "bioptimus/H-optimus-1",
        "pytorch_model.bin",
        "non-commercial (see the model card)",
        True,
        1134.8,
        mean=_HOPT_MEAN,
        std=_HOPT_STD,
        aliases=("h-optimus-1",),
        note="TRIDENT pins timm 0.9.16 for this model; built here with timm 1.0.31 (same state-dict keys)",
    ),
    KnownEncoder(
        "gigapath",
        "Prov-GigaPath tile encoder (ViT-g/16, Providence/Microsoft)",
        "timm",
        "vit_giant_patch14_dinov2",
        {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
            "dynamic_img_size": True,
        },
        1536,
        "prov-gigapath/prov-gigapath",
        "pytorch_model.bin",
        "Apache-2.0",
        True,
        1135.0,
        interpolation="bicubic",
        aliases=("prov-gigapath",),
        note="TRIDENT resizes to 256 px and crops the central 224 px; here the whole patch is resized to "
        "224 px",
    ),
    KnownEncoder(
        "phikon",
        "Phikon (ViT-B/16, Owkin; transformers layout)",
        "transformers",
        "ViTModel",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 16,
            "qkv_bias": True,
        },
        768,
        "owkin/phikon",
        "pytorch_model.bin",
        "Owkin non-commercial (see the model card)",
        False,
        85.8,
        pooling="cls",
        config_file="config.json",
    ),
    KnownEncoder(
        "phikon_v2",
        "Phikon-v2 (ViT-L/16 DINOv2, Owkin; transformers layout)",
        "transformers",
        "Dinov2Model",
        {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "mlp_ratio": 4,
            "image_size": 224,
            "patch_size": 16,
            "layerscale_value": 1e-5,
            "layer_norm_eps": 1e-6,
        },
        1024,
        "owkin/phikon-v2",
        "model.safetensors",
        "Owkin non-commercial (see the model card)",
        False,
        303.4,
        pooling="cls",
        config_file="config.json",
        aliases=("phikon-v2",),
    ),
    KnownEncoder(
        "resnet50",
        "ResNet-50 ImageNet (torchvision weights), cut after layer 3 as in CLAM",
        "resnet50",
        "ResNet50",
        {"layers": 3},
        1024,
        "timm/resnet50.tv_in1k",
        "model.safetensors",
        "BSD-3-Clause",
        False,
        8.5,
        pooling="pooled",
    ),
    KnownEncoder(
        "lunit-vits8",
        "Lunit DINO ViT-S/8",
        "timm",
        "vit_small_patch8_224",
        {"img_size": 224, "dynamic_img_size": True},
        384,
        "1aurent/vit_small_patch8_224.lunit_dino",
        "model.safetensors",
        "non-commercial (see the model card)",
        False,
        21.7,
        mean=_LUNIT_MEAN,
        std=_LUNIT_STD,
        aliases=("lunit-dino-vits8",),
    ),
    KnownEncoder(
        "conch_v1",
        "CONCH v1 image encoder (ViT-B/16, MahmoodLab)",
        "unavailable",
        "",
        {},
        512,
        "MahmoodLab/CONCH",
        "pytorch_model.bin",
        _NC_ND,
        True,
        0.0,
        input_size=448,
        aliases=("conch-vision", "conch"),
        needs="needs its authors' CONCH package, which is not on the package registry",
    ),
    KnownEncoder(
        "conch_v15",
        "CONCH v1.5 image encoder (ViT-L/16, MahmoodLab)",
        "unavailable",
        "",
        {},
        768,
        "MahmoodLab/conchv1_5",
        "pytorch_model_vision.bin",
        _NC_ND,
        True,
        0.0,
        input_size=448,
        needs="needs model code that is not on the package registry (TRIDENT's CONCH v1.5 vision tower)",
    ),
    KnownEncoder(
        "ctranspath",
        "CTransPath (Swin-T with a convolutional stem)",
        "unavailable",
        "",
        {},
        768,
        "MahmoodLab/hest-bench",
        "fm_v1/ctranspath/CHIEF_CTransPath.pth",
        "GPL-3.0 (code); hest-bench CC-BY-NC-SA-4.0",
        True,
        0.0,
        repo_type="dataset",
        needs="needs timm-ctp, an unofficial fork of timm 0.5.4 that does not fit the pinned timm",
    ),
]

#: Known encoders by TRIDENT's name, in the order they are listed.
KNOWN_ENCODERS: dict[str, KnownEncoder] = {k.name: k for k in _TABLE}
#: Earlier names of this project (and common spellings) -> TRIDENT's name.
ALIASES: dict[str, str] = {alias: k.name for k in _TABLE for alias in k.aliases}


def canonical_name(name: str) -> str:
    """TRIDENT's name for a known encoder's alias (``"uni"`` -> ``"uni_v1"``); other names unchanged."""
    return ALIASES.get(name, name)
