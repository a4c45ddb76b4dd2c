"""Pre-training the second model as an attention-MIL classifier (claims 7-9, [0211]-[0214], Fig. 6).

Patches are sampled from labelled training slides; each step takes a bag of patches of
one slide, embeds each with the feature extraction unit (a small CNN,
:class:`~.networks.PatchCNN` with global average pooling), combines them into one joint
vector with gated attention, classifies it and updates everything end to end from the
cross-entropy loss. Afterwards the feature extraction unit is saved as the second model
(a frozen encoder). The classes may be the first model's (claim 8) or others (claim 9):
any labels CSV (``slide,label[,patient][,split]``, :mod:`~napari_regional_mil.training.cohort`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TrainingError
from ..jobs import Progress
from ..model.layers import GatedAttention
from ..pretrain.networks import (
    PatchCNN,
    PretrainResult,
    check_encoder_path,
    register_pretrained_encoder,
    save_pretrained_encoder,
)
from ..pretrain.sampling import augment, channel_statistics, list_slides, sample_patches
from ..training.cohort import Cohort, read_cohort, slide_key

__all__ = ["AttentionMilPretrainer", "MilPretrainConfig", "read_labelled_slides", "train_mil_encoder"]


@dataclass(frozen=True)
class MilPretrainConfig:
    """Settings of attention-MIL pretraining.

    Parameters
    ----------
    patch_size, mpp
        Patch side (px) and resolution (um/px); the saved encoder's input size and mpp.
    patches_per_slide
        Tissue patches sampled per slide (the pool bags are drawn from).
    bag_size
        Patches per bag (one bag of one slide per step).
    epochs
        Passes over the slides (each slide gives ``bags_per_slide`` bags per epoch).
    bags_per_slide
        Bags drawn from each slide per epoch.
    learning_rate, weight_decay
        AdamW with a cosine schedule.
    embedding_dim, attention_dim
        Patch embedding (the extractor's output) and gated-attention widths.
    widths
        Channels of the extractor's stages.
    stage_features
        The patch embedding is the head's output followed by the global average of each
        stage's feature map (as for the autoencoder); the attention and the classifier
        read the whole embedding, so the saved extractor is exactly what was trained.
    class_weights
        ``"balanced"`` (inverse class frequency) or ``"none"``.
    stain_jitter
        Haematoxylin/eosin jitter (flips and rotations always).
    seed, device, num_readers, tissue_threshold
        As for the autoencoder.
    """

    patch_size: int = 64
    mpp: float = 2.0
    patches_per_slide: int = 256
    bag_size: int = 32
    epochs: int = 15
    bags_per_slide: int = 2
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    embedding_dim: int = 128
    attention_dim: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 64)
    stage_features: bool = True
    class_weights: str = "balanced"
    stain_jitter: float = 0.05
    seed: int = 0
    device: str = "cpu"
    num_readers: int = 2
    tissue_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.bag_size < 1 or self.patches_per_slide < 1 or self.bags_per_slide < 1:
            raise ValueError("need epochs, bag_size, patches_per_slide and bags_per_slide >= 1")
        if self.class_weights not in ("balanced", "none"):
            raise ValueError(f"class_weights must be 'balanced' or 'none', got {self.class_weights!r}")
        factor = 2 ** len(self.widths)
        if self.patch_size < factor or self.patch_size % factor:
            raise ValueError(
                f"patch_size must be a multiple of {factor} for {len(self.widths)} stages, got {self.patch_size}"
            )

    @classmethod
    def for_gpu(cls, **changes: Any) -> MilPretrainConfig:
        """Larger settings for a GPU: 128 px at 1 um/px, wider extractor, bigger bags."""
        base = cls(
            patch_size=128, mpp=1.0, patches_per_slide=2048, bag_size=128, epochs=40, bags_per_slide=4,
            embedding_dim=256, widths=(32, 64, 128, 256, 256), device="cuda", num_readers=8,
        )
        return replace(base, **changes)


class AttentionMilPretrainer(nn.Module):
    """Feature extraction unit + gated attention + classifier, trained end to end (Fig. 6).

    Parameters
    ----------
    extractor
        The feature extraction unit (becomes the second model).
    n_classes
        Number of classes.
    attention_dim
        Width of the gated attention.
    """

    def __init__(self, extractor: PatchCNN, n_classes: int, attention_dim: int = 64) -> None:
        super().__init__()
        self.extractor = extractor
        self.attention = GatedAttention(extractor.output_dim, attention_dim)
        self.classifier = nn.Linear(extractor.output_dim, n_classes)

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised patches of one bag ``(M, 3, s, s)`` -> ``(logits (C,), attention (M,))``."""
        joint, weights = self.attention(self.extractor(patches))
        return self.classifier(joint), weights


def read_labelled_slides(
    slides: str | os.PathLike | Sequence[str | os.PathLike],
    labels: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
) -> tuple[Cohort, list[Path]]:
    """Match a labels CSV to slide files.

    Returns
    -------
    (cohort, paths)
        The validated :class:`~napari_regional_mil.training.cohort.Cohort` and the slide
        file of each of its rows.

    Raises
    ------
    CohortError
        Invalid CSV (one class, unknown label, ...) or a row whose slide is not among ``slides``.
    """
    files = {slide_key(p.name): p for p in list_slides(slides)}
    cohort = read_cohort(
        labels, class_names=class_names, slide_exists=lambda row: row.name in files,
        unknown_slide_hint=f"not among the {len(files)} slide files given",
    )
    return cohort, [files[row.name] for row in cohort.rows]


def train_mil_encoder(
    slides: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    labels: str | os.PathLike,
    out: str | os.PathLike,
    config: MilPretrainConfig = MilPretrainConfig(),
    class_names: Sequence[str] | None = None,
    slide_mpp: float | None = None,
    register: bool = True,
) -> Generator[Progress, None, PretrainResult]:
    """Train an attention-MIL classifier on labelled slides; save its feature extractor (a job).

    Parameters
    ----------
    slides
        A folder of slides or a list of slide files (every CSV row must be among them).
    labels
        Labels CSV ``slide,label[,patient][,split]``.
    out
        The encoder file to write (``.safetensors``), atomically, at the end only.
    config
        Sizes and optimisation settings.
    class_names
        Class order (default: the labels, sorted).
    slide_mpp
        Level-0 um/px for slides that lack it.
    register
        Register the encoder under its file stem in this process.

    Yields
    ------
    Progress
        ``stage="sample"``, then ``stage="pretrain"`` (``done``/``total`` in bags,
        ``rate`` in patches/s); one event per epoch carries ``metrics``: ``epoch``,
        ``loss``, ``accuracy`` (training bags), ``lr``.

    Raises
    ------
    CohortError
        Invalid labels CSV, e.g. one class only.
    TrainingError
        The slides with tissue hold one class only; too few tissue patches.
    """
    started = time.perf_counter()
    out = check_encoder_path(out)
    cohort, paths = read_labelled_slides(slides, labels, class_names=class_names)
    sample = yield from sample_patches(
        paths, patch_size=config.patch_size, mpp=config.mpp, max_patches=config.patches_per_slide * len(paths),
        min_patches=config.bag_size, tissue_threshold=config.tissue_threshold, seed=config.seed,
        num_readers=config.num_readers, slide_mpp=slide_mpp,
    )
    label_of = {p: int(label) for p, label in zip(paths, cohort.labels)}
    labels_arr = np.array([label_of[p] for p in sample.slide_paths], dtype=np.int64)
    present = np.unique(labels_arr)
    if present.size < 2:
        skipped = f" ({len(sample.skipped)} slide(s) without tissue left out)" if sample.skipped else ""
        raise TrainingError(
            f"{cohort.path.name}: the slides with tissue hold only one class ({cohort.class_names[int(present[0])]!r})"
            f"{skipped}; attention-MIL pretraining needs at least two"
        )
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {config.device} asked but CUDA is not available")
    n_classes = len(cohort.class_names)
    mean, std = channel_statistics(sample.patches)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    extractor = PatchCNN(config.patch_size, config.widths, config.embedding_dim, "mean", config.stage_features)
    model = AttentionMilPretrainer(extractor, n_classes, config.attention_dim).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    pools = [sample.of_slide(i) for i in range(len(sample.slide_paths))]
    bags = np.repeat(np.arange(len(pools)), config.bags_per_slide)
    total = config.epochs * len(bags)

    def cosine(step: int) -> float:  # the learning-rate factor: half a cosine over every step
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    weights = None
    if config.class_weights == "balanced":
        counts = np.bincount(labels_arr, minlength=n_classes).astype(np.float64)
        weights = torch.tensor(labels_arr.size / (n_classes * np.maximum(counts, 1)), dtype=torch.float32,
                               device=device)
    history: list[dict[str, float]] = []
    t0, seen = time.perf_counter(), 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = bags[torch.randperm(len(bags), generator=generator).numpy()]
        losses, correct = [], 0
        for step, s in enumerate(order):
            pool = pools[s]
            pick = torch.randperm(len(pool), generator=generator)[: config.bag_size].numpy()
            x = augment(sample.patches[np.sort(pool[pick])], generator=generator, stain_jitter=config.stain_jitter)
            logits, _ = model((x.to(device) - mean_t) / std_t)
            target = torch.tensor([labels_arr[s]], device=device)
            loss = F.cross_entropy(logits.unsqueeze(0), target, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            correct += int(int(logits.argmax()) == int(labels_arr[s]))
            seen += len(pick)
            done = (epoch - 1) * len(bags) + step + 1
            yield Progress(
                "pretrain", done, total, f"attention-MIL epoch {epoch}/{config.epochs} loss {losses[-1]:.3f}",
                rate=seen / max(time.perf_counter() - t0, 1e-9),
            )
        metrics = {
            "epoch": epoch, "loss": float(np.mean(losses)), "accuracy": correct / len(order),
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        history.append(metrics)
        yield Progress(
            "pretrain", epoch * len(bags), total,
            f"attention-MIL epoch {epoch}/{config.epochs} loss {metrics['loss']:.3f} acc {metrics['accuracy']:.2f}",
            rate=seen / max(time.perf_counter() - t0, 1e-9), metrics=dict(metrics),
        )
    yield Progress("pretrain", total, total, f"saving the encoder to {out.name}")
    provenance = {
        "slides": [p.name for p in sample.slide_paths], "labels": str(cohort.path), "classes": list(cohort.class_names),
        "n_patches": len(sample),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "final_loss": history[-1]["loss"],
    }
    frozen = save_pretrained_encoder(
        model.extractor, out, mpp=config.mpp, mean=mean, std=std, method="attention-mil", provenance=provenance
    )
    name = register_pretrained_encoder(out) if register else None
    return PretrainResult(
        out, frozen.spec, tuple(history), time.perf_counter() - started, len(sample), name,
        {"class_names": cohort.class_names, "skipped": sample.skipped},
    )
