"""napari imports and builds a dock widget on the GUI thread when the user opens it: no torch there.

torch takes seconds to import (scikit-learn about one, zarr and h5py a tenth each); the
widgets import them in their workers when a job needs them, so opening a widget never
freezes the viewer for that long.
"""

from __future__ import annotations

import subprocess
import sys

MENU = ["Slide", "Embed", "Cohort", "Train", "Predict", "Pretrain"]
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


_BUILD = """
import sys, threading
gui_imports = []

class Hook:  # heavy libraries: recorded on the GUI thread, kept out of the workers
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "sklearn", "zarr", "h5py"):
            if threading.current_thread() is threading.main_thread():
                gui_imports.append(name)
            else:
                raise ImportError(name + " is kept out of the workers by this test")
        return None

import napari

viewer = napari.Viewer(show=False)
sys.meta_path.insert(0, Hook())
for name in sys.argv[1:]:
    viewer.window.add_plugin_dock_widget("napari-regional-mil", name)
    if gui_imports:
        print(name, "imported", ",".join(gui_imports), "on the GUI thread")
        break
else:
    heavy = [name for name in ("torch", "sklearn", "zarr", "h5py") if name in sys.modules]
    print("GUI thread clean" if not heavy else "imported: " + ", ".join(heavy))
viewer.close()
"""


def test_opening_every_widget_from_the_plugins_menu_imports_no_heavy_library_on_the_gui_thread():
    """The Plugins-menu path: npe2 resolves the widget, napari injects the viewer and builds it.

    Neither torch, scikit-learn, zarr nor h5py is imported on the GUI thread. The workers'
    own imports (the GPU list, the optimiser warm-up, the reader's warm-up) are refused
    here, so that a GUI-thread import cannot hide behind a module a worker loaded first.
    """
    done = subprocess.run([sys.executable, "-c", _BUILD, *MENU], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "GUI thread clean"


def test_the_encoders_package_resolves_every_public_name_lazily():
    import napari_regional_mil.encoders as encoders

    assert set(encoders._LAZY) == set(encoders.__all__)
    for name in encoders.__all__:
        assert getattr(encoders, name) is not None


def test_the_encoder_names_without_torch_are_the_registry_names():
    from napari_regional_mil.encoders import list_encoders, register_encoder
    from napari_regional_mil.encoders.names import SELF_CONTAINED, encoder_names, is_registered

    assert encoder_names() == list_encoders() and encoder_names()[:2] == list(SELF_CONTAINED)
    assert is_registered("uni") and is_registered("uni_v1") and not is_registered("no-such-encoder")
    name = "test-widget-imports-encoder"
    register_encoder(name, lambda **_: None, overwrite=True)
    assert encoder_names()[-1] == name == list_encoders()[-1] and is_registered(name)


def test_the_embedding_packages_resolve_every_public_name_lazily():
    import napari_regional_mil.embedding as embedding
    import napari_regional_mil.embedding.store as store

    for package in (embedding, store):
        assert set(package._LAZY) == set(package.__all__)
        for name in package.__all__:
            assert getattr(package, name) is not None


_LISTING = """
import sys
from napari_regional_mil.embedding.folders import default_cache_dir
from napari_regional_mil.embedding.store import cached_contexts, find_slide_cache, list_caches
print(sorted(name for name in ("zarr", "torch", "h5py") if name in sys.modules))
"""


def test_finding_and_listing_caches_imports_no_zarr():
    """The Cohort widget lists caches and the Embed widget picks the cache folder on the GUI thread."""
    done = subprocess.run([sys.executable, "-c", _LISTING], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
