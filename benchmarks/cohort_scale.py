"""Cohorts bigger than memory: peak RSS and throughput of training streamed from the caches.

Writes a synthetic cohort of embedding caches directly (no slides, no encoder): each
slide is a ``--rows`` x ``--cols`` patch grid (20,000 patches by default) of random
``--dim``-dimensional float16 features with regions of 8 x 8 patches; in the slides of
class 1 a few regions carry a planted signal (their patches shifted along one fixed
direction), so the regional model has something to learn. The caches are written with the
store's own writer (:class:`~napari_regional_mil.embedding.store.CacheWriter`), i.e. the
layout ``embed --dtype float16`` writes.

Then it trains the regional model for ``--epochs`` epochs (10 % of the slides held out
for validation, the CLI's defaults otherwise, 1 torch thread), each run in a fresh
subprocess that reports its own peak RSS (``ru_maxrss``):

- the small cohort (``--small`` slides) held in memory (``--stream never``): the fast path;
- the small cohort streamed from the caches (``--stream always``);
- the large cohort (``--large`` slides) streamed.

Printed per run: peak RSS, training throughput (slides/s over the training steps only:
from the end of the previous epoch to the last step event of the epoch, validation
excluded; median over epochs 2.., the first warms up), seconds per epoch (validation
included), seconds spent before the first epoch (opening the caches, reading every
training slide once for the feature standardisation, or loading them into memory), and
the validation AUC of the last epoch.

Goals (issue 14): peak RSS of the large run <= 1.2 x that of the small streamed run and
< 4 GB; streamed slides/s within 20 % of the in-memory path on the small cohort. The
last line is ``scale_rss_ratio=<large/small streamed> ...``. Everything written is deleted
at the end (also on Ctrl-C).

Disk: about ``slides x patches x dim x 2`` bytes (float16), e.g. 16.4 GB for 400 x 20,000 x
1,024. The free space of ``--work`` is checked first; when it is short both cohorts are
scaled down by the same factor and the output says so.

Run: ``python benchmarks/cohort_scale.py [--small 40 --large 400 --rows 100 --cols 200 --dim 1024]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REGION = 8
HELD_OUT = 0.1

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
args = json.loads(sys.argv[1])
import numpy as np
import torch
from napari_regional_mil.embedding.store import StoredEmbeddings
from napari_regional_mil.jobs import run_job
from napari_regional_mil.model.config import ModelConfig
from napari_regional_mil.training.datasets import LabelledSlide
from napari_regional_mil.training.train import TrainConfig, train_model

from pathlib import Path
slides = [LabelledSlide(StoredEmbeddings(p), int(label), Path(p).name.split("-")[0]) for p, label in args["slides"]]
config = TrainConfig(epochs=args["epochs"], min_epochs=args["epochs"], val_fraction=args["val_fraction"],
                     threads=1, stream=args["stream"], seed=0)
model = ModelConfig(input_dim=slides[0].embeddings.embedding_dim, n_classes=2)
steps, epochs, first_epoch = {}, [], None
started = time.perf_counter()
plan = ""

def watch(event):
    global first_epoch, plan
    now = time.perf_counter()
    if "memory" in event.metrics:
        plan = event.message
    if event.stage == "train" and event.message.startswith("epoch ") and not event.metrics:
        epoch = int(event.message.split()[1].split("/")[0])
        if first_epoch is None:
            first_epoch = now
        steps.setdefault(epoch, []).append((now, event.done))
    if "train_loss" in event.metrics:
        epochs.append((now, dict(event.metrics)))

result = run_job(train_model(slides, class_names=("0", "1"), model_config=model, config=config), watch)
# epochs 2.. (the first warms up): training steps from the previous epoch's end to the epoch's last step event
n = result.checkpoint.training["n_train"]
rates = []
for e in range(2, len(epochs) + 1):
    t_prev = epochs[e - 2][0]
    marks = steps.get(e, [])
    if marks and marks[-1][0] > t_prev:
        rates.append((marks[-1][1] - (e - 1) * n) / (marks[-1][0] - t_prev))
ends = [t for t, _ in epochs]
per_epoch = np.diff(ends)
print(json.dumps({
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "slides_per_s": float(np.median(rates)) if rates else float("nan"),
    "s_per_epoch": float(np.median(per_epoch)) if len(per_epoch) else float("nan"),
    "before_first_epoch_s": (first_epoch or started) - started,
    "val_auc": epochs[-1][1]["val_auc"] if epochs else float("nan"),
    "n_train": result.checkpoint.training["n_train"],
    "plan": plan,
    "total_s": time.perf_counter() - t0,
}))
"""


