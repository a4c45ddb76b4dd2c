"""napari imports a dock widget's module on the GUI thread when the user opens it: no torch there.

torch takes seconds to import; the widgets import it in their workers when a job needs it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

WIDGETS = ["slide_widget", "embed_widget", "cohort_widget", "train_widget", "predict_widget", "pretrain_widget"]


@pytest.mark.parametrize("name", WIDGETS)
def test_importing_a_widget_module_does_not_import_torch(name):
    code = f"import sys, napari_regional_mil._widgets.{name}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
