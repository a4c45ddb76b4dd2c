"""Benchmark: open a slide in napari through this plugin, side by side with the plain reader.

Writes synthetic tiled JPEG pyramidal BigTIFFs of about 10k x 10k and 60k x 60k px with
the streaming writer (files cached in a temp folder), then per slide runs fresh Python
processes, alternating this plugin (``viewer.open(path, plugin="napari-regional-mil")``,
what a user does) and the plain 15-line tiffslide + dask reader
(:func:`open_plain`): each creates a shown ``napari.Viewer``, opens the slide, waits for
the first frame that shows tissue, then zooms to one level-0 pixel per screen pixel at
the slide centre and waits for the level-0 frame. It prints medians of wall time and
process CPU time (CPU time is steadier on a busy machine) for the open call, open ->
first frame and zoom -> level-0 frame, the peak RSS, and the plugin/plain ratios
(targets: open and first frame within 1.1 x, zoom no slower), and the garbage collector's full
passes between the open and the first frame (each one walks the whole napari heap on the GUI
thread). A third reader, ``layer``,
is this plugin's reader with its layer data added directly (``viewer.add_layer``), which is
what the Slide widget's Open does: the difference between ``plugin`` and ``layer`` is
napari's own File > Open path (``viewer.open``: npe2 resolves the reader, an "Opening Files"
progress bar in the activity dock), which every reader plugin pays. ``--warm`` imports dask,
tiffslide and the plugin before the clock starts, leaving each reader's own work.
The shared viewer peer benchmark (``../shared/peers/run_all.sh``) gives the same
comparison with other peers; see ``docs/benchmarks.md``.

Run (needs an X server; under a headless machine ``xvfb-run`` is used automatically)::

    python benchmarks/open_slide.py [--sizes 10240 60160] [--cache DIR] [--repeats 5] [--warm]
                                    [--compare-python PEER_VENV/bin/python]
"""

from __future__ import annotations

import argparse
import gc
import importlib
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


def open_plain(viewer, path: str) -> list:
    """The plain reader this plugin is held to: tiffslide's zarr levels wrapped by dask, 15 lines."""
    import dask.array as da
    from tiffslide import TiffSlide

    slide = TiffSlide(path)
    group = slide.zarr_group
    levels = [da.from_zarr(group[k]) for k in sorted(group.array_keys(), key=int)]
    mx, my = slide.properties.get("tiffslide.mpp-x"), slide.properties.get("tiffslide.mpp-y")
    scale = (float(my), float(mx)) if mx and my else (1.0, 1.0)
    return [viewer.add_image(levels, multiscale=True, rgb=True, scale=scale, metadata={"tiffslide": slide})]


#: dask's first ``compute`` in a fresh process with napari imported (what the first slice pays).
_FIRST_COMPUTE = (
    "import time, importlib.util, napari, dask.array as da, numpy as np\n"
    "t = time.perf_counter(); np.asarray(da.zeros((1,), chunks=1))\n"
    "print(time.perf_counter() - t, importlib.util.find_spec('distributed') is not None)"
)


