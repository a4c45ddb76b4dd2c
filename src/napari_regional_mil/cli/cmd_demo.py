"""``napari-regional-mil demo``: the main job, end to end on a synthetic cohort.

Synthesise a cohort (task ``context``), embed it with the built-in encoder, train the
regional model, predict the held-out slides (:func:`napari_regional_mil.demo.run_demo`),
then open napari on the held-out positive slide with the class probabilities and both
attention heatmaps. Without a display the command re-runs itself under ``xvfb-run`` and
writes a screenshot; without Xvfb it still writes the predictions and says how to get it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import TrainingError
from ..tiling import TilingParams
from ._progress import drive

#: Set in the environment of the re-run under Xvfb (no one can see the window: screenshot and exit).
UNDER_XVFB = "NAPARI_REGIONAL_MIL_DEMO_XVFB"
XVFB_SCREEN = "-screen 0 1600x1000x24"
DOCS_IMAGE = Path(__file__).resolve().parents[3] / "docs" / "images" / "demo.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="synthetic cohort -> embed -> train the regional model -> napari with heatmaps",
        description=(
            "Build a small synthetic cohort (task 'context'), embed it with the built-in encoder, train the "
            "regional model, predict a held-out positive slide and open napari on it with the class "
            "probabilities and the region and patch attention heatmaps. About 1-3 minutes on a 2-core CPU. "
            "Without a display it runs under xvfb-run (when installed) and writes a screenshot."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("regional-mil-demo"), metavar="DIR",
                        help="folder for slides, cache, model, predictions (default: ./regional-mil-demo)")
    parser.add_argument("--slides", type=int, default=12, metavar="N", help="slides in the cohort (default: 12, >= 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-gui", action="store_true", help="do not open napari (predictions only)")
    parser.add_argument("--screenshot", type=Path, metavar="PNG",
                        help="write a screenshot of the viewer here (default without a display: DIR/demo.png)")
    parser.add_argument("--docs-image", action="store_true",
                        help="also save the screenshot as docs/images/demo.png (in a source checkout)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for a smoke test (seconds; not a useful model)")
    parser.set_defaults(func=run)


def _headless_linux() -> bool:
    """Linux without an X or Wayland display: the one case for ``xvfb-run`` (macOS and Windows have a desktop)."""
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _rerun_under_xvfb(args: argparse.Namespace, xvfb: str) -> int:
    argv = [xvfb, "-a", "-s", XVFB_SCREEN, sys.executable, "-m", "napari_regional_mil.cli", "demo",
            "--out", str(args.out), "--slides", str(args.slides), "--seed", str(args.seed)]
    if args.screenshot is not None:
        argv += ["--screenshot", str(args.screenshot)]
    if args.docs_image:
        argv.append("--docs-image")
    if args.quick:
        argv.append("--quick")
    print("no display: running the demo under Xvfb (xvfb-run); a screenshot is written instead of a window",
          file=sys.stderr, flush=True)
    return subprocess.call(argv, env={**os.environ, UNDER_XVFB: "1"})


def run(args: argparse.Namespace) -> int:
    """Run ``demo``."""
    gui = not args.no_gui
    if gui and _headless_linux() and not os.environ.get(UNDER_XVFB):
        xvfb = shutil.which("xvfb-run")
        if xvfb:
            return _rerun_under_xvfb(args, xvfb)
        print("warning: no display and no xvfb-run: napari cannot open. Install Xvfb (apt-get install xvfb) "
              "or run on a desktop; computing the predictions only.", file=sys.stderr)
        gui = False

    from .. import demo  # lazy: help (imports torch)

    try:
        settings = replace(demo.FAST if args.quick else demo.DemoSettings(),
                           n_slides=args.slides if not args.quick else demo.FAST.n_slides,
                           seed=args.seed)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    started = time.perf_counter()
    result = drive(demo.run_demo(args.out, settings=settings))
    out = args.out
    print(f"cohort {result.cohort_csv} ({settings.n_slides} slides), model {result.model_path}")
    for name, p in result.predictions.items():
        probs = ", ".join(f"{c} {x:.3f}" for c, x in zip(p.class_names, p.probabilities))
        print(f"held-out {name}: predicted {p.predicted} ({probs})")
    print(f"predictions: {result.predictions_csv}")
    print(f"computed in {time.perf_counter() - started:.0f} s")
    if not gui:
        return 0

    print("opening napari...", flush=True)
    from .._widgets._demo_view import run_event_loop, save_screenshot, show_demo  # lazy: optional (napari, Qt)

    tiling = TilingParams(patch_size=settings.patch_px, target_mpp=0.5, region_size=settings.region_size)
    shown = show_demo(result, tiling=tiling, settings=settings)
    viewer = shown["viewer"]
    headless = bool(os.environ.get(UNDER_XVFB))
    shot = args.screenshot or (out / "demo.png" if headless or args.docs_image else None)
    if shot is not None:
        path = save_screenshot(viewer, shot)
        print(f"screenshot: {path}")
        if args.docs_image:
            if (DOCS_IMAGE.parents[2] / "pyproject.toml").is_file():  # a source checkout
                shutil.copyfile(path, DOCS_IMAGE)
                print(f"screenshot: {DOCS_IMAGE}")
            else:
                print("warning: --docs-image needs a source checkout (no docs/ folder here)", file=sys.stderr)
    if headless:
        viewer.close()
        return 0
    run_event_loop()
    return 0