def write_cohort(folder: Path, n: int, *, rows: int, cols: int, dim: int, seed: int) -> list[tuple[str, int]]:
    """Write ``n`` float16 caches with a planted regional signal in class 1; return (path, label) pairs."""
    from napari_regional_mil.embedding.store import CacheWriter, store_path

    gy, gx = np.mgrid[0:rows, 0:cols]
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int32)  # row-major, as the tiler orders patches
    cells = grid // REGION
    region_cols = -(-cols // REGION)
    region_index = (cells[:, 1] * region_cols + cells[:, 0]).astype(np.int32)
    region_xy = np.stack(np.divmod(np.arange(region_index.max() + 1), region_cols)[::-1], axis=1).astype(np.int32)
    arrays = {
        "coords_px": (grid * 256).astype(np.int64), "grid_xy": grid, "region_index": region_index,
        "tissue_fraction": np.ones(len(grid), np.float32),
    }
    direction = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    out = []
    for i in range(n):
        rng = np.random.default_rng(seed + 1 + i)
        label = i % 2
        planted = rng.choice(len(region_xy), size=4, replace=False) if label else np.zeros(0, np.int64)
        name = f"scale{i:04d}"
        key = f"{seed:08d}{i:056d}"
        writer = CacheWriter.open(
            store_path(folder, name, key), key=key, patch_arrays=arrays, region_xy=region_xy, embedding_dim=dim,
            attrs={"slide_name": name, "n_patches": len(grid), "n_regions": len(region_xy), "encoder": "synthetic",
                   "encoder_hash": "0" * 64, "embedding_dim": dim, "format_version": 1, "patch_size": 256,
                   "target_mpp": 0.5, "region_size": REGION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            dtype="float16",
        )
        for start in range(0, len(grid), 4096):
            block = rng.standard_normal((min(4096, len(grid) - start), dim), dtype=np.float32)
            signal = np.isin(region_index[start : start + len(block)], planted)
            block[signal] += 2.0 * direction
            writer.append(block)
        out.append((str(writer.finish()), label))
    return out


def run_child(slides: list[tuple[str, int]], *, stream: str, epochs: int) -> dict:
    """Train in a fresh process; its figures (peak RSS is that process's own)."""
    payload = json.dumps({"slides": slides, "stream": stream, "epochs": epochs, "val_fraction": HELD_OUT})
    done = subprocess.run([sys.executable, "-c", _CHILD, payload], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"training run failed ({stream}, {len(slides)} slides):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=40, help="slides of the small cohort (default: 40)")
    parser.add_argument("--large", type=int, default=400, help="slides of the large cohort (default: 400)")
    parser.add_argument("--rows", type=int, default=100, help="patch-grid rows per slide (default: 100)")
    parser.add_argument("--cols", type=int, default=200, help="patch-grid columns per slide (default: 200)")
    parser.add_argument("--dim", type=int, default=1024, help="embedding dimension (default: 1024)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="where the caches go (default: the temp folder)")
    args = parser.parse_args(argv)

    patches = args.rows * args.cols
    per_slide = patches * args.dim * 2 + patches * 24 + (8 << 20)
    base = args.work or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    small, large = args.small, args.large
    scaled = ""
    if large * per_slide > 0.8 * free:
        factor = 0.8 * free / (large * per_slide)
        small, large = max(4, int(small * factor)), max(8, int(large * factor))
        scaled = f" (scaled down by {factor:.2f}: {free / 1e9:.1f} GB free in {base})"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), load average "
          f"{os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    print(f"cohorts: {small} and {large} slides x {patches:,} patches x {args.dim} dims, float16: "
          f"{large * per_slide / 1e9:.1f} GB on disk{scaled}; {args.epochs} epochs, regional model, 1 torch thread")
    work = Path(tempfile.mkdtemp(prefix="cohort-scale-", dir=base))
    try:
        t0 = time.perf_counter()
        slides = write_cohort(work, large, rows=args.rows, cols=args.cols, dim=args.dim, seed=args.seed)
        print(f"wrote {large} caches in {time.perf_counter() - t0:.0f} s ({large / (time.perf_counter() - t0):.1f} "
              "slides/s)", flush=True)
        runs = {}
        for name, cohort, stream in (("small in memory", slides[:small], "never"),
                                     ("small streamed", slides[:small], "always"),
                                     ("large streamed", slides, "always")):
            runs[name] = run_child(cohort, stream=stream, epochs=args.epochs)
            r = runs[name]
            print(f"{name:16s} {len(cohort):4d} slides: peak RSS {r['peak_rss_mib']:7.0f} MiB  "
                  f"{r['slides_per_s']:6.1f} slides/s  {r['s_per_epoch']:6.1f} s/epoch  "
                  f"before epoch 1 {r['before_first_epoch_s']:5.1f} s  val AUC {r['val_auc']:.3f}  "
                  f"({r['total_s']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = runs["large streamed"]["peak_rss_mib"] / runs["small streamed"]["peak_rss_mib"]
    speed = runs["small streamed"]["slides_per_s"] / runs["small in memory"]["slides_per_s"]
    large_gb = runs["large streamed"]["peak_rss_mib"] * 2**20 / 1e9
    print(f"goals: large/small streamed peak RSS {ratio:.2f} (<= 1.2: {'met' if ratio <= 1.2 else 'MISSED'}), "
          f"large streamed {large_gb:.2f} GB (< 4 GB: {'met' if large_gb < 4 else 'MISSED'}), "
          f"streamed/in-memory slides/s {speed:.2f} (>= 0.8: {'met' if speed >= 0.8 else 'MISSED'})")
    print(f"deleted {work}")
    print(f"scale_rss_ratio={ratio:.3f} stream_speed_ratio={speed:.3f} large_peak_rss_mib="
          f"{runs['large streamed']['peak_rss_mib']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
