"""Pre-training the second model as the encoder of an autoencoder (claim 10, [0218]-[0220]).

A convolutional autoencoder (:class:`~.networks.PatchCNN` with a flattened bottleneck,
and :class:`~.networks.PatchDecoder`) learns to reconstruct augmented tissue patches
sampled from a cohort; afterwards its encoder, up to the bottleneck vector, is saved as a
frozen encoder that every part of the tool accepts (``load_encoder(path)``,
``embed --encoder PATH``, the Embed widget).

Defaults are sized for a CPU: 64 px patches at 2 um/px (the footprint of the default
tiling, 256 px at 0.5 um/px, so the encoder reads patches at the resolution it learnt),
3072 patches, 8 epochs: about 10 minutes on 2 cores. :meth:`AutoencoderConfig.for_gpu`
gives larger settings (128 px at 1 um/px, wider network, 50 000 patches, 30 epochs).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TrainingError
from ..jobs import Progress
from ..pretrain.networks import (
    PatchCNN,
    PatchDecoder,
    PretrainResult,
    check_encoder_path,
    register_pretrained_encoder,
    save_pretrained_encoder,
)
from ..pretrain.sampling import augment, channel_statistics, sample_patches

__all__ = ["AutoencoderConfig", "ReconstructionPreview", "train_autoencoder"]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Settings of autoencoder pretraining.

    Parameters
    ----------
    patch_size, mpp
        Patch side (px) and resolution (um/px) of the training patches; the saved
        encoder's input size and mpp.
    max_patches
        Tissue patches sampled from the cohort (bounds memory and time).
    min_patches
        Fewer tissue patches than this is an error.
    epochs, batch_size
        Passes over the patches and patches per step.
    learning_rate, weight_decay
        AdamW with a cosine schedule.
    embedding_dim
        Dimension of the bottleneck vector.
    stage_features
        The saved encoder's patch embedding is the bottleneck vector followed by the
        global average of each stage's feature map (``embedding_dim + sum(widths)``
        dimensions); ``False``: the bottleneck vector only.
    widths
        Channels of the encoder's stages (each halves the resolution).
    loss
        ``"mse"`` or ``"l1"`` reconstruction loss.
    stain_jitter
        Strength of the haematoxylin/eosin jitter (0: off); flips and rotations always.
    preview_patches
        Patches shown as original vs reconstruction after each epoch.
    seed
        Seeds sampling, weights, augmentations and order.
    device
        ``"cpu"`` or ``"cuda[:i]"``.
    num_readers
        Patch reader threads.
    tissue_threshold
        Minimum tissue fraction of a sampled patch.
    """

    patch_size: int = 64
    mpp: float = 2.0
    max_patches: int = 3072
    min_patches: int = 64
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    embedding_dim: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 64)
    stage_features: bool = True
    loss: Literal["mse", "l1"] = "mse"
    stain_jitter: float = 0.05
    preview_patches: int = 6
    seed: int = 0
    device: str = "cpu"
    num_readers: int = 2
    tissue_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_patches < 1 or self.learning_rate <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1, max_patches >= 1 and learning_rate > 0")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', got {self.loss!r}")
        factor = 2 ** len(self.widths)
        if self.patch_size < factor or self.patch_size % factor:
            raise ValueError(
                f"patch_size must be a multiple of {factor} for {len(self.widths)} stages, got {self.patch_size}"
            )
        if not self.mpp > 0:
            raise ValueError(f"mpp must be positive, got {self.mpp}")

    @classmethod
    def for_gpu(cls, **changes: Any) -> AutoencoderConfig:
        """Larger settings for a GPU: 128 px at 1 um/px, 5 stages up to 256 channels, 50 000 patches."""
        base = cls(
            patch_size=128, mpp=1.0, max_patches=50_000, epochs=30, batch_size=256, embedding_dim=256,
            widths=(32, 64, 128, 256, 256), device="cuda", num_readers=8,
        )
        return replace(base, **changes)


@dataclass(frozen=True, eq=False)
class ReconstructionPreview:
    """Original and reconstructed patches (uint8 ``(n, s, s, 3)``) for the GUI.

    Parameters
    ----------
    originals, reconstructions
        The patches and the autoencoder's reconstructions of them.
    epoch
        The epoch after which they were made.
    loss
        Mean reconstruction loss on these patches.
    """

    originals: np.ndarray
    reconstructions: np.ndarray
    epoch: int
    loss: float

    def montage(self, *, gap: int = 2) -> np.ndarray:
        """One RGB image: originals on the top row, reconstructions below (white gaps)."""
        n, s = self.originals.shape[:2]
        out = np.full((2 * s + gap, n * s + (n - 1) * gap, 3), 255, np.uint8)
        for i in range(n):
            x = i * (s + gap)
            out[:s, x : x + s] = self.originals[i]
            out[s + gap :, x : x + s] = self.reconstructions[i]
        return out


