"""Packaging: the npe2 manifest ships inside the wheel and every contribution resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _manifest() -> dict:
    return yaml.safe_load((REPO / "napari.yaml").read_text())


def test_no_symlinks_in_the_repository():
    """A Windows checkout without symlink support gets every file (the manifest included)."""
    proc = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout:
        links = [line.split("\t", 1)[1] for line in proc.stdout.splitlines() if line.startswith("120000 ")]
    else:  # an exported copy: its own folders (not virtual environments or build output)
        skip = {"build", "dist", "__pycache__"}
        links = [str(p) for top in ("src", "tests", "docs", "scripts", "benchmarks")
                 for p in (REPO / top).rglob("*") if p.is_symlink() and not skip & set(p.parts)]
        links += [p.name for p in REPO.iterdir() if p.is_symlink()]
    assert links == []


def test_the_package_manifest_is_the_top_level_manifest():
    """npe2 loads ``napari_regional_mil/napari.yaml`` (the entry point); it must equal the top-level file."""
    package = REPO / "src" / "napari_regional_mil" / "napari.yaml"
    assert package.read_bytes() == (REPO / "napari.yaml").read_bytes(), (
        "napari.yaml and src/napari_regional_mil/napari.yaml differ: edit the top-level file, then copy it "
        "(cp napari.yaml src/napari_regional_mil/napari.yaml)"
    )


def test_manifest_python_names_resolve():
    """Every command of the manifest points at an importable callable."""
    commands = _manifest()["contributions"]["commands"]
    assert {c["id"].split(".")[-1] for c in commands} >= {
        "get_reader",
        "sample_slide",
        "slide_widget",
        "embed_widget",
        "cohort_widget",
        "train_widget",
        "predict_widget",
    }
    for command in commands:
        module_name, _, attr = command["python_name"].partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
        assert callable(obj), command["python_name"]


def test_manifest_validates_with_npe2():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(REPO / "napari.yaml")
    manifest.validate_imports()
    assert manifest.name == "napari-regional-mil"
    assert manifest.contributions.readers and manifest.contributions.sample_data


def test_installed_plugin_is_discovered_by_napari():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert "napari-regional-mil" in pm._manifests


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    """A normal (non-editable) wheel holds napari.yaml where its entry point says."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_regional_mil-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("napari_regional_mil/napari.yaml") == (REPO / "napari.yaml").read_bytes()
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
    assert "napari-regional-mil = napari_regional_mil:napari.yaml" in text
    assert "napari-regional-mil = napari_regional_mil.cli:main" in text
