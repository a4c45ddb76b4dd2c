"""Training the first model: a job (generator) yielding progress and per-epoch metrics.

One optimisation step sees the selected patches of one slide (or accumulates several
slides); each epoch ends with a validation pass over every patch of the validation
slides (inference mode), and the weights with the best validation AUC are kept (early
stopping). Same data, same config, same seed: the same weights on CPU.

The decision threshold stored with the model is a fixed value or is chosen on the
validation slides' predictions by the best model (:class:`~.evaluation.ThresholdRule`:
Youden's J, a target sensitivity or specificity), never on test slides.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..clinical import ClinicalSpec, fit_clinical_encoding
from ..errors import TrainingError
from ..jobs import Progress
from ..model.checkpoint import Checkpoint, save_checkpoint
from ..model.config import ModelConfig
from ..model.first_model import FirstModel
from ..settings import DEFAULT_TRAIN_CONFIG, TrainConfig
from .datasets import LabelledSlide, clinical_records, common_provenance
from .device import autocast, bag_to, grad_scaler, resolve_device
from .evaluation import ThresholdRule, decide, tune_threshold
from .memory import feature_statistics, prepare_slides
from .metrics import balanced_accuracy, cross_entropy, roc_auc
from .predict import predict_bags, set_slide_reference
from .streaming import BagSequence, StepLoader, make_selector, training_moments

__all__ = ["DEFAULT_TRAIN_CONFIG", "TrainConfig", "TrainResult", "adapt_model_config", "split_validation",
           "train_model"]

@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train_model` returns.

    Parameters
    ----------
    checkpoint
        The trained model (best epoch) with class names and provenance, ready to save.
    history
        One dict of metrics per epoch (``epoch``, ``train_loss``, ``val_loss``, ...).
    best_epoch
        The epoch whose weights were kept (1-based).
    validation_slides
        Names of the slides used for early stopping.
    """

    checkpoint: Checkpoint
    history: tuple[dict[str, float], ...]
    best_epoch: int
    validation_slides: tuple[str, ...] = ()

    @property
    def model(self) -> FirstModel:
        """The trained first model (eval mode)."""
        return self.checkpoint.model

    def save(self, path: str | Path) -> Path:
        """Save the checkpoint atomically (see :func:`~napari_regional_mil.model.checkpoint.save_checkpoint`)."""
        return save_checkpoint(self.checkpoint, path)


def adapt_model_config(config: ModelConfig, slides: Sequence[LabelledSlide]) -> ModelConfig:
    """Switch the regional parts off (with a warning) when a slide has no regions.

    Bags of features without coordinates (CLAM/TRIDENT h5, npz) run as patch-level MIL.
    """
    lacking = [s.name for s in slides if not s.embeddings.has_regions]
    if config.uses_regions and lacking:
        warnings.warn(
            f"{len(lacking)} slide(s) have no patch grid/regions (e.g. {lacking[0]!r}): the regional parts "
            "are switched off and the model runs as patch-level gated-attention MIL",
            UserWarning,
            stacklevel=2,
        )
        return config.without_regions()
    return config


