"""Screenshots of the real widgets for the user guide, into docs/images/.

Runs the demo's core job (synthetic ``context`` cohort -> embed -> train -> predict; the
same code as ``napari-regional-mil demo``), opens the outcome in a real napari viewer
(:func:`napari_regional_mil._widgets._demo_view.show_demo`) and captures the window at
each step of the user guide:

``gui-slide.png`` (slide, tissue, patch and region grids, Slide widget), ``gui-embed.png``
(Embed widget, PCA of the embeddings), ``gui-cohort.png`` (Cohort widget),
``gui-train.png`` (Train widget with the run's curves), ``gui-predict.png`` (probabilities
and both heatmaps), ``gui-region.png`` (a clicked region: its top patches), and
``demo.png`` (the README's picture).

Run (needs an X server; on a headless machine ``xvfb-run`` is used automatically)::

    python docs/make_screenshots.py [--work DIR] [--quick]

about two to four minutes on a 2-core CPU (the demo's cohort is synthesised, embedded and trained).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"
SIZE = (1600, 1000)


def _events(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.instance().processEvents()
        time.sleep(0.02)


def _shot(viewer, name: str, dock=None) -> Path:
    from napari_regional_mil._widgets._demo_view import raise_dock, save_screenshot

    if dock is not None:
        raise_dock(dock)
    _events()
    path = IMAGES / name
    shown = path.parent / f".{path.stem}.tmp.png"
    save_screenshot(viewer, shown, size=SIZE, reset=False)
    os.replace(shown, path)
    print(f"wrote {path}")
    return path


def raise_dock_and_scroll(widget, dock) -> None:
    """Show the bottom of a scrolled dock widget (the Train widget's curves)."""
    from qtpy.QtWidgets import QScrollArea

    from napari_regional_mil._widgets._demo_view import raise_dock

    raise_dock(dock)
    _events()
    for area in widget.findChildren(QScrollArea):
        area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="demo folder, reused between runs (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny demo settings (fast, pictures less telling)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("_SHOTS_XVFB"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("no display and no xvfb-run: install Xvfb (apt-get install xvfb)", file=sys.stderr)
            return 2
        return subprocess.call([xvfb, "-a", "-s", f"-screen 0 {SIZE[0]}x{SIZE[1]}x24", sys.executable, *sys.argv],
                               env={**os.environ, "_SHOTS_XVFB": "1"})

    from napari_regional_mil._widgets._demo_view import show_demo, wait_for_jobs
    from napari_regional_mil._widgets._heatmap_layers import camera_of
    from napari_regional_mil._widgets.embed_widget import EmbedWidget
    from napari_regional_mil._widgets.slide_widget import SlideWidget
    from napari_regional_mil.cli._progress import drive
    from napari_regional_mil.demo import FAST, DemoSettings, run_demo
    from napari_regional_mil.tiling import TilingParams

    import tempfile

    settings = FAST if args.quick else DemoSettings()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="regional-mil-shots-")
    result = drive(run_demo(args.work or Path(tmp.name), settings=settings))
    tiling = TilingParams(patch_size=settings.patch_px, target_mpp=0.5, region_size=settings.region_size)
    IMAGES.mkdir(parents=True, exist_ok=True)
    shown = show_demo(result, tiling=tiling, settings=settings)
    viewer, slide = shown["viewer"], shown["slide"]
    cohort_dock, train_dock, predict_dock = shown["docks"]
    window = viewer.window._qt_window
    window.resize(*SIZE)
    _events(1.0)
    _shot(viewer, "gui-predict.png", predict_dock)
    shutil.copyfile(IMAGES / "gui-predict.png", IMAGES / "demo.png")

    # a clicked region: zoomed in, its top patches listed with thumbnails
    predict = shown["predict"]
    if predict.maps is not None and predict.maps.has_region_attention:
        import numpy as np

        best = int(np.argmax(predict.maps.prediction.region_attention))
        predict.select_at(predict.maps.region_centre_world(best))
        wait_for_jobs(("predict-thumbnails",))
        _shot(viewer, "gui-region.png", predict_dock)

    # the slide, its tissue and grids (heatmaps hidden), with the Slide widget
    for layer in predict.heatmap_layers.values():
        layer.visible = False
    if predict.selection_layer is not None:
        predict.selection_layer.visible = False
    for what, visible in (("patch grid", True), ("region grid", True), ("tissue", False)):
        name = f"{what} ({slide.name})"
        if name in viewer.layers:
            viewer.layers[name].visible = visible
    slide_widget = SlideWidget(viewer)
    slide_widget.use_layer(slide)
    slide_widget.fields.set_params(tiling)
    slide_dock = viewer.window.add_dock_widget(slide_widget, name="Slide", area="right")
    window.tabifyDockWidget(predict_dock, slide_dock)
    viewer.reset_view()
    camera = camera_of(viewer)
    camera.zoom *= 1.6  # the upper-left quarter: patches visible
    camera.center = (slide.extent.world[1][0] * 0.3, slide.extent.world[1][1] * 0.3)
    _shot(viewer, "gui-slide.png", slide_dock)

    # the Embed widget: the cache is found and reused, the PCA overlay shown
    embed = EmbedWidget(viewer)
    embed_dock = viewer.window.add_dock_widget(embed, name="Embed", area="right")
    window.tabifyDockWidget(slide_dock, embed_dock)
    viewer.layers.selection.active = slide
    embed.refresh_slide()
    embed.fields.set_params(tiling)
    embed.cache_dir.set_text(str(result.cache_dir))
    embed.embed()
    wait_for_jobs(("embed",))
    for what in ("patch grid", "tissue"):
        name = f"{what} ({slide.name})"
        if name in viewer.layers:
            viewer.layers[name].visible = False
    viewer.reset_view()
    _shot(viewer, "gui-embed.png", embed_dock)
    pca = [layer for layer in viewer.layers if "PCA" in layer.name]
    for layer in pca:
        layer.visible = False

    for layer in predict.heatmap_layers.values():
        layer.visible = True
    viewer.reset_view()
    _shot(viewer, "gui-cohort.png", cohort_dock)
    raise_dock_and_scroll(shown["train"], train_dock)
    _shot(viewer, "gui-train.png", train_dock)
    viewer.close()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
