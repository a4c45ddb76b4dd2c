"""The core imports neither Qt nor napari nor magicgui."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "napari_regional_mil.slide",
    "napari_regional_mil.slide.core",
    "napari_regional_mil.tissue",
    "napari_regional_mil.tiling",
    "napari_regional_mil.geometry",
    "napari_regional_mil.synth.textures",
    "napari_regional_mil.synth.slides",
    "napari_regional_mil.cli",
    "napari_regional_mil.cli.cmd_info",
]
FORBIDDEN = ["qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy"]


def test_core_imports_no_gui(testslides_dir):
    code = f"""
import sys, importlib, pkgutil
import napari_regional_mil as pkg
NAPARI_SIDE = ("napari_regional_mil._widgets", "napari_regional_mil._reader", "napari_regional_mil._sample_data")
core = [m.name for m in pkgutil.walk_packages(pkg.__path__, "napari_regional_mil.")
        if not m.name.startswith(NAPARI_SIDE) and not m.name.endswith("__main__")]
assert len(core) > 40, core
for name in {CORE!r} + core:
    importlib.import_module(name)
from napari_regional_mil.cli import build_parser
build_parser()
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tissue import detect_tissue
from napari_regional_mil.tiling import tile_slide
with open_slide({str(testslides_dir / "CMU-1-Small-Region.svs")!r}) as s:
    tile_slide(s, detect_tissue(s))
    s.display_pyramid()[-1].compute()
bad = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print(",".join(bad))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"GUI modules imported by the core: {proc.stdout.strip()}"
