"""Benchmark: does the viewer stay responsive while embedding and training run in the background?

Writes a small synthetic cohort, then in a shown napari viewer docks the Cohort and Train
widgets exactly as a user would, opens one slide (so the canvas renders), clicks
"Embed missing" (the real embedding workers) and, when that is done, "Start" training
(the real training worker). A ``QTimer`` firing every 10 ms measures the event loop: the
stall of a tick is how much later than 10 ms it fires. Printed per phase (idle, embed,
train) and overall: ticks, max and 99th-percentile stall in ms. Last line:
``max_stall_ms=<x>`` (target < 100 ms).

Run (needs an X server; on a headless machine ``xvfb-run`` is used automatically)::

    python benchmarks/gui_responsiveness.py [--slides 4] [--epochs 20] [--work DIR]

Diagnosis: with ``GUI_BENCH_SAMPLE=1`` a sampler thread prints every thread's top frames
whenever the GUI thread is more than 80 ms late (stderr), to see what holds it up.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

INTERVAL_MS = 10


def _rerun_under_xvfb() -> int:
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print("no display and no xvfb-run: install Xvfb (apt-get install xvfb)", file=sys.stderr)
        return 2
    env = {**os.environ, "_GUI_BENCH_XVFB": "1"}
    return subprocess.call([xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv], env=env)


def _start_sampler(state: dict) -> None:
    """Diagnosis: every 20 ms, when the GUI thread is late by > 80 ms, print every thread's top frames."""
    import threading
    import traceback

    main_id = threading.main_thread().ident

    def sample() -> None:
        while True:
            time.sleep(0.02)
            late = (time.perf_counter() - state["last"]) * 1000
            if late > 80 and state["phase"] in ("embed", "train"):
                frames = sys._current_frames()
                lines = [f"--- {state['phase']} late {late:.0f} ms"]
                for tid, frame in frames.items():
                    stack = traceback.extract_stack(frame)[-3:]
                    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(stack))
                    lines.append(f"  {'MAIN' if tid == main_id else tid}: {where}")
                print("\n".join(lines), file=sys.stderr, flush=True)

    threading.Thread(target=sample, daemon=True).start()


