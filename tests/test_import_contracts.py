"""The import-linter contract for the core lists every core module, so a new one is checked too."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_regional_mil"
#: The napari side: the widgets and the npe2 entry points (reader, writer, sample data).
NAPARI_SIDE = {"_widgets", "_reader", "_writer", "_sample_data"}


def _core_contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["type"] == "forbidden" and "napari" in c["forbidden_modules"])


def test_the_core_contract_covers_every_core_module():
    top_level = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top_level |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    core = {f"napari_regional_mil.{name}" for name in top_level - NAPARI_SIDE}
    listed = set(_core_contract()["source_modules"])
    assert core - listed == set(), "add these core modules to the contract's source_modules in pyproject.toml"
    assert listed - core == set(), "these listed modules no longer exist"


def test_the_napari_side_is_what_the_core_may_not_import():
    forbidden = set(_core_contract()["forbidden_modules"])
    assert {f"napari_regional_mil.{name}" for name in NAPARI_SIDE} <= forbidden
    assert {"napari", "qtpy", "magicgui"} <= forbidden
