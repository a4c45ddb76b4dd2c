"""What patient data adds to the slide, and the slide to patient data ([0279]).

Synthesises a cohort with ``synth --task context --clinical`` (pyramidal TIFF slides and a
``labels.csv`` with the columns ``grade``, ``age``, ``sex``): a slide is ``positive`` iff
it is inflamed (the lymphocyte motif lies inside tumour regions, which only a model that
sees each patch with its region can tell) AND its grade is ``G3``; ``age`` and ``sex`` are
distractors (``synth/clinical.py``). Every slide is embedded through the real pipeline
with the built-in encoder; then the three ablation arms are cross-validated on the same
folds (``training/ablation.py``): the clinical-only logistic model, the slide-only regional
first model, and the regional first model with ``grade,age,sex`` fused.

Goal: fused >= 0.95 and at least 0.10 above the better single source. The last line is
``clinical_auc_fused=<x> slide_only=<y> clinical_only=<z>`` (mean fold AUCs).

Run: ``python benchmarks/clinical.py [--slides 80] [--work DIR --reuse] [--fast]``
(``--fast``: synthetic prototype embeddings instead of slides and the encoder, seconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from napari_regional_mil.clinical import ClinicalRecord, parse_clinical_columns
from napari_regional_mil.embedding import embed_slide
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.synth.clinical import (
    CLASS_NAMES,
    clinical_label,
    clinical_values,
)
from napari_regional_mil.synth.cohort import (
    layout_embeddings,
    make_cohort_layouts,
    write_synthetic_cohort,
)
from napari_regional_mil.tiling import TilingParams
from napari_regional_mil.training.ablation import ARMS, clinical_ablation
from napari_regional_mil.training.cohort import read_cohort
from napari_regional_mil.training.datasets import LabelledSlide, load_cohort_embeddings
from napari_regional_mil.training.train import TrainConfig

COLUMNS = "grade,age,sex"


def build_slides(work: Path, args: argparse.Namespace) -> list[LabelledSlide]:
    """Synthesise (or reuse) and embed the cohort; the clinical values come from labels.csv."""
    if args.fast:
        layouts = make_cohort_layouts(
            args.slides,
            seed=args.seed,
            task="context",
            region_grid=tuple(args.grid),
            region_size=args.region_size,
        )
        values = clinical_values([lay.label for lay in layouts], seed=args.seed)
        return [
            LabelledSlide(
                layout_embeddings(lay, dim=16, noise=0.5, seed=args.seed * 1000 + i),
                CLASS_NAMES.index(clinical_label(lay.label, v)),
                lay.name,
                clinical=ClinicalRecord(v, f"synthetic slide {i + 1}", "synthetic cohort"),
            )
            for i, (lay, v) in enumerate(zip(layouts, values))
        ]
    out = work / "slides"
    labels_csv = out / "labels.csv"
    if not (args.reuse and labels_csv.is_file()):  # slides are deterministic by seed
        run_job(
            write_synthetic_cohort(
                out,
                n_slides=args.slides,
                seed=args.seed,
                task="context",
                patch_px=args.patch_px,
                region_size=args.region_size,
                region_grid=tuple(args.grid),
                clinical=True,
            )
        )
    params = TilingParams(patch_size=args.patch_px, target_mpp=0.5, region_size=args.region_size)
    cohort = read_cohort(labels_csv)  # the product's reader: the clinical columns are kept per row
    assert cohort.class_names == CLASS_NAMES and cohort.columns == ("grade", "age", "sex")
    for row in cohort.rows:
        run_job(
            embed_slide(
                out / f"{row.slide}.tif",
                cache_dir=work / "cache",
                tiling_params=params,
                encoder="builtin-he",
                batch_size=256,
            )
        )
    return run_job(load_cohort_embeddings(cohort, cache_dir=work / "cache"))  # each row's values attached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=80, help="slides (default: 80)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patch-px", type=int, default=32, help="patch side in px at 0.5 um/px (default: 32)"
    )
    parser.add_argument("--region-size", type=int, default=6, help="k (default: 6)")
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 5), metavar=("ROWS", "COLS"))
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse slides and caches already in --work")
    parser.add_argument(
        "--fast", action="store_true", help="prototype embeddings instead of slides + encoder"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default: 1)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="clinical-benchmark-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    source = "prototype embeddings (--fast)" if args.fast else "builtin-he on synthetic slides"
    print(
        f"cohort: {args.slides} slides (synth --task context --clinical), {args.grid[0]}x{args.grid[1]} regions of "
        f"{args.region_size}x{args.region_size} patches; {source}; clinical columns {COLUMNS}; "
        f"{args.folds}-fold cross-validation, <= {args.epochs} epochs, {args.threads} training thread(s)",
        flush=True,
    )
    slides = build_slides(work, args)
    t_data = time.perf_counter() - started
    n_pos = sum(s.label for s in slides)
    print(f"data ready in {t_data:.0f} s: {len(slides)} slides, {n_pos} positive", flush=True)
    model_config = ModelConfig(
        input_dim=slides[0].embeddings.embedding_dim,
        model_type="regional",
        hidden_dim=64,
        attention_dim=32,
        selection=SelectionConfig(min_patches=64, max_patches=256, patches_per_region=4),
    )
    t0 = time.perf_counter()
    result = run_job(
        clinical_ablation(
            slides,
            class_names=CLASS_NAMES,
            clinical=parse_clinical_columns(COLUMNS),
            n_folds=args.folds,
            model_config=model_config,
            config=TrainConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
        )
    )
    t_cv = time.perf_counter() - t0
    print()
    print("| model | AUC (mean +- sd, folds) | pooled out-of-fold AUC |")
    print("|---|---|---|")
    labels = {
        "fused": "regional + grade, age, sex",
        "slide_only": "regional (slide only)",
        "clinical_only": "logistic (grade, age, sex)",
    }
    for arm in ARMS:
        m, s = result.arms[arm].auc
        print(f"| {labels[arm]} | {m:.3f} +- {s:.3f} | {result.pooled_auc(arm):.3f} |")
    fused, slide, clin = (result.arms[a].auc[0] for a in ARMS)
    margin = fused - max(slide, clin)
    ok = fused >= 0.95 and margin >= 0.10
    print(
        f"\nfused - better single source = {margin:+.3f} "
        f"(goal: fused >= 0.95 and >= +0.10: {'met' if ok else 'NOT met'})"
    )
    print(f"cross-validation {t_cv:.0f} s; total {time.perf_counter() - started:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    print(f"clinical_auc_fused={fused:.3f} slide_only={slide:.3f} clinical_only={clin:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