def split_validation(
    labels: np.ndarray, patients: np.ndarray, *, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the patients of every class (patients never split).

    Returns
    -------
    (train_indices, val_indices)
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients, dtype=object)
    if fraction <= 0:
        return np.arange(labels.size), np.zeros(0, dtype=np.int64)
    unique = list(dict.fromkeys(patients.tolist()))
    patient_label = {p: np.bincount(labels[patients == p]).argmax() for p in unique}
    held: list[Any] = []
    for c in np.unique(labels):
        members = [p for p in unique if patient_label[p] == c]
        n = round(fraction * len(members))
        n = min(max(n, 1), len(members) - 1) if len(members) >= 2 else 0
        order = rng.permutation(len(members))
        held.extend(members[i] for i in order[:n])
    is_val = np.isin(patients, np.array(held, dtype=object))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _class_weights(config: TrainConfig, labels: np.ndarray, n_classes: int) -> torch.Tensor | None:
    if config.class_weights == "none":
        return None
    if config.class_weights == "balanced":
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        return torch.tensor(labels.size / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    weights = tuple(float(w) for w in config.class_weights)
    if len(weights) != n_classes:
        raise TrainingError(f"{len(weights)} class weights given for {n_classes} classes")
    return torch.tensor(weights, dtype=torch.float32)


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        pct = min(0.5, max(0.05, config.warmup_epochs / config.epochs))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=total_steps, pct_start=pct
        )
    warmup = config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_model(
    slides: Sequence[LabelledSlide],
    *,
    class_names: Sequence[str],
    model_config: ModelConfig | None = None,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    validation: Sequence[LabelledSlide] | None = None,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train the first model (a job: yields :class:`~napari_regional_mil.jobs.Progress`).

    Parameters
    ----------
    slides
        Labelled training slides (plus validation slides when ``validation`` is None
        and ``config.val_fraction > 0``: a stratified, patient-grouped split is held out).
    class_names
        Class names in the order of the labels.
    model_config
        Hyper-parameters; default: the regional model on the slides' embedding dimension.
        Regional parts switch off with a warning for bags without regions.
    config
        Optimisation settings.
    validation
        Explicit validation slides (early stopping), or ``None``.
    clinical
        Clinical variables to fuse with the slide ([0279]): their encoding is fitted on
        the training slides' ``LabelledSlide.clinical`` values (never the validation
        slides') and stored in the model's config.

    Yields
    ------
    Progress
        ``stage="train"``, ``done``/``total`` in slides; one event per epoch carries
        ``metrics``: ``epoch``, ``train_loss``, ``train_auc``, ``val_loss``, ``val_auc``,
        ``val_bacc``, ``lr``, ``best_epoch`` (validation ones are ``nan`` without validation).

    Returns
    -------
    TrainResult
        The best model with its history. Closing the generator stops training and
        writes nothing.
    """
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(max(1, int(config.threads)))
    try:
        return (yield from _train(slides, class_names, model_config, config, validation, clinical))
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    slides: Sequence[LabelledSlide],
    class_names: Sequence[str],
    model_config: ModelConfig | None,
    config: TrainConfig,
    validation: Sequence[LabelledSlide] | None,
    clinical: ClinicalSpec | None = None,
) -> Generator[Progress, None, TrainResult]:
    slides = list(slides)
    if not slides:
        raise TrainingError("no training slides")
    # in memory when the cohort fits, else streamed from the caches (stated in the log)
    held = yield from prepare_slides(slides + list(validation or []), mode=config.stream)
    slides, validation = held[: len(slides)], (None if validation is None else held[len(slides) :])
    n_classes = len(class_names)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if validation is None:
        labels = np.array([s.label for s in slides])
        train_idx, val_idx = split_validation(
            labels, np.array([s.patient for s in slides], dtype=object), fraction=config.val_fraction, rng=rng
        )
        validation = [slides[i] for i in val_idx]
        slides = [slides[i] for i in train_idx]
    validation = list(validation)
    train_labels = np.array([s.label for s in slides], dtype=np.int64)
    if np.unique(train_labels).size < 2:
        raise TrainingError(f"the training slides hold only one class ({class_names[int(train_labels[0])]!r})")
    if model_config is None:
        model_config = ModelConfig(input_dim=slides[0].embeddings.embedding_dim, n_classes=n_classes)
    model_config = adapt_model_config(model_config, slides + validation)
    if model_config.n_classes != n_classes:
        model_config = replace(model_config, n_classes=n_classes)
    rule = _check_threshold_rule(config, n_classes, validation)
    device = resolve_device(config.device)
    encoder, tiling = common_provenance(slides + validation)
    if clinical is not None:
        # statistics from the training slides only; the levels also from the validation slides
        clinical = clinical.knowing(clinical_records(slides + validation))
        encoding = fit_clinical_encoding(clinical_records(slides), clinical)
        model_config = replace(model_config, clinical=encoding)
    selector = make_selector(slides, model_config)
    bags = StepLoader(slides, model_config, selector)  # in-memory bags, or compact ones read per step
    val_bags = BagSequence(validation, model_config, device=device)  # one slide at a time when streamed
    val_labels = np.array([s.label for s in validation], dtype=np.int64)

    model = FirstModel(model_config)
    model.set_feature_normalisation(*feature_statistics(training_moments(bags)))  # on the CPU
    bags.to(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(bags) / config.slides_per_step)
    scheduler = _scheduler(config, optimizer, steps_per_epoch * config.epochs, steps_per_epoch)
    weights = _class_weights(config, train_labels, n_classes)
    weights = None if weights is None else weights.to(device)
    targets = torch.from_numpy(train_labels).to(device)
    scaler = grad_scaler(device)

    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = copy.deepcopy(model.state_dict())
    best_key, best_epoch = (-math.inf, math.inf), 0
    total = config.epochs * len(bags)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(bags))
        losses, train_probs = [], np.zeros((len(bags), n_classes))
        optimizer.zero_grad(set_to_none=True)
        steps = bags.epoch(order, rng)  # read ahead in the background when streamed; closed on any exit
        for step, batch in enumerate(steps):
            i, selected = batch.index, batch.selected
            with autocast(device):
                out = model(bag_to(batch.bag, device), batch.local.to(device))
                logits = out.logits.float()
                loss = F.cross_entropy(logits.unsqueeze(0), targets[i : i + 1], weight=weights)
            selector.observe(i, selected, out.patch_attention.detach().float().cpu().numpy())
            scaler.scale(loss / config.slides_per_step).backward()
            losses.append(float(loss.detach()))
            train_probs[i] = torch.softmax(logits.detach(), -1).cpu().numpy()
            if (step + 1) % config.slides_per_step == 0 or step + 1 == len(order):
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if step % 16 == 15:
                yield Progress("train", (epoch - 1) * len(bags) + step + 1, total, f"epoch {epoch}/{config.epochs}")
        metrics: dict[str, float] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "train_auc": roc_auc(train_probs, train_labels),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "val_loss": math.nan,
            "val_auc": math.nan,
            "val_bacc": math.nan,
        }
        if val_bags:
            probs = predict_bags(model, val_bags, device=device)
            predicted = np.asarray(decide(probs, rule.target, 1))
            metrics.update(
                val_loss=cross_entropy(probs, val_labels),
                val_auc=roc_auc(probs, val_labels),
                val_bacc=balanced_accuracy(predicted, val_labels, n_classes),
            )
            auc = -math.inf if math.isnan(metrics["val_auc"]) else metrics["val_auc"]
            if _improved(auc, metrics["val_loss"], best_key):
                best_key, best_epoch, best_state = (auc, metrics["val_loss"]), epoch, copy.deepcopy(model.state_dict())
        else:
            best_epoch, best_state = epoch, None  # no validation: keep the last epoch
        metrics["best_epoch"] = best_epoch
        history.append(metrics)
        elapsed = time.perf_counter() - started
        yield Progress(
            "train",
            epoch * len(bags),
            total,
            _summary(metrics, config.epochs),
            rate=epoch * len(bags) / max(elapsed, 1e-9),
            metrics=dict(metrics),
        )
        if val_bags and epoch >= config.min_epochs and epoch - best_epoch >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if model_config.clinical is not None:
        set_slide_reference(model, bags.whole_bags())
    threshold = rule.target
    if rule.tuned:
        val_probs = predict_bags(model, val_bags, device=device)
        threshold = tune_threshold(rule, val_probs, val_labels, 1)
    model.to("cpu")
    yield Progress("train", total, total, f"done: best epoch {best_epoch}", metrics={"best_epoch": best_epoch})
    best = history[best_epoch - 1]
    summary = {
        "model_type": model_config.model_type,
        "clinical": [] if model_config.clinical is None else list(model_config.clinical.names),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val_auc": best["val_auc"],
        "best_val_bacc": best["val_bacc"],
        "n_train": len(bags),
        "n_val": len(val_bags),
        "class_counts": np.bincount(train_labels, minlength=n_classes).tolist(),
        "threshold": threshold,
        "threshold_rule": rule.text,
        "threshold_tuned_on": f"{len(val_bags)} validation slides" if rule.tuned else None,
        "device": str(device),
        "train_config": asdict(config),
        "seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    checkpoint = Checkpoint(
        model=model,
        class_names=tuple(class_names),
        threshold=threshold,
        encoder=encoder,
        tiling=tiling,
        training=summary,
    )
    return TrainResult(checkpoint, tuple(history), best_epoch, tuple(s.name for s in validation))


def _check_threshold_rule(config: TrainConfig, n_classes: int, validation: Sequence[LabelledSlide]) -> ThresholdRule:
    """The threshold rule, refused before training when it cannot be tuned."""
    rule = config.threshold_rule
    if not rule.tuned:
        return rule
    if n_classes != 2:
        raise TrainingError(f"--threshold {rule.text} applies to binary models; this cohort has {n_classes} classes")
    labels = {s.label for s in validation}
    if len(labels) < 2:
        held = "no validation slides" if not validation else "validation slides of one class only"
        raise TrainingError(
            f"--threshold {rule.text} is tuned on the validation slides, but there are {held}; "
            "mark both classes' slides split=val in the cohort, or raise --val-fraction"
        )
    return rule


#: Smallest change of validation AUC (or, at equal AUC, of validation loss) that counts as better.
MIN_DELTA = 1e-4


def _improved(auc: float, loss: float, best: tuple[float, float]) -> bool:
    best_auc, best_loss = best
    if auc > best_auc + MIN_DELTA or (best_auc == -math.inf and auc > best_auc):
        return True
    return auc >= best_auc - 1e-12 and loss < best_loss - MIN_DELTA


def _summary(metrics: dict[str, float], epochs: int) -> str:
    text = f"epoch {int(metrics['epoch'])}/{epochs} loss {metrics['train_loss']:.3f}"
    if not math.isnan(metrics["val_auc"]):
        text += f" val_auc {metrics['val_auc']:.3f}"
    return text
