"""napari imports a dock widget's module on the GUI thread when the user opens it: no torch there.

torch takes seconds to import; the widgets import it in their workers when a job needs it.
"""

from __future__ import annotations

import subprocess
import sys

WIDGETS = ["slide_widget", "embed_widget", "cohort_widget", "train_widget", "predict_widget", "pretrain_widget"]

_CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module("napari_regional_mil._widgets." + name)
    if "torch" in sys.modules:
        print("torch imported by", name)
        break
else:
    print("no torch")
"""


def test_importing_the_widget_modules_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", _CHECK, *WIDGETS], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "no torch"


def test_the_training_package_resolves_every_public_name_lazily():
    import napari_regional_mil.training as training

    assert set(training._LAZY) == set(training.__all__)
    for name in training.__all__:
        assert getattr(training, name) is not None
