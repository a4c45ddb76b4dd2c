"""Hand-over ([0223]): fine-tune the second model's extractor inside the first model, on pixels.

The first model's trainable patch unit normally sees frozen embeddings. Here the second
model's feature extraction unit (an encoder trained by the tool, architecture
:data:`~.networks.ARCHITECTURE`) is put in front of the first model and both are
trained end to end on the pixels of the selected patches: each step selects patches of
one labelled slide, embeds them with the extractor (with gradients), forms the regional
embeddings of their regions from them (mean of the selected patches of each region),
and runs the regional first model. Afterwards the fine-tuned extractor is saved as a new
frozen encoder; re-embed the cohort with it and train the first model as usual.

This is optional and costly (every step runs a CNN on ``bag_size`` patches): it is off
unless called, and meant for a GPU; tiny settings run on a CPU.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..encoders import load_encoder
from ..errors import EncoderError, TrainingError
from ..jobs import Progress
from ..model.config import ModelConfig
from ..model.first_model import Bag, FirstModel
from ..model.layers import segment_mean
from ..pretrain.mil import read_labelled_slides
from ..pretrain.networks import (
    PatchCNN,
    PretrainResult,
    check_encoder_path,
    register_pretrained_encoder,
    save_pretrained_encoder,
)
from ..pretrain.sampling import augment, sample_patches

__all__ = ["HandoverConfig", "HandoverResult", "fine_tune_handover"]


@dataclass(frozen=True)
class HandoverConfig:
    """Settings of the end-to-end fine-tuning.

    Parameters
    ----------
    patches_per_slide
        Tissue patches sampled per slide (the pool selections are drawn from).
    bag_size
        Selected patches per step.
    epochs
        Passes over the slides.
    learning_rate
        AdamW learning rate of the first model.
    extractor_learning_rate
        Learning rate of the extractor (smaller: it starts pretrained).
    region_size
        k of the regions the selected patches belong to.
    hidden_dim, attention_dim
        Widths of the first model.
    stain_jitter, seed, device, num_readers, tissue_threshold
        As for pretraining.
    """

    patches_per_slide: int = 256
    bag_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    extractor_learning_rate: float = 1e-4
    region_size: int = 8
    hidden_dim: int = 64
    attention_dim: int = 32
    stain_jitter: float = 0.05
    seed: int = 0
    device: str = "cpu"
    num_readers: int = 2
    tissue_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.bag_size < 1 or self.patches_per_slide < 1:
            raise ValueError("need epochs, bag_size and patches_per_slide >= 1")


@dataclass(frozen=True, eq=False)
class HandoverResult:
    """What :func:`fine_tune_handover` returns.

    Parameters
    ----------
    encoder
        The fine-tuned extractor saved as a frozen encoder.
    model
        The first model trained with it (eval mode), on embeddings of that encoder.
    class_names
        Class names in the model's order.
    """

    encoder: PretrainResult
    model: FirstModel
    class_names: tuple[str, ...]


def fine_tune_handover(
    slides: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    labels: str | os.PathLike,
    encoder: str | os.PathLike,
    out: str | os.PathLike,
    config: HandoverConfig = HandoverConfig(),
    class_names: Sequence[str] | None = None,
    slide_mpp: float | None = None,
    register: bool = True,
) -> Generator[Progress, None, HandoverResult]:
    """Train the extractor and the first model end to end on selected patches (a job).

    Parameters
    ----------
    slides
        A folder of slides or a list of slide files.
    labels
        Labels CSV of the first model's task.
    encoder
        An encoder file written by :func:`~.train_autoencoder` or :func:`~.train_mil_encoder`.
    out
        Where the fine-tuned encoder is written (``.safetensors``), at the end only.
    config
        Settings.
    class_names, slide_mpp, register
        As for :func:`~.train_mil_encoder`.

    Raises
    ------
    EncoderError
        ``encoder`` is not an encoder trained by the tool.
    CohortError, TrainingError
        Invalid labels, one class only, too few tissue patches.
    """
    started = time.perf_counter()
    out = check_encoder_path(out)
    frozen = load_encoder(encoder if isinstance(encoder, str) else Path(encoder))
    if not isinstance(frozen.module, PatchCNN):
        raise EncoderError(
            f"{encoder}: the hand-over needs an encoder trained by the tool (pretrain), not {frozen.spec.kind}"
        )
    spec = frozen.spec
    if spec.input_size is None or spec.mpp is None:
        raise EncoderError(f"{encoder}: the encoder does not state its input size and microns per pixel")
    input_size, mpp = int(spec.input_size), float(spec.mpp)
    cohort, paths = read_labelled_slides(slides, labels, class_names=class_names)
    sample = yield from sample_patches(
        paths, patch_size=input_size, mpp=mpp, max_patches=config.patches_per_slide * len(paths),
        min_patches=config.bag_size, region_size=config.region_size, tissue_threshold=config.tissue_threshold,
        seed=config.seed, num_readers=config.num_readers, slide_mpp=slide_mpp,
    )
    label_of = {p: int(label) for p, label in zip(paths, cohort.labels)}
    labels_arr = np.array([label_of[p] for p in sample.slide_paths], dtype=np.int64)
    if np.unique(labels_arr).size < 2:
        raise TrainingError(f"{cohort.path.name}: the slides with tissue hold only one class; the hand-over needs two")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    extractor = copy.deepcopy(frozen.module).to(device).train()
    for param in extractor.parameters():
        param.requires_grad_(True)
    mean_t = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    model_config = ModelConfig(
        input_dim=extractor.output_dim, n_classes=len(cohort.class_names), model_type="regional",
        hidden_dim=config.hidden_dim, attention_dim=config.attention_dim, regional_source="mean", all_regions=False,
    )
    model = FirstModel(model_config).to(device)
    yield Progress("handover", 0, 0, "standardising the initial patch embeddings")
    initial = torch.cat([frozen.embed(sample.patches[i : i + 256]) for i in range(0, len(sample), 256)])
    model.set_feature_normalisation(initial.mean(0).to(device), initial.std(0).to(device))
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": config.learning_rate},
         {"params": extractor.parameters(), "lr": config.extractor_learning_rate}],
        weight_decay=1e-4,
    )
    pools = [sample.of_slide(i) for i in range(len(sample.slide_paths))]
    total = config.epochs * len(pools)
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        extractor.train()
        losses = []
        for step, s in enumerate(torch.randperm(len(pools), generator=generator).tolist()):
            pick = np.sort(pools[s][torch.randperm(len(pools[s]), generator=generator)[: config.bag_size].numpy()])
            x = augment(sample.patches[pick], generator=generator, stain_jitter=config.stain_jitter).to(device)
            features = extractor((x - mean_t) / std_t)
            regions, inverse = torch.unique(torch.from_numpy(sample.region_index[pick].astype(np.int64)),
                                            return_inverse=True)
            inverse = inverse.to(device)
            bag = Bag(
                name=sample.slide_paths[s].stem, features=features, region_index=inverse,
                regional=segment_mean(features, inverse, int(regions.numel())),
            )
            logits = model(bag).logits
            loss = F.cross_entropy(logits.unsqueeze(0), torch.tensor([labels_arr[s]], device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            yield Progress("handover", (epoch - 1) * len(pools) + step + 1, total,
                           f"hand-over epoch {epoch}/{config.epochs}")
        history.append({"epoch": epoch, "loss": float(np.mean(losses))})
        yield Progress(
            "handover", epoch * len(pools), total,
            f"hand-over epoch {epoch}/{config.epochs} loss {history[-1]['loss']:.3f}",
            metrics=dict(history[-1]),
        )
    model.eval()
    provenance = {"initial_encoder": str(encoder), "initial_hash": spec.weights_hash, "labels": str(cohort.path),
                  "classes": list(cohort.class_names), "epochs": config.epochs, "final_loss": history[-1]["loss"]}
    saved = save_pretrained_encoder(
        extractor, out, mpp=mpp, mean=spec.mean, std=spec.std, method="handover", provenance=provenance
    )
    name = register_pretrained_encoder(out) if register else None
    result = PretrainResult(out, saved.spec, tuple(history), time.perf_counter() - started, len(sample), name)
    return HandoverResult(result, model.cpu(), tuple(cohort.class_names))
