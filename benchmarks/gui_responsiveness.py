"""Benchmark: does the viewer's GUI thread ever wait while slides open, embed and train.

In a shown napari viewer the Slide, Embed, Cohort and Train widgets are docked through
napari's own path (``add_plugin_dock_widget``), then, by clicking their buttons as a user
would: the Slide widget opens three slides one after the other (each read in a worker),
the Embed widget embeds the last one (the real embedding workers) and the Train widget
trains the regional model on the Cohort widget's cohort (the other slides were embedded
before the clock started). Meanwhile ``--load`` other processes keep CPU cores busy
(default 1: a pathologist's machine does other things too).

A ``QTimer`` fires every 10 ms; a tick's stall is how much later than 10 ms it fires. Printed
per phase (idle, open, embed, train) and over all: ticks, max, p99 and mean stall in ms, the
longest stalls with where they happened, and the GUI-thread time of the widgets' callbacks
(the jobs' callbacks; the Slide widget adding an opened slide's layer, which is mostly
napari's ``add_layer``; the plugin following napari's layer events).
Last lines: ``p99_stall_ms=<x>`` (target < 20) and ``max_stall_ms=<x>`` (target < 50).

Run (needs an X server; on a headless machine ``xvfb-run`` is used automatically)::

    python benchmarks/gui_responsiveness.py [--slides 6] [--epochs 20] [--load 1] [--work DIR]

Diagnosis: with ``GUI_BENCH_SAMPLE=1`` a sampler thread prints every thread's top frames
whenever the GUI thread is more than 40 ms late (stderr), to see what holds it up; with
``GUI_BENCH_PROFILE=1`` every widget callback that takes more than 40 ms prints its
cProfile (stderr; the profiler slows the callbacks, so the stall figures are then not the
ones to report).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _xvfb import needs_xvfb, rerun_under_xvfb

INTERVAL_MS = 10
PLUGIN = "napari-regional-mil"
PROFILE = bool(os.environ.get("GUI_BENCH_PROFILE"))
_BUSY = "import time\nt = time.perf_counter()\nwhile True:\n    t += 1\n"


def _start_sampler(state: dict) -> None:
    """Diagnosis: every 10 ms, when the GUI thread is late by > 40 ms, print every thread's top frames."""
    import threading
    import traceback

    main_id = threading.main_thread().ident

    def sample() -> None:
        while True:
            time.sleep(0.01)
            late = (time.perf_counter() - state["last"]) * 1000
            if late > 40 and state["phase"] not in ("setup", "done"):
                lines = [f"--- {state['phase']} late {late:.0f} ms"]
                for tid, frame in sys._current_frames().items():
                    stack = traceback.extract_stack(frame)[-4:]
                    where = " <- ".join(
                        f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(stack)
                    )
                    lines.append(f"  {'MAIN' if tid == main_id else tid}: {where}")
                print("\n".join(lines), file=sys.stderr, flush=True)

    threading.Thread(target=sample, daemon=True).start()


