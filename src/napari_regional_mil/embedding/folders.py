"""Where a slide's embeddings are cached when the user chose no folder (no zarr, no torch).

A widget asks for the default folder as soon as a slide is chosen, on the GUI thread, so
this module imports only the standard library and ``platformdirs``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["CACHE_FOLDER", "default_cache_dir", "user_cache_dir"]

#: Name of the cache folder made next to the slides.
CACHE_FOLDER = "regional-mil-cache"


def user_cache_dir() -> Path:
    """The user's cache folder for embeddings (``$XDG_CACHE_HOME`` on Linux, the platform's elsewhere)."""
    return Path(platformdirs.user_cache_dir("napari-regional-mil", appauthor=False)) / "embeddings"


def default_cache_dir(slide_path: str | os.PathLike[str]) -> Path:
    """``<slide folder>/regional-mil-cache`` when that folder is writable, else :func:`user_cache_dir`.

    Parameters
    ----------
    slide_path
        The slide file.
    """
    folder = Path(slide_path).expanduser().resolve().parent
    cache = folder / CACHE_FOLDER
    if (cache.is_dir() and os.access(cache, os.W_OK)) or (not cache.exists() and os.access(folder, os.W_OK)):
        return cache
    return user_cache_dir()