def first_compute(python: str = sys.executable, *, repeats: int = 3) -> tuple[float, bool]:
    """Median seconds of dask's first compute in fresh processes of ``python``, and whether distributed is installed.

    With ``distributed`` installed (this project's ``[cluster]`` extra), dask's scheduler
    choice imports it at the first compute of any dask array: a slide reader's first slice
    pays that, in the GUI thread, whatever the reader.
    """
    runs = [subprocess.run([python, "-c", _FIRST_COMPUTE], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(repeats)]
    return sorted(float(r[0]) for r in runs)[len(runs) // 2], runs[0][1] == "True"


def child(path: str, reader: str, warm: bool) -> None:
    """In a fresh process: viewer, open, first frame with tissue, zoom to level 0; print JSON."""
    import resource

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 900)
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    canvas = viewer.window._qt_viewer.canvas
    warm_s = 0.0
    if warm:
        # one-off costs of any first layer in a session, independent of the slide: imports
        # (dask.array, tiffslide, this plugin), pint's unit registry (built by napari) and
        # dask's scheduler set-up (the first compute imports distributed when installed)
        start = time.perf_counter()
        import dask.array
        import pint

        for name in ("tiffslide", "napari_regional_mil._reader"):
            importlib.import_module(name)
        _ = pint.get_application_registry().pixel
        dask.array.zeros(2).sum().compute()  # dask's first compute imports its scheduler machinery
        warm_s = time.perf_counter() - start
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def frame_with_tissue() -> np.ndarray | None:
        app.processEvents()
        frame = np.asarray(canvas._scene_canvas.render())[..., :3]  # draws the scene now
        rgb = frame.astype(np.int16)  # tissue is purple/pink: saturated pixels
        return frame if ((rgb.max(-1) - rgb.min(-1)) > 40).mean() > 0.01 else None

    full_passes: list[float] = []  # the collector's full passes from the open to the first frame (ms)
    pass_start: list[float] = []

    def on_collection(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                pass_start[:] = [time.perf_counter()]
            elif pass_start:
                full_passes.append(1000 * (time.perf_counter() - pass_start[0]))

    gc.callbacks.append(on_collection)
    cpu, start = time.process_time(), time.perf_counter()
    if reader == "plain":
        [layer] = open_plain(viewer, path)
    elif reader == "layer":  # this plugin's reader, its layer added directly (the Slide widget's Open)
        from napari.layers import Layer

        from napari_regional_mil._reader import napari_get_reader

        data, kwargs, kind = napari_get_reader(path)(path)[0]
        layer = viewer.add_layer(Layer.create(data, kwargs, kind))
    else:
        [layer] = viewer.open(path, plugin="napari-regional-mil")
    t_open, cpu_open = time.perf_counter() - start, time.process_time() - cpu
    frame = None
    while frame is None and time.perf_counter() - start < 60:
        frame = frame_with_tissue()
    t_frame, cpu_frame = time.perf_counter() - start, time.process_time() - cpu
    gc.callbacks.remove(on_collection)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(10):  # settle at the overview
        frame_with_tissue()
    h0, w0 = layer.data[0].shape[:2]
    cpu, start = time.process_time(), time.perf_counter()
    viewer.camera.center = tuple(layer.data_to_world((h0 // 2 + 0.25, w0 // 2 + 0.25)))
    viewer.camera.zoom = 1 / float(layer.scale[-1])  # one level-0 pixel per screen pixel
    zoomed = None
    while time.perf_counter() - start < 60 and (zoomed is None or layer.data_level != 0):
        zoomed = frame_with_tissue()
    t_zoom, cpu_zoom = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({
        "reader": reader, "warmup_s": warm_s, "open_s": t_open, "first_frame_s": t_frame, "zoom_s": t_zoom,
        "gc_full_passes": len(full_passes), "gc_full_ms": sum(full_passes),
        "open_cpu_s": cpu_open, "first_frame_cpu_s": cpu_frame, "zoom_cpu_s": cpu_zoom,
        "peak_rss_mb": peak, "peak_rss_after_zoom_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_open_mb": rss_before, "levels": len(layer.data), "level0": list(layer.data[0].shape),
        "frame_shape": list(frame.shape) if frame is not None else None,
    }))
    viewer.close()


def measure(path: Path, reader: str, warm: bool) -> dict:
    """Run :func:`child` in a fresh process (under xvfb-run when there is no display)."""
    cmd = [sys.executable, __file__, "--child", str(path), "--reader", reader] + (["--warm"] if warm else [])
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24"] + cmd
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10240, 60160], metavar="SIZE")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "napari-regional-mil-bench")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per slide and reader")
    parser.add_argument("--warm", action="store_true",
                        help="import dask, tiffslide and this plugin before the clock starts (both readers)")
    parser.add_argument("--compare-python", metavar="PY",
                        help="also time dask's first compute in this interpreter's environment (e.g. a peer's venv)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--reader", choices=("plugin", "layer", "plain"), default="plugin", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.reader, args.warm)
        return 0
    import statistics

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    args.cache.mkdir(parents=True, exist_ok=True)
    print("reader: this plugin through viewer.open (what a user does) against the plain tiffslide + dask reader;",
          "fresh process per run, the two alternating; medians; wall s (CPU s)", "(imports warmed)" if args.warm else
          "(imports counted)", flush=True)
    for label, python in (("this environment", sys.executable), (args.compare_python, args.compare_python)):
        if python:
            seconds, installed = first_compute(python)
            print(f"dask's first compute in {label}: {seconds:.3f} s (distributed "
                  f"{'installed: dask imports it' if installed else 'not installed'}); every reader's first slice "
                  "pays it", flush=True)
    for size in args.sizes:
        path, seconds = make_slide(args.cache, size)
        mb = path.stat().st_size / 2**20
        gen = f"generated in {seconds:.1f} s" if seconds is not None else "cached"
        print(f"slide {path.name}: {mb:,.0f} MB on disk, {gen}", flush=True)
        runs: dict[str, list[dict]] = {"plugin": [], "layer": [], "plain": []}
        for _ in range(args.repeats):
            for reader in ("plain", "plugin", "layer"):
                runs[reader].append(measure(path, reader, args.warm))
        for reader, rs in runs.items():
            r0 = rs[0]
            print(
                f"  {reader:6s} {r0['level0'][1]} x {r0['level0'][0]} px, {r0['levels']} levels: "
                f"open {med(rs, 'open_s'):.3f} ({med(rs, 'open_cpu_s'):.3f}), "
                f"first frame {med(rs, 'first_frame_s'):.3f} ({med(rs, 'first_frame_cpu_s'):.3f}), "
                f"zoom to level 0 {med(rs, 'zoom_s'):.3f} ({med(rs, 'zoom_cpu_s'):.3f}), "
                f"peak RSS {med(rs, 'peak_rss_after_zoom_mb'):.0f} MB; full garbage collections to the first frame: "
                f"{sum(r['gc_full_passes'] for r in rs)} in {len(rs)} runs, {med(rs, 'gc_full_ms'):.0f} ms median",
                flush=True,
            )
        plain = runs["plain"]
        for name in ("plugin", "layer"):
            ours = runs[name]
            ratio = {k: med(ours, k) / med(plain, k) for k in ("open_s", "first_frame_s", "zoom_s", "open_cpu_s",
                                                               "first_frame_cpu_s", "zoom_cpu_s")}
            print(f"  {name} / plain: open {ratio['open_s']:.2f} (CPU {ratio['open_cpu_s']:.2f}), first frame "
                  f"{ratio['first_frame_s']:.2f} (CPU {ratio['first_frame_cpu_s']:.2f}), zoom {ratio['zoom_s']:.2f} "
                  f"(CPU {ratio['zoom_cpu_s']:.2f})  (targets: open and first frame <= 1.1, zoom <= 1.0)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
