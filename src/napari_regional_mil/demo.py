"""The demo (the README's main job), without the GUI: synthesise, embed, train, predict.

:func:`run_demo` is a job (a generator yielding :class:`~napari_regional_mil.jobs.Progress`)
composed only of the core's own steps:

1. :func:`~napari_regional_mil.synth.cohort.write_synthetic_cohort` writes a small cohort
   of the ``context`` task (the label depends on *where* the lymphocyte motif lies: in
   tumour regions, ``inflamed``; in stroma, ``excluded``), with its ground truth;
2. one positive and one negative slide are held out (``split=test`` in ``cohort.csv``,
   written by :class:`~napari_regional_mil.training.cohort_table.CohortTable`);
3. :func:`~napari_regional_mil.embedding.pipeline.embed_slide` embeds every slide with the
   built-in encoder (``builtin-he``, no download);
4. :func:`~napari_regional_mil.training.workflow.load_and_train_cohort` trains the regional
   model (the same path as ``napari-regional-mil train``) and the checkpoint is saved;
5. :func:`~napari_regional_mil.training.predict.predict_slide` predicts the held-out
   slides; ``predictions.csv`` and the attention files are written.

The napari part (opening the held-out positive slide with its heatmaps) lives in
:mod:`napari_regional_mil._widgets._demo_view`; the command in :mod:`~.cli.cmd_demo`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .embedding.store import find_slide_cache, load_slide_embeddings
from .embedding.workflow import embed_slides
from .jobs import Progress
from .model.checkpoint import save_checkpoint
from .model.config import SelectionConfig
from .synth.cohort import CLASS_NAMES, SlideLayout, write_synthetic_cohort
from .tiling import TilingParams
from .training.cohort import read_cohort
from .training.cohort_table import CohortTable
from .training.predict import attention_path, predict_slide, write_attention
from .training.train import TrainConfig
from .training.workflow import ModelOptions, load_and_train_cohort

__all__ = ["FAST", "DemoResult", "DemoSettings", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo (defaults: about two minutes on a 2-core CPU).

    Parameters
    ----------
    n_slides
        Slides in the synthetic cohort (pairs of one positive and one negative; >= 6).
    seed
        Seeds the cohort and training.
    patch_px
        Patch side in px at 0.5 um/px.
    region_size
        k: regions of k x k patches.
    region_grid
        ``(rows, cols)`` of regions per slide.
    epochs
        Training epochs (no early stopping: the cohort is too small to spare a validation set).
    hidden_dim, attention_dim
        Widths of the first model.
    min_patches, max_patches
        Patches selected per training step.
    """

    n_slides: int = 12
    seed: int = 0
    patch_px: int = 32
    region_size: int = 6
    region_grid: tuple[int, int] = (4, 5)
    epochs: int = 30
    hidden_dim: int = 64
    attention_dim: int = 32
    min_patches: int = 48
    max_patches: int = 128

    def __post_init__(self) -> None:
        if self.n_slides < 6:
            raise ValueError(f"the demo needs at least 6 slides, got {self.n_slides}")


#: Tiny settings for tests (a few seconds of training).
FAST = DemoSettings(n_slides=6, region_grid=(3, 4), region_size=4, epochs=3, hidden_dim=16, attention_dim=8,
                    min_patches=8, max_patches=32)


@dataclass(frozen=True, eq=False)
class DemoResult:
    """What :func:`run_demo` wrote and computed.

    Parameters
    ----------
    out_dir
        The demo folder.
    cohort_csv
        ``cohort.csv`` (``slide,label,split``; the held-out slides have ``split=test``).
    cache_dir
        The embedding cache.
    model_path
        The trained checkpoint.
    predictions_csv
        ``predictions.csv``: ``slide,label,predicted,prob_<class>...`` of the held-out slides.
    slide_path
        The held-out positive slide (shown in napari).
    truth_path
        Its ground truth (``<slide>.truth.json``).
    predictions
        ``{slide name: SlidePrediction}`` of the held-out slides.
    class_names
        The classes.
    history
        Per-epoch training metrics.
    """

    out_dir: Path
    cohort_csv: Path
    cache_dir: Path
    model_path: Path
    predictions_csv: Path
    slide_path: Path
    truth_path: Path
    predictions: dict[str, Any] = field(repr=False)
    class_names: tuple[str, ...] = ()
    history: tuple[dict[str, float], ...] = field(default=(), repr=False)

    @property
    def slide_name(self) -> str:
        """Name of the held-out positive slide."""
        return self.slide_path.stem


