"""Benchmark: open a slide in napari, time to the first rendered frame and peak memory.

Writes synthetic tiled JPEG pyramidal BigTIFFs of about 10k x 10k and 60k x 60k px with
the streaming writer (generation time printed; files cached in a temp folder), then for
each slide starts a *fresh* Python process that creates a shown ``napari.Viewer``, opens
the slide through this plugin's reader and waits until the canvas shows tissue. It prints,
per slide, the time from ``viewer.open`` to that first rendered frame and the process
peak RSS, and last the large/small ratios (target: first frame < 1 s, ratios ~1.0).

Run (needs an X server; under a headless machine ``xvfb-run`` is used automatically)::

    python benchmarks/open_slide.py [--sizes 10240 60160] [--cache DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATCH_PX = 64  # layout cell: tissue borders at 32 um steps


def make_slide(cache: Path, size: int, *, seed: int = 0) -> tuple[Path, float | None]:
    """Write (or reuse) a ``size`` x ``size`` px synthetic slide; return path and seconds taken."""
    import numpy as np

    from napari_regional_mil.synth.slides import write_synthetic_slide
    from napari_regional_mil.synth.textures import make_tissue_layout

    cells = size // PATCH_PX
    path = cache / f"bench_{cells * PATCH_PX}px_seed{seed}.tiff"
    if path.exists():
        return path, None
    layout = make_tissue_layout((cells, cells), np.random.default_rng(seed), blob_scale=0.25)
    start = time.perf_counter()
    write_synthetic_slide(path, layout, patch_px=PATCH_PX, mpp=0.5, seed=seed)
    return path, time.perf_counter() - start


def child(path: str) -> None:
    """In a fresh process: viewer, open, wait for the first frame with tissue; print JSON."""
    import resource

    import numpy as np
    from qtpy.QtWidgets import QApplication

    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 900)
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    canvas = viewer.window._qt_viewer.canvas
    # one-off costs of any first layer in a session, independent of the slide: imports
    # (dask.array, tiffslide, this plugin), pint's unit registry (built by napari) and
    # dask's scheduler set-up (the first compute imports distributed when installed)
    warm = time.perf_counter()
    import dask.array  # noqa: F401
    import pint
    import tiffslide  # noqa: F401

    import napari_regional_mil._reader  # noqa: F401

    pint.get_application_registry().pixel
    dask.array.zeros(2).sum().compute()  # dask's first compute imports its scheduler machinery
    warm = time.perf_counter() - warm
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    start = time.perf_counter()
    [layer] = viewer.open(path, plugin="napari-regional-mil")
    t_open = time.perf_counter() - start
    frame = None
    while time.perf_counter() - start < 60:
        app.processEvents()
        frame = np.asarray(canvas._scene_canvas.render())[..., :3]  # draws the scene now
        # tissue is purple/pink: a frame is "rendered" once it shows saturated pixels
        rgb = frame.astype(np.int16)
        if ((rgb.max(-1) - rgb.min(-1)) > 40).mean() > 0.01:
            break
    t_frame = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "warmup_s": warm, "open_s": t_open, "first_frame_s": t_frame, "peak_rss_mb": peak,
        "rss_before_open_mb": rss_before,
        "levels": len(layer.data), "level0": list(layer.data[0].shape), "data_level": int(layer.data_level),
        "frame_shape": list(frame.shape) if frame is not None else None,
    }))
    viewer.close()


def measure(path: Path) -> dict:
    """Run :func:`child` in a fresh process (under xvfb-run when there is no display)."""
    cmd = [sys.executable, __file__, "--child", str(path)]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24"] + cmd
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10240, 60160], metavar=("SMALL", "LARGE"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "napari-regional-mil-bench")
    parser.add_argument("--repeats", type=int, default=5,
                        help="fresh processes per slide (median and best reported; best is robust to a busy machine)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    import statistics

    args.cache.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in args.sizes:
        path, seconds = make_slide(args.cache, size)
        mb = path.stat().st_size / 2**20
        gen = f"generated in {seconds:.1f} s" if seconds is not None else "cached"
        print(f"slide {path.name}: {mb:,.0f} MB on disk, {gen}", flush=True)
        runs = [measure(path) for _ in range(args.repeats)]
        frame = statistics.median(r["first_frame_s"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        r0 = runs[0]
        print(
            f"  {r0['level0'][1]} x {r0['level0'][0]} px, {r0['levels']} levels (shown: level {r0['data_level']}): "
            f"open {statistics.median(r['open_s'] for r in runs):.3f} s, first frame {frame:.3f} s "
            f"(runs: {', '.join(format(r['first_frame_s'], '.3f') for r in runs)}), peak RSS {rss:.0f} MB "
            f"(viewer alone {r0['rss_before_open_mb']:.0f} MB); one-off session warm-up (imports) "
            f"{statistics.median(r['warmup_s'] for r in runs):.2f} s, not counted",
            flush=True,
        )
        results[size] = (frame, min(r["first_frame_s"] for r in runs), rss)
    (f_small, b_small, m_small), (f_large, b_large, m_large) = results[args.sizes[0]], results[args.sizes[1]]
    print(f"first frame: small {f_small:.3f} s (best {b_small:.3f}), large {f_large:.3f} s (best {b_large:.3f}) "
          "(target < 1 s)")
    print(f"peak RSS:    small {m_small:.0f} MB, large {m_large:.0f} MB")
    print(f"ratios large/small: first frame {f_large / f_small:.2f} (best-of {b_large / b_small:.2f}), "
          f"peak RSS {m_large / m_small:.2f} (target ~1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
