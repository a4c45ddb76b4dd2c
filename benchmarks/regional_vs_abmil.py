"""What regions add: the regional first model against ABMIL and mean pooling.

Synthesises two cohorts of pyramidal TIFF slides (task ``context``: the label depends on
where a motif lies, with identical patch-type counts in both classes; task ``presence``:
positive iff the motif exists), embeds every slide with the built-in encoder through the
real pipeline, and runs 5-fold cross-validation of the ``regional``, ``abmil`` and
``mean`` models. Prints a table of the AUROC of the pooled out-of-fold predictions with
its bootstrap 95 % confidence interval, the fold AUCs (mean +- sd), the localisation AUC
of the attention against the ground-truth positive regions (positive test slides), and
the training throughput in bags (slides) per second; draws the pooled ROC curves of the
context task (``--plot``, default ``docs/images/regional_vs_abmil_roc.png``); the last
line is ``context_auc_regional=<x> context_auc_abmil=<y>`` (pooled AUROCs).

Targets: context regional >= 0.95 and abmil <= 0.65; presence all >= 0.95; localisation
AUC >= 0.9. Run: ``python benchmarks/regional_vs_abmil.py [--slides 60] [--work DIR]``.
``--dtypes float32,float16`` embeds every slide into a float32 and a float16 cache and
cross-validates every model on both (same slides, same folds), printing the AUC
differences (issue 14: half-size caches should change nothing beyond noise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.synth.cohort import (
    CLASS_NAMES,
    make_cohort_layouts,
    write_synthetic_cohort,
)
from napari_regional_mil.tiling import TilingParams
from napari_regional_mil.training.crossval import cross_validate
from napari_regional_mil.training.datasets import LabelledSlide
from napari_regional_mil.training.predict import predict_slide
from napari_regional_mil.training.report import CURVE_GRID
from napari_regional_mil.training.train import TrainConfig

MODELS = ("regional", "abmil", "mean")
TASKS = ("context", "presence")


def build_cohort(
    work: Path, task: str, args: argparse.Namespace, dtype: str = "float32"
) -> tuple[list[LabelledSlide], dict, float, float]:
    """Synthesise and embed one cohort (features in ``dtype``); return slides, truths, synth and embed seconds."""
    out = work / task
    t0 = time.perf_counter()
    layouts = make_cohort_layouts(
        args.slides,
        seed=args.seed + (0 if task == "context" else 1),
        task=task,
        region_grid=tuple(args.grid),
        region_size=args.region_size,
    )
    paths = [out / f"{layout.name}.tif" for layout in layouts]
    if not (args.reuse and all(p.is_file() for p in paths)):  # slides are deterministic by seed
        run_job(
            write_synthetic_cohort(
                out,
                n_slides=args.slides,
                seed=args.seed + (0 if task == "context" else 1),
                task=task,
                patch_px=args.patch_px,
                region_size=args.region_size,
                region_grid=tuple(args.grid),
            )
        )
    t1 = time.perf_counter()
    params = TilingParams(patch_size=args.patch_px, target_mpp=0.5, region_size=args.region_size)
    cache = work / (f"{task}-cache" if dtype == "float32" else f"{task}-cache-{dtype}")
    slides, truths = [], {}
    class_names = CLASS_NAMES[task]
    for path, layout in zip(paths, layouts):
        done = run_job(
            embed_slide(path, cache_dir=cache, tiling_params=params, encoder="builtin-he", batch_size=256, dtype=dtype)
        )
        emb = load_slide_embeddings(done.cache_path)
        slides.append(LabelledSlide(emb, class_names.index(layout.label), layout.name))
        truths[layout.name] = json.loads(path.with_suffix(".truth.json").read_text())
    return slides, truths, t1 - t0, time.perf_counter() - t1


def localisation_auc(models, folds, slides, truths) -> float:
    """Mean over positive test slides of the AUC of region scores against the truth regions.

    Region score: the all-regions attention of the regional model; for patch-level models,
    the largest patch attention inside the region.
    """
    by_name = {s.name: s for s in slides}
    aucs = []
    for checkpoint, fold in zip(models, folds):
        for name, label in zip(fold.test_slides, fold.test_labels):
            truth = truths[name]
            if label != 1 or not truth["positive_regions"]:
                continue
            emb = by_name[name].embeddings
            pred = predict_slide(checkpoint, emb, evidence=False)
            if pred.region_attention is not None:
                scores = pred.region_attention
            else:
                scores = np.zeros(emb.n_regions)
                np.maximum.at(scores, emb.region_index, pred.patch_attention)
            positive = {tuple(xy) for xy in truth["positive_regions"]}
            is_pos = np.array([tuple(xy) in positive for xy in emb.region_xy.tolist()])
            if 0 < is_pos.sum() < is_pos.size:
                aucs.append(float(roc_auc_score(is_pos, scores)))
    return float(np.mean(aucs)) if aucs else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=60, help="slides per task (default: 60)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-px", type=int, default=32, help="patch side in px at 0.5 um/px (default: 32)")
    parser.add_argument("--region-size", type=int, default=6, help="k (default: 6)")
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 5), metavar=("ROWS", "COLS"))
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse slides and caches already in --work")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the first model trains")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the CIs (default: 1000)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images" /
                        "regional_vs_abmil_roc.png", help="where to draw the context task's pooled ROC curves")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated cache dtypes to compare (e.g. float32,float16: every model is "
                        "cross-validated on each, the same slides and folds; default: float32)")
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]

    started = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="regional-vs-abmil-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    print(
        f"cohorts: {args.slides} slides per task, {args.grid[0]}x{args.grid[1]} regions of "
        f"{args.region_size}x{args.region_size} patches of {args.patch_px} px at 0.5 um/px; encoder builtin-he; "
        f"{args.folds}-fold cross-validation, <= {args.epochs} epochs, {args.threads} training thread(s)"
    )
    train_config = TrainConfig(epochs=args.epochs, seed=args.seed, threads=args.threads, device=args.device)
    rows, loc, speed, pooled = {}, {}, {}, {}
    for task in TASKS:
        for dtype in dtypes:
            slides, truths, t_synth, t_embed = build_cohort(work, task, args, dtype)
            n_patches = sum(s.embeddings.n_patches for s in slides)
            print(
                f"[{task}, {dtype}] synthesised {len(slides)} slides in {t_synth:.0f} s, embedded (or reused) "
                f"{n_patches} patches in {t_embed:.0f} s ({n_patches / t_embed:.0f} patches/s)",
                flush=True,
            )
            for model_type in MODELS:
                config = ModelConfig(
                    input_dim=slides[0].embeddings.embedding_dim,
                    model_type=model_type,
                    hidden_dim=64,
                    attention_dim=32,
                    selection=SelectionConfig(min_patches=64, max_patches=256, patches_per_region=4),
                )
                t0 = time.perf_counter()
                result = run_job(
                    cross_validate(
                        slides, class_names=("0", "1"), n_folds=args.folds, model_config=config, config=train_config,
                        keep_models=True,
                    )
                )
                key = (task, model_type, dtype)
                rows[key] = result.auc
                pooled[key] = report = result.pooled_report(n_bootstrap=args.bootstrap, seed=args.seed)
                loc[key] = localisation_auc(result.models, result.folds, slides, truths)
                speed[key] = result.bags_per_second
                print(
                    f"[{task}, {dtype}] {model_type:8s} pooled AUROC {report.auroc:.3f} "
                    f"(95% CI {report.auroc_ci[0]:.3f}-{report.auroc_ci[1]:.3f}), folds {result.auc[0]:.3f} +- "
                    f"{result.auc[1]:.3f}  localisation {loc[key]:.3f}  "
                    f"{result.bags_per_second:.0f} bags/s  ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    print()
    print("| task | model | cache dtype | pooled out-of-fold AUROC (95% CI) | fold AUC (mean +- sd) | "
          "localisation AUC | training bags/s |")
    print("|---|---|---|---|---|---|---|")
    for task in TASKS:
        for model_type in MODELS:
            for dtype in dtypes:
                key = (task, model_type, dtype)
                m, s = rows[key]
                report = pooled[key]
                print(
                    f"| {task} | {model_type} | {dtype} | {report.auroc:.3f} "
                    f"({report.auroc_ci[0]:.3f}-{report.auroc_ci[1]:.3f}) | {m:.3f} +- {s:.3f} | {loc[key]:.3f} | "
                    f"{speed[key]:.0f} |"
                )
    if "float32" in dtypes and "float16" in dtypes:
        diffs = {(t, m): pooled[t, m, "float16"].auroc - pooled[t, m, "float32"].auroc for t in TASKS for m in MODELS}
        listed = ", ".join(f"{t}/{m} {d:+.3f}" for (t, m), d in diffs.items())
        print(f"\npooled AUROC, float16 - float32 caches: {listed}; "
              f"largest |difference| {max(abs(d) for d in diffs.values()):.3f}")
    first = dtypes[0]
    if args.plot is not None:
        print(f"\nROC plot: {draw_roc(args.plot, {m: pooled['context', m, first] for m in MODELS})}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    print(f"context_auc_regional={pooled['context', 'regional', first].auroc:.3f} "
          f"context_auc_abmil={pooled['context', 'abmil', first].auroc:.3f}")
    return 0


def draw_roc(path: Path, reports: dict) -> Path:
    """The pooled out-of-fold ROC curves of the context task, one per model, with bootstrap bands (PNG)."""
    fig = Figure(figsize=(4.8, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", linewidth=1)
    for model_type, report in reports.items():
        curve = next(iter(report.curves.values()))
        low, high = report.auroc_ci
        (line,) = ax.plot(curve.fpr, curve.tpr, linewidth=1.8,
                          label=f"{model_type}: AUROC {report.auroc:.3f} [{low:.3f}, {high:.3f}]")
        if curve.tpr_band is not None:
            ax.fill_between(CURVE_GRID, curve.tpr_band[0], curve.tpr_band[1], color=line.get_color(), alpha=0.15,
                            linewidth=0)
    n = len(next(iter(reports.values())).labels)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity",
           title=f"Context task: pooled out-of-fold ROC ({n} slides)")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


if __name__ == "__main__":
    sys.exit(main())
