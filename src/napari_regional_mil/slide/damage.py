"""Damaged tiles: counted per slide and level, announced once through one channel.

A display tile that fails to decode is drawn as a flat grey tile (see
:mod:`.pyramid`) and recorded here. The first failure on each (slide, level) is
announced to every registered listener (the napari side registers one that shows a
notification); with no listener it becomes a :class:`DamagedTileWarning`. The patch
reader records the patches it could not read the same way.

>>> from napari_regional_mil.slide import damage
>>> seen = []
>>> damage.add_listener(seen.append)                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._checks import one_line

__all__ = [
    "GREY",
    "DamageLog",
    "DamageNotice",
    "DamagedTileWarning",
    "SlideWarning",
    "add_listener",
    "remove_listener",
]

#: The value of every channel of a tile that could not be decoded.
GREY = 128


class SlideWarning(UserWarning):
    """A one-line warning about a slide (its message names the file)."""


class DamagedTileWarning(SlideWarning):
    """Tiles of a slide could not be decoded; they are shown as flat grey."""


@dataclass(frozen=True)
class DamageNotice:
    """The first damaged tile of one slide and level.

    Parameters
    ----------
    path
        The slide.
    level
        The display level (0 = full resolution), or ``None`` for patch reads.
    problem
        What the decoder said (one line).
    """

    path: Path
    level: int | None
    problem: str

    @property
    def message(self) -> str:
        """One line naming the slide, the level and the problem."""
        where = f"level {self.level}" if self.level is not None else "patches"
        return (f"{self.path}: damaged tiles at {where} are shown as flat grey ({self.problem}); "
                "the rest of the slide is intact")


_LISTENERS: list[Callable[[DamageNotice], None]] = []
_LISTENERS_LOCK = threading.Lock()


def add_listener(callback: Callable[[DamageNotice], None]) -> None:
    """Call ``callback(notice)`` for the first damaged tile of each slide and level (any thread)."""
    with _LISTENERS_LOCK:
        if callback not in _LISTENERS:
            _LISTENERS.append(callback)


def remove_listener(callback: Callable[[DamageNotice], None]) -> None:
    """Stop calling ``callback`` (no error when it was not registered)."""
    with _LISTENERS_LOCK:
        if callback in _LISTENERS:
            _LISTENERS.remove(callback)


def _announce(notice: DamageNotice) -> None:
    with _LISTENERS_LOCK:
        listeners = list(_LISTENERS)
    if not listeners:
        warnings.warn(DamagedTileWarning(notice.message), stacklevel=3)
        return
    for callback in listeners:
        with contextlib.suppress(Exception):  # a broken listener must not break the renderer
            callback(notice)


class DamageLog:
    """The damaged tiles of one slide: counts per display level (thread-safe).

    Parameters
    ----------
    path
        The slide (named in the notices).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tiles: dict[int, set[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def record(self, level: int, where: tuple[int, int], exc: BaseException) -> None:
        """Count the tile at ``where`` (its top-left ``(row, col)``) of ``level`` as damaged.

        A tile is counted once however often it is read; the first damaged tile of a
        level is announced.
        """
        with self._lock:
            tiles = self._tiles.setdefault(level, set())
            first = not tiles
            tiles.add((int(where[0]), int(where[1])))
        if first:
            _announce(DamageNotice(self.path, level, one_line(exc)))

    @property
    def counts(self) -> dict[int, int]:
        """``{level: damaged tiles}`` so far."""
        with self._lock:
            return {level: len(tiles) for level, tiles in self._tiles.items()}

    @property
    def total(self) -> int:
        """Damaged tiles so far, all levels."""
        with self._lock:
            return sum(len(tiles) for tiles in self._tiles.values())
