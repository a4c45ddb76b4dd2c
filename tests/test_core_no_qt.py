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

_CHECK = f"""
bad = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print(",".join(bad))
"""


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_core_imports_no_gui():
    """Every core module, and the CLI's parser: no slide needed."""
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
""" + _CHECK
    assert _run(code) == "", "GUI modules imported by the core"


def test_core_slide_tissue_tiling_and_embedding_import_no_gui(synthetic_slide, odd_patch_types, tmp_path):
    """Running the core on a (synthetic) slide imports nothing of the GUI either (lazy imports included)."""
    path = synthetic_slide(odd_patch_types, patch_px=32)
    code = (
        f"""
import sys
from napari_regional_mil.embedding import embed_slide
from napari_regional_mil.jobs import run_job
from napari_regional_mil.slide import open_slide
from napari_regional_mil.tiling import TilingParams, tile_slide
from napari_regional_mil.tissue import detect_tissue
with open_slide({str(path)!r}) as s:
    tile_slide(s, detect_tissue(s), TilingParams(patch_size=32, region_size=4))
    s.display_pyramid()[-1].compute()
run_job(embed_slide({str(path)!r}, cache_dir={str(tmp_path)!r},
                    tiling_params=TilingParams(patch_size=32, region_size=4)))
"""
        + _CHECK
    )
    assert _run(code) == "", "GUI modules imported by the core"
