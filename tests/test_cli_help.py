"""``napari-regional-mil --help``, every command's ``--help`` and the options table import no torch.

The commands import the torch-using core only when they run (``# lazy: help`` imports), so
``--help`` stays fast; ``settings`` and ``clinical`` are torch-free by design.
"""

from __future__ import annotations

import subprocess
import sys

from napari_regional_mil.cli import SUBCOMMANDS


def _torch_modules_after(code: str) -> str:
    """Run ``code`` in a fresh interpreter; the torch modules it imported (last line of its output)."""
    check = code + "\nprint('TORCH:' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))\n"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_help_of_every_command_imports_no_torch():
    commands = [name.replace("_", "-") for name in SUBCOMMANDS]
    code = f"""
import contextlib, io, sys
from napari_regional_mil.cli import main
for argv in [[], *[[c] for c in {commands!r}]]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*argv, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    assert "usage:" in out.getvalue(), argv
"""
    assert _torch_modules_after(code) == "TORCH:"


def test_settings_and_clinical_import_no_torch():
    code = "import sys\nimport napari_regional_mil.settings, napari_regional_mil.clinical"
    assert _torch_modules_after(code) == "TORCH:"
