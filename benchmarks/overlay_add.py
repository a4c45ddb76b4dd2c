"""Benchmark: adding an overlay layer on the GUI thread, with and without napari selecting it.

In a shown viewer holding a 2,000 x 2,000 RGB slide layer (active), adds a 200 x 200 RGBA
overlay again and again, alternating two ways, and prints the median time of the add call
and of the next event-loop pass (the frame that shows the overlay), and the vispy scene's
offscreen render alone:

* ``selecting``: napari's default (the new layer becomes active, its controls are built
  and shown) and then the slide selected again, which is what the plugin did before;
* ``quiet``: :func:`napari_regional_mil._widgets._selection.adding_quietly`, what the
  plugin's overlays (tissue, grids, PCA, heatmaps, the selected region) do now.

Run (needs an X server; under a headless machine ``xvfb-run`` is used automatically)::

    python benchmarks/overlay_add.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _xvfb import needs_xvfb, rerun_under_xvfb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="adds timed per way (default: 8)")
    args = parser.parse_args(argv)
    if needs_xvfb("_OVERLAY_BENCH_XVFB"):
        return rerun_under_xvfb("_OVERLAY_BENCH_XVFB", screen="1920x1080x24")

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_regional_mil._widgets._selection import adding_quietly

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()

    def settle(n: int = 10) -> None:
        for _ in range(n):
            app.processEvents()
            time.sleep(0.01)

    settle(20)
    rng = np.random.default_rng(0)
    slide = viewer.add_image(rng.integers(0, 255, (2000, 2000, 3), dtype=np.uint8), rgb=True, name="slide")
    settle()
    times: dict[str, list[float]] = {"selecting": [], "quiet": []}
    frames: dict[str, list[float]] = {"selecting": [], "quiet": []}
    scenes: list[float] = []
    canvas = viewer.window._qt_viewer.canvas._scene_canvas  # private: the vispy SceneCanvas
    for _ in range(args.repeats):
        for way in times:
            rgba = rng.random((200, 200, 4), dtype=np.float32)
            settle(5)
            start = time.perf_counter()
            if way == "quiet":
                with adding_quietly(viewer):
                    layer = viewer.add_image(rgba, rgb=True, name="overlay", opacity=0.6)
            else:
                layer = viewer.add_image(rgba, rgb=True, name="overlay", opacity=0.6)
                viewer.layers.selection.active = slide
            times[way].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            app.processEvents()  # the next event-loop pass: the window's frame with the new layer
            frames[way].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            canvas.render()  # the vispy scene alone, drawn offscreen
            scenes.append((time.perf_counter() - start) * 1000)
            settle(5)
            viewer.layers.remove(layer)
            settle(5)
    for way, ms in times.items():
        print(f"{way:9s} add call: median {statistics.median(ms):.1f} ms  ({' '.join(f'{m:.0f}' for m in ms)})")
    for way, ms in frames.items():
        print(f"{way:9s} next pass (the frame): median {statistics.median(ms):.1f} ms  "
              f"({' '.join(f'{m:.0f}' for m in ms)})")
    print(f"the vispy scene alone, rendered offscreen: median {statistics.median(scenes):.1f} ms; the rest of a "
          "frame is Qt composing the window through OpenGL")
    ratio = statistics.median(times["quiet"]) / statistics.median(times["selecting"])
    print(f"quiet / selecting: {ratio:.2f}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
