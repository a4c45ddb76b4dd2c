"""Peak memory (RSS) of embedding and prediction on a synthetic 60k x 60k slide.

Issue 7 asks that embedding and prediction of a very large slide stay under a fixed peak
RSS: memory must not grow with the slide's size. This benchmark

1. writes a synthetic ``--size`` x ``--size`` px tiled JPEG pyramid (default 60 000 px,
   0.5 um/px) with the streaming writer :func:`~napari_regional_mil.synth.slides.write_synthetic_slide`;
   tissue covers only a ``--tissue-cells`` x ``--tissue-cells`` block of 250 px cells so
   that embedding finishes in a few minutes (the slide is full size: the whole grid,
   tissue detection and the display pyramid see 60k x 60k px);
2. embeds it with the built-in encoder (``napari-regional-mil embed``, 256 px patches at
   0.5 um/px, regions of 8 x 8) into a fresh cache;
3. predicts it (``napari-regional-mil predict``) with a small untrained first model saved
   for the cache's encoder and tiling (weights do not change memory);
4. repeats 2-3 on a small slide (the same tissue block, ``--small-size`` px) to compare.

Every step runs in its own Python subprocess that calls the CLI in-process and prints
its own peak RSS (``ru_maxrss``). The last line is
``peak_rss_mib embed_large=<..> predict_large=<..> embed_small=<..> predict_small=<..>``.
It fails (exit 1) when a step of the large slide exceeds ``--limit-mib`` (default 1500).

Run: ``python benchmarks/memory.py`` (``--help`` for options). The slide is kept in
``--work`` (default: ``$TMPDIR/nrm-bench``) and reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELL = 250  # level-0 px per cell of the layout (60 000 = 240 cells)

_STEP = """
import json, resource, sys, time
t0 = time.perf_counter()
step, args = sys.argv[1], json.loads(sys.argv[2])
if step == "write":
    import numpy as np
    from napari_regional_mil.synth.slides import write_synthetic_slide
    n, k = args["cells"], args["tissue_cells"]
    types = np.full((n, n), -1, np.int16)
    start = (n - k) // 2
    types[start:start + k, start:start + k] = (np.arange(k * k).reshape(k, k) // 7) % 6
    write_synthetic_slide(args["path"], types, patch_px=args["cell"], mpp=0.5, seed=1, tile=256)
    status = 0
elif step == "model":
    from napari_regional_mil.embedding.store import find_slide_cache, load_slide_embeddings
    from napari_regional_mil.model.checkpoint import Checkpoint, provenance, save_checkpoint
    from napari_regional_mil.model.config import ModelConfig
    from napari_regional_mil.model.first_model import FirstModel
    import torch
    torch.manual_seed(0)
    emb = load_slide_embeddings(find_slide_cache(args["cache"], args["slide"]))
    encoder, tiling = provenance(emb.meta)
    model = FirstModel(ModelConfig(input_dim=emb.embedding_dim, n_classes=2, hidden_dim=64, attention_dim=32)).eval()
    save_checkpoint(Checkpoint(model, ("negative", "positive"), encoder=encoder, tiling=tiling), args["model"])
    status = 0
else:
    from napari_regional_mil.cli import main
    status = main(args["argv"])
print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "status": status}))
"""


def step(name: str, **kwargs) -> dict:
    """Run one step in a fresh interpreter; its JSON record (peak RSS, seconds, exit status)."""
    proc = subprocess.run([sys.executable, "-c", _STEP, name, json.dumps(kwargs)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"step {name} failed (exit {proc.returncode})")
    record = json.loads(lines[-1])
    if record["status"] != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"step {name} exited {record['status']}")
    return record


def run_slide(label: str, size: int, args: argparse.Namespace) -> dict[str, dict]:
    """Write (once), embed and predict one slide; the records of each step."""
    cells = size // CELL
    path = args.work / f"memory_{cells * CELL}_{args.tissue_cells}.tiff"
    out: dict[str, dict] = {}
    if not path.exists():
        args.work.mkdir(parents=True, exist_ok=True)
        out["write"] = step("write", path=str(path), cells=cells, tissue_cells=args.tissue_cells, cell=CELL)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        cache, model = Path(tmp) / "cache", Path(tmp) / "model.safetensors"
        out["embed"] = step("cli", argv=["embed", str(path), "--out", str(cache), "--batch-size", str(args.batch_size),
                                         "--readers", str(args.readers)])
        step("model", cache=str(cache), slide=str(path), model=str(model))
        out["predict"] = step("cli", argv=["predict", "--model", str(model), "--cache", str(cache), path.stem,
                                           "--out", str(Path(tmp) / "pred.csv")])
        with open(Path(tmp) / "pred.csv") as fh:
            n = sum(1 for _ in fh) - 1
        assert n == 1, n
    w = cells * CELL
    for name, rec in out.items():
        print(f"{label} slide ({w} x {w} px): {name:8s} peak RSS {rec['rss_mib']:7.0f} MiB  in {rec['seconds']:6.1f} s",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=60000, help="side of the large slide in px (default 60000)")
    parser.add_argument("--small-size", type=int, default=4000,
                        help="side of the small slide in px (default 4000, enlarged to hold the tissue block)")
    parser.add_argument("--tissue-cells", type=int, default=12,
                        help="tissue block side in 250 px cells (default 12: ~130 patches of 256 px)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--limit-mib", type=float, default=1500.0, help="fail above this peak RSS (default 1500)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nrm-bench")
    args = parser.parse_args()
    t0 = time.perf_counter()
    large = run_slide("large", args.size, args)
    small = run_slide("small", max(args.small_size, (args.tissue_cells + 4) * CELL), args)  # holds the same tissue
    print(f"total {time.perf_counter() - t0:.0f} s")
    peaks = {f"{step}_{label}": rec[step]["rss_mib"] for label, rec in (("large", large), ("small", small))
             for step in ("embed", "predict")}
    print("peak_rss_mib " + " ".join(f"{k}={v:.0f}" for k, v in peaks.items()))
    over = {k: v for k, v in peaks.items() if k.endswith("large") and v > args.limit_mib}
    if over:
        raise SystemExit(f"peak RSS above {args.limit_mib:.0f} MiB: {over}")


if __name__ == "__main__":
    main()
