"""The widget layer's structure: widgets never import widgets; they share one state object.

Widgets (``_widgets/*_widget.py``) find what others made (the open slide, the cohort, the
model, the threshold) through the viewer's :class:`~napari_regional_mil._widgets._state.ViewerState`,
not by importing each other or keeping module-global sets of instances.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WIDGETS = Path(__file__).resolve().parents[1] / "src" / "napari_regional_mil" / "_widgets"
#: The demo's view assembles the Cohort, Train and Predict widgets in one window.
ASSEMBLERS = {"_demo_view"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to napari_regional_mil._widgets (1) or napari_regional_mil (2)
                package = ["napari_regional_mil", "_widgets"][: 3 - node.level]
                base = ".".join(package + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _modules() -> list[Path]:
    return sorted(p for p in WIDGETS.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", [p for p in _modules() if p.stem not in ASSEMBLERS], ids=lambda p: p.stem)
def test_no_module_of_the_widget_layer_imports_a_widget(path):
    widgets = {f"napari_regional_mil._widgets.{p.stem}" for p in WIDGETS.glob("*_widget.py")}
    assert not (_imports(path) & widgets), f"{path.name} imports a widget module"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_no_module_global_registry_of_widgets(path):
    text = path.read_text()
    assert "_INSTANCES" not in text and "WeakSet" not in text, path.name


def test_every_widget_uses_the_viewer_state():
    for path in WIDGETS.glob("*_widget.py"):
        assert "napari_regional_mil._widgets._state" in _imports(path), path.name
