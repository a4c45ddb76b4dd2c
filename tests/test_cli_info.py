"""``napari-regional-mil info``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_regional_mil.cli import main


def test_info_text_cmu1(testslides_dir, capsys):
    assert main(["info", str(testslides_dir / "CMU-1-Small-Region.svs")]) == 0
    out = capsys.readouterr().out
    for expected in [
        "vendor:            aperio",
        "size:              2220 x 2967 px",
        "mpp:               0.499 x 0.499 um/px (from the slide)",
        "objective power:   20x",
        "associated images: thumbnail, label, macro",
        "level 0:         2220 x 2967 px, downsample 1",
        "patch size:      256.51 level-0 px",
        "patch grid:      11 rows x 8 columns",
        "regions:         2",
    ]:
        assert expected in out


def test_info_json_boxes_with_mpp(testslides_dir, capsys):
    assert main(["info", str(testslides_dir / "boxes.tiff"), "--mpp", "0.25", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["slide"]["level_dimensions"] == [[300, 250], [150, 125], [75, 62], [37, 31]]
    assert data["slide"]["level_downsamples"][:2] == [1.0, 2.0]
    assert data["slide"]["mpp"] == [0.25, 0.25] and data["slide"]["mpp_source"] == "user"
    assert data["tiling"]["params"]["patch_size"] == 256
    assert data["tiling"]["patch_size_level0"] == 512.0
    assert "smaller than one patch" in data["tiling"]["error"]


def test_info_without_mpp_explains(testslides_dir, capsys):
    assert main(["info", str(testslides_dir / "kidney-48-5.tif")]) == 0
    out = capsys.readouterr().out
    assert "mpp:               none (unknown)" in out and "--mpp" in out
    assert main(["info", str(testslides_dir / "kidney-48-5.tif"), "--mpp", "1", "--patch-size", "32",
                 "--region-size", "4", "--json"]) == 0
    tiling = json.loads(capsys.readouterr().out)["tiling"]
    assert tiling["n_patches"] > 0 and tiling["grid_shape"] == [56, 93]


def test_info_small_slide(testslides_dir, capsys):
    assert main(["info", str(testslides_dir / "small.svs")]) == 0
    assert "one patch is 257 x 257 px" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, b"", b"plain text, not a slide"])
def test_info_bad_input_one_line_exit_2(tmp_path, content):
    path = tmp_path / "bad.svs"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "napari_regional_mil.cli", "info", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {path}: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_info_names_the_backend_and_turns_library_warnings_into_lines(tmp_path, capsys):
    import numpy as np
    import tifffile

    path = tmp_path / "scan.tif"  # NDPI's marker tags: tiffslide parses it as Hamamatsu and warns
    tifffile.imwrite(
        path,
        np.full((96, 128, 3), 200, np.uint8),
        tile=(32, 32),
        photometric="rgb",
        compression="jpeg",
        metadata=None,
        extratags=[(65420, 4, 1, 1, True), (271, "s", 0, "Hamamatsu", True)],
    )
    assert main(["info", str(path), "--mpp", "0.5", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["slide"]["backend"] == "tiffslide" and data["slide"]["vendor"] == "hamamatsu"
    assert (
        "scan.tif: tiffslide: hamamatsu-format metadata parsing only partially implemented!"
        in data["slide"]["warnings"]
    )
    assert "UserWarning" not in captured.err and "hamamatsu" not in captured.err
    assert main(["info", str(path), "--mpp", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "backend:           tiffslide" in out
    assert "warning: scan.tif: tiffslide: hamamatsu-format metadata parsing only partially implemented!" in out


def test_info_with_the_openslide_backend(testslides_dir, capsys):
    assert main(["info", str(testslides_dir / "CMU-1-Small-Region.svs"), "--backend", "openslide", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["slide"]["backend"] == "openslide" and data["slide"]["dimensions"] == [2220, 2967]
    assert data["tiling"]["n_patches"] > 0
