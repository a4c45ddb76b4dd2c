"""The napari dock widgets and their helpers (the only Qt code besides the reader and samples)."""

from napari_regional_mil._widgets._native_libs import preload_triton

preload_triton()  # before torch can import Triton in this GUI process (see _native_libs)
