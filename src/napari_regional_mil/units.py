"""Units in types: microns and pixels are never mixed silently.

``Microns`` are physical lengths (um); ``Level0Px`` are pixel lengths or positions at
the slide's full resolution (level 0); ``GridIndex`` counts patches on the patch grid.
They are ``NewType`` aliases of ``float``/``int``: free at run time, checked by a type
checker, and they make every signature say which unit it takes.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["GridIndex", "Level0Px", "Microns", "MicronsPerPixel"]

Microns = NewType("Microns", float)
MicronsPerPixel = NewType("MicronsPerPixel", float)
Level0Px = NewType("Level0Px", float)
GridIndex = NewType("GridIndex", int)