def _time_callbacks() -> dict[str, list[float]]:
    """Wrap the GUI-thread callbacks of the jobs, and the slide's arrival, to time them (ms per call).

    Call it before the viewer and the widgets are made (the layer-list handler is connected then).
    """
    from napari_regional_mil._widgets import _job_handle, _state, _worker, slide_widget

    busy: dict[str, list[float]] = {
        "job start": [], "job event": [], "job result": [], "slide layer added": [], "widgets follow the layers": []
    }

    def timed(owner, name, key):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            profiler = cProfile.Profile() if PROFILE else None
            t = time.perf_counter()
            try:
                if profiler is None:
                    return original(*args, **kwargs)
                return profiler.runcall(original, *args, **kwargs)
            finally:
                ms = (time.perf_counter() - t) * 1000
                busy[key].append(ms)
                if profiler is not None and ms > 40:
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                    print(f"--- {key} took {ms:.0f} ms (profiled)\n{out.getvalue()}", file=sys.stderr, flush=True)

        setattr(owner, name, wrapper)

    timed(_job_handle.JobHandle, "_on_yield", "job event")
    timed(_job_handle.JobHandle, "_on_returned", "job result")
    # an opened slide: the Slide widget adds its layer (napari's add_layer, inside a job result), and
    # every widget follows the new slide (the shared state's handler of napari's layer events)
    timed(slide_widget.SlideWidget, "_show_opened", "slide layer added")
    timed(_state.ViewerState, "_follow_layers", "widgets follow the layers")
    # the training plot is drawn in a worker; showing its image is a job result
    original_start = _worker.start_job

    def start_job(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original_start(*args, **kwargs)
        finally:
            busy["job start"].append((time.perf_counter() - t) * 1000)

    for module in _widget_modules():
        if getattr(module, "start_job", None) is original_start:
            module.start_job = start_job
    return busy


def _record_collections(state: dict) -> list[tuple[str, int, float, str]]:
    """Every garbage collection over 20 ms: ``(phase, generation, ms, thread name)`` (it holds the GIL)."""
    import gc
    import threading

    pauses: list[tuple[str, int, float, str]] = []
    started: dict[int, float] = {}

    def callback(phase: str, info: dict) -> None:
        ident = threading.get_ident()
        if phase == "start":
            started[ident] = time.perf_counter()
        elif ident in started:
            ms = (time.perf_counter() - started.pop(ident)) * 1000
            if ms > 20:
                pauses.append((state["phase"], int(info["generation"]), ms, threading.current_thread().name))

    gc.callbacks.append(callback)
    return pauses


def _widget_modules() -> list:
    import importlib
    import pkgutil

    import napari_regional_mil._widgets as package

    return [
        importlib.import_module(f"{package.__name__}.{m.name}")
        for m in pkgutil.iter_modules(package.__path__)
    ]


def _prepare(work: Path, n_slides: int) -> tuple:
    """A synthetic cohort; every slide but the first embedded (the GUI embeds that one)."""
    from napari_regional_mil.embedding import embed_slide
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.synth.cohort import write_synthetic_cohort
    from napari_regional_mil.tiling import TilingParams

    t0 = time.perf_counter()
    cohort = run_job(
        write_synthetic_cohort(
            work / "slides",
            n_slides=max(4, n_slides),
            seed=0,
            task="context",
            patch_px=64,
            region_size=6,
            region_grid=(4, 5),
        )
    )
    params = TilingParams(patch_size=64, target_mpp=0.5, region_size=6)
    for path in cohort.slides[1:]:
        run_job(embed_slide(path, cache_dir=work / "cache", tiling_params=params, batch_size=128))
    print(
        f"cohort: {len(cohort.slides)} slides of 4x5 regions of 6x6 patches of 64 px; all but one embedded "
        f"beforehand ({time.perf_counter() - t0:.0f} s)"
    )
    return cohort, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=6, help="slides in the cohort trained on (default: 6)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    parser.add_argument(
        "--load", type=int, default=1, help="other processes keeping a core busy (default: 1)"
    )
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if needs_xvfb("_GUI_BENCH_XVFB"):
        return rerun_under_xvfb("_GUI_BENCH_XVFB")

    import napari
    import torch
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="gui-bench-")
    work = args.work or Path(tmp.name)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load: {args.load} busy process(es)"
    )
    cohort, params = _prepare(work, args.slides)
    load = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.load)]

    busy = _time_callbacks()
    viewer = napari.Viewer(title="gui responsiveness")
    window = viewer.window
    _, slide_w = window.add_plugin_dock_widget(PLUGIN, "Slide")
    _, embed_w = window.add_plugin_dock_widget(PLUGIN, "Embed", tabify=True)
    _, cohort_w = window.add_plugin_dock_widget(PLUGIN, "Cohort", tabify=True)
    _, train_w = window.add_plugin_dock_widget(PLUGIN, "Train", tabify=True)
    cohort_w.embed_box.set_cache_dir(work / "cache")
    cohort_w.embed_box.tiling.set_params(params)
    cohort_w.import_csv(cohort.labels_csv)
    embed_w.cache_dir.set_text(str(work / "cache"))
    embed_w._cache_dir_auto = False
    train_w.optim_fields.epochs.setValue(args.epochs)
    train_w.optim_fields.patience.setValue(args.epochs)
    train_w.model_fields.hidden_dim.setValue(64)
    train_w.out_path.setText(str(work / "model.safetensors"))
    app = QApplication.instance()

    def _startup_jobs() -> list[str]:
        """The widgets' start-up workers still running (first-layer costs, the GPU list, the training warm-up)."""
        from napari_regional_mil._widgets._worker import running_job

        kinds = ("slide-warm-up", "embed-devices", "train-warm-up")
        return [kind for kind in kinds if running_job(kind) is not None]

    to_open = [cohort.slides[2], cohort.slides[1], cohort.slides[0]]  # the last one is embedded
    ticks: dict[str, list[float]] = {"idle": [], "open": [], "embed": [], "train": []}
    cpu: dict[str, list[float]] = {phase: [] for phase in ticks}  # GUI-thread CPU ms per tick interval
    state = {
        "phase": "setup",
        "last": time.perf_counter(),
        "phase_t0": time.perf_counter(),
        "opened": 0,
        "cpu": time.thread_time(),
    }
    collections = _record_collections(state)
    durations: dict[str, float] = {}
    long_stalls: list[tuple[str, float, float, float]] = []

    def switch(phase: str) -> None:
        now = time.perf_counter()
        durations[state["phase"]] = durations.get(state["phase"], 0.0) + now - state["phase_t0"]
        state["phase"], state["phase_t0"] = phase, now

    def open_next() -> None:
        slide_w.picker.set_text(str(to_open[state["opened"]]))
        state["opened"] += 1
        slide_w.open_button.click()

    def tick() -> None:
        now, now_cpu = time.perf_counter(), time.thread_time()
        phase = state["phase"]
        if phase in ticks:
            stall = max(0.0, (now - state["last"]) * 1000 - INTERVAL_MS)
            busy_ms = (now_cpu - state["cpu"]) * 1000
            ticks[phase].append(stall)
            cpu[phase].append(busy_ms)
            if stall > 20:
                long_stalls.append((phase, now - state["phase_t0"], stall, busy_ms))
        state["last"], state["cpu"] = now, now_cpu
        since = now - state["phase_t0"]
        if phase == "setup" and since > 2.0 and not _startup_jobs():  # up, drawn, the widgets' start-up done
            switch("idle")
        elif phase == "idle" and since > 2.0:
            switch("open")
            open_next()
        elif phase == "open" and slide_w.open_button.isEnabled() and since > 0.5 * state["opened"]:
            opened = (
                slide_w.slide_layer is not None
                and slide_w.slide_layer.name == to_open[state["opened"] - 1].stem
            )
            if opened and state["opened"] < len(to_open):
                open_next()
            elif opened and since > 0.5 * state["opened"] + 1.0:  # the last slide drawn for a second
                switch("embed")
                embed_w.fields.set_params(params)
                embed_w.embed_button.click()
        elif phase == "embed" and embed_w.embed_button.isEnabled() and since > 0.5:
            switch("train")
            cohort_w.refresh_embedded()
            train_w.start_button.click()
        elif phase == "train" and train_w.start_button.isEnabled() and since > 0.5:
            state["train_status"] = train_w.status.text()
            state["embed_status"] = embed_w.status.text()
            switch("done")
            app.quit()

    if os.environ.get("GUI_BENCH_SAMPLE"):
        _start_sampler(state)
    timer = QTimer()
    timer.setInterval(INTERVAL_MS)
    timer.timeout.connect(tick)
    timer.start()
    state["last"] = time.perf_counter()
    try:
        napari.run()
    finally:
        timer.stop()
        for process in load:
            process.kill()
            process.wait()

    print(
        "\n| phase | seconds | ticks | max stall (ms) | p99 stall (ms) | mean stall (ms) | max GUI CPU (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    everything: list[float] = []
    for phase, values in ticks.items():
        arr = np.array(values)
        everything.extend(values)
        if arr.size:
            print(
                f"| {phase} | {durations.get(phase, 0):.1f} | {arr.size} | {arr.max():.1f} | "
                f"{np.percentile(arr, 99):.1f} | {arr.mean():.2f} | {max(cpu[phase]):.1f} |"
            )
    arr = np.array(everything)
    print(
        f"| all | {sum(durations.get(p, 0) for p in ticks):.1f} | {arr.size} | {arr.max():.1f} | "
        f"{np.percentile(arr, 99):.1f} | {arr.mean():.2f} | {max(max(v) for v in cpu.values() if v):.1f} |"
    )
    print(
        "(max GUI CPU: the GUI thread's own CPU time between two ticks; a stall much longer than it is "
        "time the GUI thread waited for a CPU core, i.e. the machine was busy)"
    )
    if long_stalls:
        worst = sorted(long_stalls, key=lambda s: -s[2])[:15]
        print(
            "\nstalls over 20 ms (phase, seconds into it, stall ms / GUI CPU ms): "
            + ", ".join(f"{p} {t:.2f}s {ms:.0f}/{c:.0f}" for p, t, ms, c in worst)
        )
    status = "saved" if (work / "model.safetensors").exists() else "NOT saved"
    print(f"\nopened {state['opened']} slides; Embed: {state.get('embed_status', '')[:90]!r}; model {status}")
    print(
        "GUI-thread time in the widgets' callbacks (max ms per call, calls): "
        + ", ".join(f"{name} {max(v):.0f} ({len(v)})" for name, v in busy.items() if v)
    )
    print(
        "garbage collections over 20 ms (phase, generation, ms, thread): "
        + (", ".join(f"{p} {g} {ms:.0f} {name}" for p, g, ms, name in collections) or "none")
    )
    if tmp is not None:
        tmp.cleanup()
    print(f"p99_stall_ms={np.percentile(arr, 99):.1f}")
    print(f"max_stall_ms={arr.max():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
