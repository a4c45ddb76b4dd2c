"""Training the second model: autoencoder and attention-MIL pretraining, hand-over.

>>> from napari_regional_mil.jobs import run_job
>>> from napari_regional_mil.pretrain import train_autoencoder
>>> result = run_job(train_autoencoder("slides/", out="my_encoder.safetensors"))
>>> load_encoder("my_encoder.safetensors")            # everywhere an encoder is accepted
"""

from ..pretrain.autoencoder import (
    AutoencoderConfig,
    ReconstructionPreview,
    train_autoencoder,
)
from ..pretrain.handover import HandoverConfig, HandoverResult, fine_tune_handover
from ..pretrain.mil import AttentionMilPretrainer, MilPretrainConfig, train_mil_encoder
from ..pretrain.networks import (
    ARCHITECTURE,
    PatchCNN,
    PatchDecoder,
    PretrainResult,
    register_pretrained_encoder,
    save_pretrained_encoder,
)
from ..pretrain.sampling import PatchSample, augment, list_slides, sample_patches

__all__ = [
    "ARCHITECTURE",
    "AttentionMilPretrainer",
    "AutoencoderConfig",
    "HandoverConfig",
    "HandoverResult",
    "MilPretrainConfig",
    "PatchCNN",
    "PatchDecoder",
    "PatchSample",
    "PretrainResult",
    "ReconstructionPreview",
    "augment",
    "fine_tune_handover",
    "list_slides",
    "register_pretrained_encoder",
    "sample_patches",
    "save_pretrained_encoder",
    "train_autoencoder",
    "train_mil_encoder",
]
