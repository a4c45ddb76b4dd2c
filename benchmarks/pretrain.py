"""Second models trained by the tool against the built-in encoder, side by side.

On synthetic slides (pyramidal TIFFs through the real pipeline) it compares three frozen
encoders: ``builtin-he`` (no training), an autoencoder encoder (claim 10) trained on the
unlabelled ``context`` cohort, and an attention-MIL encoder (claims 7, 9) trained on the
same slides with other classes than the first model's: ``tumour-rich`` / ``stroma-rich``
(more tumour than stroma patches), a slide-level label the context task ignores.
For each it reports

* **linear probe**: accuracy of a multinomial logistic regression predicting the tissue
  type (6 types) of a patch from its embedding, trained on one probe slide and tested
  on another one rendered with other texture seeds;
* **regional vs ABMIL**: cross-validated AUC of the regional first model and of ABMIL on
  the ``context`` task (the label depends on where the motif lies; patch-level MIL
  cannot solve it by design);
* **training time** of the encoder and its embedding throughput.

Run: ``python benchmarks/pretrain.py [--slides 20] [--folds 3] [--work DIR]``. The
defaults are small (about 15 minutes on 2 CPU cores); the printed header states them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig, SelectionConfig
from napari_regional_mil.pretrain import (
    AutoencoderConfig,
    MilPretrainConfig,
    train_autoencoder,
    train_mil_encoder,
)
from napari_regional_mil.synth.cohort import CLASS_NAMES, write_synthetic_cohort
from napari_regional_mil.synth.slides import write_synthetic_slide
from napari_regional_mil.tiling import TilingParams
from napari_regional_mil.training.crossval import cross_validate
from napari_regional_mil.training.datasets import LabelledSlide
from napari_regional_mil.training.train import TrainConfig

PATCH_PX = 32
MPP = 0.5


def probe_slides(work: Path, seed: int) -> list[tuple[Path, np.ndarray]]:
    """Two slides tiled with 2 x 2-cell blocks of all six tissue types (other texture seeds)."""
    out = []
    for i, tex_seed in enumerate((seed + 101, seed + 202)):
        rng = np.random.default_rng(seed + i)
        blocks = rng.integers(0, 6, (8, 11))
        types = np.kron(blocks, np.ones((2, 2), np.int64)).astype(np.int16)
        path = work / f"probe_{i}.tif"
        if not path.is_file():
            write_synthetic_slide(path, types, patch_px=PATCH_PX, mpp=MPP, seed=tex_seed, tile=256)
        out.append((path, types))
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy of an L2-regularised multinomial logistic regression (LBFGS, standardised inputs)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).float()
    xt = torch.from_numpy((test_x - mean) / std).float()
    y = torch.from_numpy(train_y).long()
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], 6)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + 1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((layer(xt).argmax(1).numpy() == test_y).mean())


def embed_all(paths, encoder, cache: Path, params: TilingParams) -> tuple[list, float]:
    """Embed slides (reusing complete caches); return their embeddings and patches/s of this call."""
    t0, n = time.perf_counter(), 0
    out = []
    for path in paths:
        result = run_job(embed_slide(path, cache_dir=cache, tiling_params=params, encoder=encoder, batch_size=128))
        out.append(load_slide_embeddings(result.cache_path))
        n += result.n_patches if result.computed else 0
    return out, n / max(time.perf_counter() - t0, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=20, help="slides of the context cohort (default: 20)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="first-model epochs per fold (default: 20)")
    parser.add_argument("--ae-epochs", type=int, default=6)
    parser.add_argument("--ae-patches", type=int, default=2048)
    parser.add_argument("--mil-epochs", type=int, default=10)
    parser.add_argument("--region-size", type=int, default=6)
    parser.add_argument("--grid", type=int, nargs=2, default=(3, 4), metavar=("ROWS", "COLS"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="pretrain-bench-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"context cohort: {args.slides} slides, {args.grid[0]}x{args.grid[1]} regions of "
        f"{args.region_size}x{args.region_size} "
        f"patches of {PATCH_PX} px at {MPP} um/px; MIL labels: tumour-rich/stroma-rich; {args.folds}-fold CV, "
        f"<= {args.epochs} epochs; autoencoder {args.ae_patches} patches x {args.ae_epochs} epochs; "
        f"MIL {args.mil_epochs} epochs; encoders {PATCH_PX} px at {MPP} um/px",
        flush=True,
    )
    t0 = time.perf_counter()
    context = run_job(write_synthetic_cohort(
        work / "context", n_slides=args.slides, seed=args.seed, task="context", patch_px=PATCH_PX,
        region_size=args.region_size, region_grid=tuple(args.grid), mpp=MPP,
    ))
    composition = work / "composition.csv"  # MIL labels: other classes than the first model's (claim 9)
    def composition_of(lay) -> str:
        return "tumour-rich" if (lay.patch_types == 1).sum() > (lay.patch_types == 0).sum() else "stroma-rich"

    composition.write_text("slide,label\n" + "".join(f"{lay.name},{composition_of(lay)}\n" for lay in context.layouts))
    probes = probe_slides(work, args.seed)
    print(f"synthesised {args.slides + 2} slides in {time.perf_counter() - t0:.0f} s", flush=True)

    encoders: dict[str, tuple[str, float]] = {"builtin-he": ("builtin-he", 0.0)}
    ae_config = AutoencoderConfig(
        patch_size=PATCH_PX, mpp=MPP, max_patches=args.ae_patches, epochs=args.ae_epochs, seed=args.seed
    )
    ae = run_job(train_autoencoder(context.out_dir, out=work / "autoencoder.safetensors", config=ae_config))
    encoders["autoencoder"] = (str(ae.path), ae.seconds)
    print(
        f"autoencoder: {ae.n_patches} patches, {ae.seconds:.0f} s, "
        f"loss {ae.history[0]['loss']:.4f} -> {ae.history[-1]['loss']:.4f}",
        flush=True,
    )
    mil_config = MilPretrainConfig(
        patch_size=PATCH_PX,
        mpp=MPP,
        patches_per_slide=128,
        bag_size=32,
        epochs=args.mil_epochs,
        bags_per_slide=2,
        seed=args.seed,
    )
    mil = run_job(
        train_mil_encoder(context.out_dir, labels=composition, out=work / "mil.safetensors", config=mil_config)
    )
    encoders["attention-MIL"] = (str(mil.path), mil.seconds)
    print(f"attention-MIL: {mil.n_patches} patches, {mil.seconds:.0f} s, last epoch {mil.history[-1]}", flush=True)

    params = TilingParams(patch_size=PATCH_PX, target_mpp=MPP, region_size=args.region_size)
    classes = CLASS_NAMES["context"]
    rows = []
    for label, (encoder, train_s) in encoders.items():
        cache = work / f"cache-{label}"
        probe_emb, _ = embed_all([p for p, _ in probes], encoder, cache, params)
        xs, ys = [], []
        for emb, (_, types) in zip(probe_emb, probes):
            xs.append(emb.features)
            ys.append(types[emb.grid_xy[:, 1], emb.grid_xy[:, 0]].astype(np.int64))  # grid_xy is (x, y)
        probe_acc = linear_probe(xs[0], ys[0], xs[1], ys[1])
        embs, rate = embed_all(context.slides, encoder, cache, params)
        slides = [LabelledSlide(e, classes.index(lay.label), lay.name) for e, lay in zip(embs, context.layouts)]
        aucs = {}
        for model_type in ("regional", "abmil"):
            config = ModelConfig(
                input_dim=slides[0].embeddings.embedding_dim, model_type=model_type, hidden_dim=64, attention_dim=32,
                selection=SelectionConfig(min_patches=64, max_patches=256, patches_per_region=4),
            )
            result = run_job(cross_validate(
                slides, class_names=classes, n_folds=args.folds, model_config=config,
                config=TrainConfig(epochs=args.epochs, seed=args.seed, threads=1),
            ))
            aucs[model_type] = result.auc
        rows.append((label, slides[0].embeddings.embedding_dim, probe_acc, aucs, train_s, rate))
        print(
            f"[{label}] probe {probe_acc:.3f}  regional {aucs['regional'][0]:.3f}  abmil {aucs['abmil'][0]:.3f}  "
            f"train {train_s:.0f} s  embed {rate:.0f} patches/s",
            flush=True,
        )
    print()
    print("| encoder | dim | tissue-type linear probe (6 types) | context AUC regional | context AUC abmil "
          "| encoder training | embedding |")
    print("|---|---|---|---|---|---|---|")
    for label, dim, acc, aucs, train_s, rate in rows:
        (rm, rs), (am, as_) = aucs["regional"], aucs["abmil"]
        print(
            f"| {label} | {dim} | {acc:.3f} | {rm:.3f} +- {rs:.3f} | {am:.3f} +- {as_:.3f} "
            f"| {train_s:.0f} s | {rate:.0f} patches/s |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