def _time_callbacks() -> dict[str, list[float]]:
    """Wrap the GUI-thread callbacks of the jobs and the plot to time them (ms per call)."""
    from napari_regional_mil._widgets import _train_plot, _worker

    busy: dict[str, list[float]] = {"job event": [], "job result": [], "plot draw": []}

    def timed(owner, name, key):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                busy[key].append((time.perf_counter() - t) * 1000)

        setattr(owner, name, wrapper)

    timed(_worker.JobHandle, "_on_yield", "job event")
    timed(_worker.JobHandle, "_on_returned", "job result")
    timed(_train_plot.TrainingPlot, "draw", "plot draw")
    return busy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=4, help="slides to embed (default: 4)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("_GUI_BENCH_XVFB"):
        return _rerun_under_xvfb()

    import napari
    import torch
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_regional_mil._widgets.cohort_widget import CohortWidget
    from napari_regional_mil._widgets.train_widget import TrainWidget
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.synth.cohort import write_synthetic_cohort
    from napari_regional_mil.tiling import TilingParams

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="gui-bench-")
    work = args.work or Path(tmp.name)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Qt platform {os.environ.get('QT_QPA_PLATFORM', 'xcb (default)')}")
    t0 = time.perf_counter()
    cohort = run_job(write_synthetic_cohort(work / "slides", n_slides=max(2, args.slides), seed=0, task="context",
                                            patch_px=64, region_size=6, region_grid=(4, 5)))
    print(f"cohort: {len(cohort.slides)} slides of 4x5 regions of 6x6 patches of 64 px, written in "
          f"{time.perf_counter() - t0:.0f} s")

    viewer = napari.Viewer(title="gui responsiveness")
    cohort_w, train_w = CohortWidget(viewer), TrainWidget(viewer)
    viewer.window.add_dock_widget(cohort_w, name="Cohort", area="right")
    viewer.window.add_dock_widget(train_w, name="Train", area="right")
    cohort_w.embed_box.set_cache_dir(work / "cache")
    cohort_w.embed_box.tiling.set_params(TilingParams(patch_size=64, target_mpp=0.5, region_size=6))
    cohort_w.import_csv(cohort.labels_csv)
    train_w.optim_fields.epochs.setValue(args.epochs)
    train_w.optim_fields.patience.setValue(args.epochs)
    train_w.model_fields.hidden_dim.setValue(64)
    train_w.out_path.setText(str(work / "model.safetensors"))
    app = QApplication.instance()
    busy = _time_callbacks()

    ticks: dict[str, list[float]] = {"opening": [], "idle": [], "embed": [], "train": []}
    state = {"phase": "opening", "last": time.perf_counter(), "started": time.perf_counter(), "phase_t0": 0.0}
    durations: dict[str, float] = {}
    long_stalls: list[tuple[str, float, float]] = []

    def switch(phase: str) -> None:
        now = time.perf_counter()
        durations[state["phase"]] = now - state["phase_t0"]
        state["phase"], state["phase_t0"] = phase, now

    def tick() -> None:
        now = time.perf_counter()
        if state["phase"] in ticks:
            stall = max(0.0, (now - state["last"]) * 1000 - INTERVAL_MS)
            ticks[state["phase"]].append(stall)
            if stall > 100:
                long_stalls.append((state["phase"], now - state["phase_t0"], stall))
        state["last"] = now
        phase = state["phase"]
        if phase == "opening" and grid_name in viewer.layers and now - state["phase_t0"] > 1.0:
            switch("idle")
        elif phase == "idle" and now - state["phase_t0"] > 2.0:
            switch("embed")
            cohort_w.embed_missing()
        elif phase == "embed" and cohort_w.embed_box.embed_button.isEnabled() and now - state["phase_t0"] > 0.5:
            switch("train")
            train_w.start()
        elif phase == "train" and train_w.start_button.isEnabled() and now - state["phase_t0"] > 0.5:
            state["train_status"] = train_w.status.text()
            switch("done")
            app.quit()

    cohort_w.open_row(0)  # the canvas shows a slide (with its grids) while the jobs run
    grid_name = f"region grid ({cohort.slides[0].stem})"
    state["phase_t0"] = time.perf_counter()
    if os.environ.get("GUI_BENCH_SAMPLE"):
        _start_sampler(state)
    timer = QTimer()
    timer.setInterval(INTERVAL_MS)
    timer.timeout.connect(tick)
    timer.start()
    state["last"] = time.perf_counter()
    napari.run()
    timer.stop()

    print(f"\n| phase | seconds | ticks | max stall (ms) | p99 stall (ms) | mean stall (ms) |")
    print("|---|---|---|---|---|---|")
    everything = []
    for phase, values in ticks.items():
        if phase == "opening":  # opening the slide (tissue, grids) is not a background job: shown apart
            arr = np.array(values)
            if arr.size:
                print(f"| (opening the slide) | {durations.get(phase, 0):.1f} | {arr.size} | {arr.max():.1f} | "
                      f"{np.percentile(arr, 99):.1f} | {arr.mean():.2f} |")
            continue
        arr = np.array(values)
        everything.extend(arr.tolist())
        if arr.size:
            print(f"| {phase} | {durations.get(phase, 0):.1f} | {arr.size} | {arr.max():.1f} | "
                  f"{np.percentile(arr, 99):.1f} | {arr.mean():.2f} |")
    arr = np.array(everything)
    print(f"| all | {sum(durations.values()):.1f} | {arr.size} | {arr.max():.1f} | {np.percentile(arr, 99):.1f} | "
          f"{arr.mean():.2f} |")
    if long_stalls:
        print("\nstalls over 100 ms (phase, seconds into it, ms): "
              + ", ".join(f"{p} {t:.1f}s {ms:.0f}" for p, t, ms in long_stalls[:20]))
    status = "saved" if (work / "model.safetensors").exists() else "NOT saved"
    print(f"\nembedded {sum(r.embedded == 'yes' for r in cohort_w.table.rows)}/{len(cohort_w.table)} slides; "
          f"model {status}; Train widget: {state.get('train_status', '')!r}")
    print("GUI-thread time in the widgets' callbacks (max ms per call, calls): "
          + ", ".join(f"{name} {max(v):.0f} ({len(v)})" for name, v in busy.items() if v))
    if tmp is not None:
        tmp.cleanup()
    print(f"p99_stall_ms={np.percentile(arr, 99):.1f}")
    print(f"max_stall_ms={arr.max():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
