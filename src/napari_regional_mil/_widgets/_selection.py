"""Adding layers without napari making each new one the active layer.

napari selects every layer it inserts: the layer-controls panel builds and shows the new
layer's controls (17 to 56 ms under software OpenGL), and the plugin then selected the
slide again (the same again), all in the one GUI-thread callback that adds the layer. The
plugin's overlays (tissue, grids, PCA, heatmaps, the selected region) never need to become
the active layer, so :func:`adding_quietly` inserts them with napari's activation switched
off; the slide layer itself is made active in the next event-loop pass
(:func:`activate_soon`), so adding it and showing its controls are two short stalls, not
one long one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from napari.layers import Layer

__all__ = ["activate_soon", "adding_quietly"]

#: The switch of napari's selectable lists (``_SelectableEventedList``) that selects an inserted item.
_SWITCH = "_activate_on_insert"


@contextlib.contextmanager
def adding_quietly(viewer: ViewerModel) -> Iterator[None]:
    """Within the block, layers added to ``viewer`` do not change its selection.

    With a napari that has no such switch (a private attribute), the active layer from
    before the block is selected again after it: the same outcome, at the old cost.
    """
    layers = viewer.layers
    before = getattr(layers, _SWITCH, None)
    if not isinstance(before, bool):
        active = layers.selection.active
        try:
            yield
        finally:
            if active is not None and active in layers and layers.selection.active is not active:
                layers.selection.active = active
        return
    setattr(layers, _SWITCH, False)
    try:
        yield
    finally:
        setattr(layers, _SWITCH, before)


def activate_soon(viewer: ViewerModel, layer: Layer) -> None:
    """Make ``layer`` the active layer in the next event-loop pass (if it is still in the viewer)."""

    def activate() -> None:
        if layer in viewer.layers:
            viewer.layers.selection.active = layer

    QTimer.singleShot(0, activate)
