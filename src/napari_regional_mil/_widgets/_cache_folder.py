"""Where a slide's embeddings are cached by default (the Embed, Cohort and Predict widgets)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_FOLDER", "default_cache_dir"]

#: Name of the cache folder made next to a slide.
CACHE_FOLDER = "regional-mil-cache"


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "napari-regional-mil" / "embeddings"


def default_cache_dir(slide_path: str | Path) -> Path:
    """``<slide folder>/regional-mil-cache`` when that folder is writable, else the user cache.

    Parameters
    ----------
    slide_path
        The slide file.
    """
    folder = Path(slide_path).expanduser().resolve().parent
    cache = folder / CACHE_FOLDER
    if (cache.is_dir() and os.access(cache, os.W_OK)) or (not cache.exists() and os.access(folder, os.W_OK)):
        return cache
    return _user_cache_dir()
