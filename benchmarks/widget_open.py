"""Benchmark: opening each dock widget from the Plugins menu, as a user does, in a fresh napari.

For each of the six widgets, a fresh Python process makes a shown viewer, then times
``viewer.window.add_plugin_dock_widget("napari-regional-mil", NAME)`` (napari imports
the widget's module and builds it on the GUI thread: the viewer is frozen for that long),
then runs the event loop for ``--settle`` seconds while the widget's start-up workers run
(e.g. the GPU list, the optimiser warm-up), recording the longest event-loop stall (a
10 ms ``QTimer``). An import hook notes which thread imported torch, if any: it must not
be the GUI thread (torch takes seconds to import). Medians of ``--repeats`` processes.

``--src DIR`` runs another checkout's ``src`` (e.g. a ``git worktree`` of an earlier
commit) for a before/after comparison in the same run.

Run (needs an X server; on a headless machine ``xvfb-run`` is used automatically)::

    python benchmarks/widget_open.py [--repeats 3] [--settle 3] [--src OTHER/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _xvfb import needs_xvfb, rerun_under_xvfb

WIDGETS = ("Slide", "Embed", "Cohort", "Train", "Predict", "Pretrain")

_CHILD = r"""
import json, sys, threading, time
torch_thread = []

class _Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not torch_thread:
            torch_thread.append(threading.current_thread().name)
        return None

import napari
from qtpy.QtCore import QElapsedTimer, QTimer
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=True)
app = QApplication.instance()
end = time.perf_counter() + 1.0
while time.perf_counter() < end:
    app.processEvents()
sys.meta_path.insert(0, _Hook())
start = time.perf_counter()
viewer.window.add_plugin_dock_widget("napari-regional-mil", sys.argv[1])
build_s = time.perf_counter() - start
stalls = []
clock = QElapsedTimer()
clock.start()
def tick():
    stalls.append(max(0, clock.restart() - 10))
timer = QTimer()
timer.timeout.connect(tick)
timer.start(10)
end = time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < end:
    app.processEvents()
    time.sleep(0.001)
timer.stop()
print(json.dumps({"build_s": build_s, "max_stall_ms": max(stalls[1:] or [0]),
                  "torch_thread": torch_thread[0] if torch_thread else None}))
viewer.close()
"""


def run_one(widget: str, settle: float, src: str | None) -> dict:
    """One fresh process: build ``widget`` and watch the event loop for ``settle`` s."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, "-c", _CHILD, widget, str(settle)], env=env, capture_output=True,
                         text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{widget}: the child failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> int:
    """Parse the options, run the processes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of event loop watched after the build")
    parser.add_argument("--src", action="append", default=[],
                        help="another checkout's src folder to compare (repeatable)")
    args = parser.parse_args()
    if needs_xvfb():
        return rerun_under_xvfb()
    sources: list[str | None] = [*args.src, None]
    print("| code | widget | build on the GUI thread (s) | max stall after (ms) | torch imported in |")
    print("|---|---|---|---|---|")
    worst: dict[str | None, float] = {}
    gui_torch: dict[str | None, int] = {}
    for widget in WIDGETS:
        runs: dict[str | None, list[dict]] = {src: [] for src in sources}
        for _ in range(args.repeats):
            for src in sources:  # alternating, so the machine's state is shared
                runs[src].append(run_one(widget, args.settle, src))
        for src in sources:
            build = statistics.median(r["build_s"] for r in runs[src])
            stall = statistics.median(r["max_stall_ms"] for r in runs[src])
            threads = sorted({str(r["torch_thread"]) for r in runs[src]})
            worst[src] = max(worst.get(src, 0.0), build)
            gui_torch[src] = gui_torch.get(src, 0) + sum(r["torch_thread"] == "MainThread" for r in runs[src])
            print(f"| {src or 'this checkout'} | {widget} | {build:.2f} | {stall:.0f} | {', '.join(threads)} |",
                  flush=True)
    for src in sources:
        tag = "this" if src is None else src
        print(f"[{tag}] max_build_s={worst[src]:.2f} torch_on_gui_thread={gui_torch[src]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