def _held_out(layouts: Sequence[SlideLayout], positive: str) -> tuple[str, str]:
    """The last positive and the last negative slide of the cohort."""
    pos = [lay.name for lay in layouts if lay.label == positive]
    neg = [lay.name for lay in layouts if lay.label != positive]
    return pos[-1], neg[-1]


def run_demo(
    out_dir: str | os.PathLike, *, settings: DemoSettings = DemoSettings()
) -> Generator[Progress, None, DemoResult]:
    """Synthesise a cohort, embed it, train the regional model, predict the held-out slides (a job).

    Parameters
    ----------
    out_dir
        Folder for everything (created). A finished cache or cohort in it is reused.
    settings
        Sizes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = settings
    classes = CLASS_NAMES["context"]
    cohort = yield from write_synthetic_cohort(
        out / "slides", n_slides=s.n_slides, seed=s.seed, task="context", patch_px=s.patch_px,
        region_size=s.region_size, region_grid=s.region_grid,
    )
    test_pos, test_neg = _held_out(cohort.layouts, classes[1])
    table = CohortTable()
    table.load_csv(cohort.labels_csv)
    for name in (test_pos, test_neg):
        row = table.index_of(name)
        if row is None:  # the synthetic cohort's table lists every slide it wrote
            raise RuntimeError(f"{name}: missing from the synthetic cohort's table")
        table.set_split(row, "test")
    cohort_csv = table.save_csv(out / "slides" / "cohort.csv")

    cache = out / "cache"
    params = TilingParams(patch_size=s.patch_px, target_mpp=0.5, region_size=s.region_size)
    yield from embed_slides(cohort.slides, cache_dir=cache, tiling_params=params, batch_size=256, on_error="raise")

    config = TrainConfig(epochs=s.epochs, seed=s.seed, val_fraction=0.0, min_epochs=s.epochs, threads=1)
    options = ModelOptions(
        model={"model_type": "regional", "hidden_dim": s.hidden_dim, "attention_dim": s.attention_dim},
        selection=SelectionConfig(min_patches=s.min_patches, max_patches=s.max_patches, patches_per_region=4),
    )
    trained = yield from load_and_train_cohort(read_cohort(cohort_csv), cache_dir=cache, options=options, config=config)
    model_path = save_checkpoint(trained.result.checkpoint, out / "model.safetensors")

    predictions = {}
    labels = {row.name: row.label for row in table.rows}
    for j, name in enumerate((test_pos, test_neg)):
        yield Progress("predict", j, 2, f"predicting held-out slide {name}")
        store = find_slide_cache(cache, name)
        embeddings = load_slide_embeddings(store)
        prediction = predict_slide(trained.result.checkpoint, embeddings)
        write_attention(prediction, attention_path(store), embeddings=embeddings)
        predictions[name] = prediction
    yield Progress("predict", 2, 2, "done")
    predictions_csv = _write_predictions(out / "predictions.csv", predictions, labels, classes)
    slide_path = next(p for p in cohort.slides if p.stem == test_pos)
    truth_path = next(p for p in cohort.truths if p.name.startswith(f"{test_pos}."))
    return DemoResult(
        out, cohort_csv, cache, model_path, predictions_csv, slide_path, truth_path, predictions, classes,
        trained.result.history,
    )


def _write_predictions(
    path: Path, predictions: dict[str, Any], labels: dict[str, str], classes: tuple[str, ...]
) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["slide", "label", "predicted"] + [f"prob_{c}" for c in classes])
    for name, p in predictions.items():
        writer.writerow([name, labels.get(name, ""), p.predicted] + [f"{x:.6f}" for x in p.probabilities])
    write_text_atomic(path, buffer.getvalue())
    return path
