"""Keep torch's Triton from crashing a napari process that draws with Mesa.

On Linux, napari's OpenGL canvas under Mesa (``llvmpipe`` in Xvfb, VMs and remote
desktops; ``radeonsi`` on AMD GPUs) loads ``libLLVM``. The CUDA builds of torch ship
Triton, whose ``libtriton.so`` carries its own LLVM; torch imports it the first time an
optimiser is built or ``torch._dynamo`` is touched (training, the Train widget's warm-up).
Loaded after Mesa's LLVM, ``libtriton``'s LLVM binds to Mesa's symbols and the process
dies with a segmentation fault, taking napari with it.

:func:`preload_triton` loads ``libtriton.so`` first with ``RTLD_DEEPBIND``, so it binds to
its own symbols; the later ``import triton`` reuses that handle. It does nothing where
Triton is absent, already imported, or ``RTLD_DEEPBIND`` does not exist (macOS, Windows).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
from pathlib import Path

__all__ = ["preload_triton"]

logger = logging.getLogger(__name__)

_done = False


def preload_triton() -> bool:
    """Load Triton's native library with its own symbols first; return whether it did."""
    global _done
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if _done or deepbind is None or not sys.platform.startswith("linux") or "triton" in sys.modules:
        return False
    _done = True
    spec = importlib.util.find_spec("triton")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return False
    library = Path(spec.origin).parent / "_C" / "libtriton.so"
    if not library.is_file():
        return False
    try:
        ctypes.CDLL(str(library), mode=os.RTLD_NOW | deepbind)
    except OSError as exc:  # a broken Triton install: torch reports it when it imports Triton
        logger.debug("could not preload %s: %s", library, exc)
        return False
    return True