def _loss(kind: str, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(recon, target) if kind == "mse" else F.l1_loss(recon, target)


def train_autoencoder(
    slides: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    config: AutoencoderConfig = AutoencoderConfig(),
    slide_mpp: float | None = None,
    register: bool = True,
) -> Generator[Progress, None, PretrainResult]:
    """Train a convolutional autoencoder on tissue patches; save its encoder (a job).

    Parameters
    ----------
    slides
        A folder of slides or a list of slide files.
    out
        The encoder file to write (one ``.safetensors`` file: weights and description). Written
        once, atomically, at the end: cancelling leaves an earlier file untouched.
    config
        Sizes and optimisation settings.
    slide_mpp
        Level-0 um/px for slides that lack it.
    register
        Register the encoder under its file stem in this process (see
        :func:`~.networks.register_pretrained_encoder`).

    Yields
    ------
    Progress
        ``stage="sample"`` while reading patches, then ``stage="pretrain"`` with
        ``done``/``total`` in steps and ``rate`` in patches/s; one event per epoch
        carries ``metrics``: ``epoch``, ``loss``, ``preview_loss``, ``lr`` and
        ``preview`` (a :class:`ReconstructionPreview`).

    Returns
    -------
    PretrainResult
        The saved encoder; ``extra["preview"]`` is the last reconstruction preview.

    Raises
    ------
    TrainingError
        Too few tissue patches.
    EncoderError
        The output path is not a writable ``.safetensors`` file.
    """
    started = time.perf_counter()
    out = check_encoder_path(out)
    sample = yield from sample_patches(
        slides, patch_size=config.patch_size, mpp=config.mpp, max_patches=config.max_patches,
        min_patches=config.min_patches, tissue_threshold=config.tissue_threshold, seed=config.seed,
        num_readers=config.num_readers, slide_mpp=slide_mpp,
    )
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {config.device} asked but CUDA is not available")
    mean, std = channel_statistics(sample.patches)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    encoder = PatchCNN(config.patch_size, config.widths, config.embedding_dim, "flatten",
                       config.stage_features).to(device)
    decoder = PatchDecoder(encoder).to(device)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    n = len(sample)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total = steps_per_epoch * config.epochs

    def cosine(step: int) -> float:  # the learning-rate factor: half a cosine over every step
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    shown = np.linspace(0, n - 1, min(config.preview_patches, n)).astype(np.int64)
    history: list[dict[str, float]] = []
    preview = None
    t0, seen = time.perf_counter(), 0
    for epoch in range(1, config.epochs + 1):
        encoder.train()
        decoder.train()
        order = torch.randperm(n, generator=generator).numpy()
        losses = []
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
            x = augment(sample.patches[idx], generator=generator, stain_jitter=config.stain_jitter).to(device)
            loss = _loss(config.loss, decoder(encoder.bottleneck((x - mean_t) / std_t)), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            seen += len(idx)
            done = (epoch - 1) * steps_per_epoch + step + 1
            yield Progress(
                "pretrain", done, total, f"autoencoder epoch {epoch}/{config.epochs} loss {losses[-1]:.4f}",
                rate=seen / max(time.perf_counter() - t0, 1e-9),
            )
        preview = _preview(encoder, decoder, sample.patches[shown], mean_t, std_t, config.loss, epoch)
        metrics = {
            "epoch": epoch, "loss": float(np.mean(losses)), "preview_loss": preview.loss,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        history.append(dict(metrics))
        yield Progress(
            "pretrain", epoch * steps_per_epoch, total,
            f"autoencoder epoch {epoch}/{config.epochs} loss {metrics['loss']:.4f}",
            rate=seen / max(time.perf_counter() - t0, 1e-9), metrics={**metrics, "preview": preview},
        )
    yield Progress("pretrain", total, total, f"saving the encoder to {out.name}")
    provenance = {
        "slides": [p.name for p in sample.slide_paths], "n_patches": n, "config": _jsonable(asdict(config)),
        "final_loss": history[-1]["loss"],
    }
    frozen = save_pretrained_encoder(encoder, out, mpp=config.mpp, mean=mean, std=std, method="autoencoder",
                                     provenance=provenance)
    name = register_pretrained_encoder(out) if register else None
    return PretrainResult(
        out, frozen.spec, tuple(history), time.perf_counter() - started, n, name,
        {"preview": preview, "skipped": sample.skipped},
    )


@torch.no_grad()
def _preview(
    encoder: PatchCNN, decoder: PatchDecoder, patches: np.ndarray, mean_t: torch.Tensor, std_t: torch.Tensor,
    kind: str, epoch: int,
) -> ReconstructionPreview:
    encoder.eval()
    decoder.eval()
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div(255.0).to(mean_t.device)
    recon = decoder(encoder.bottleneck((x - mean_t) / std_t))
    loss = float(_loss(kind, recon, x))
    as_uint8 = (recon.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return ReconstructionPreview(np.ascontiguousarray(patches), as_uint8, epoch, loss)


def _jsonable(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
