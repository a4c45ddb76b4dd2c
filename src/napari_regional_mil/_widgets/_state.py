"""What the dock widgets of one viewer share: one small evented object attached to the viewer.

Widgets never import each other and never look each other up. Each asks
:func:`viewer_state` for its viewer's :class:`ViewerState` and reads or sets what it
needs; the others follow through its psygnal signals (napari's own event library):

========================  ================================  ===============================
what                      set by                            followed by
========================  ================================  ===============================
``slide_layer``           the viewer's layer selection       Slide, Embed, Predict
                          (kept here, whoever opened it)
``cohort``, ``cache_dir`` the Cohort widget                  Train, Pretrain (read on start)
``model``                 Predict (Load), Train (when done)  Predict (label, threshold)
``threshold``             the user, in Predict's spin box;   Predict's decision, the Cohort
                          initialised from a loaded model    table's prediction column
``predicted``             Predict, after each prediction     the Cohort table
``encoder_registered``    Pretrain, after saving an encoder  the encoder lists (Embed, Cohort)
========================  ================================  ===============================

The decision threshold is the user's: a model sets it once, when it becomes the current
model (that is the model's stored threshold, and Predict says so); predicting never
changes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from napari_regional_mil._widgets._encoder_fields import EncoderFields
from napari_regional_mil._widgets._slide_layers import find_slide_layer, slide_layers

if TYPE_CHECKING:
    import napari.viewer
    from napari.layers import Layer
    from napari.utils.events import Event

    from napari_regional_mil.heatmap import AttentionMaps
    from napari_regional_mil.model.checkpoint import Checkpoint
    from napari_regional_mil.training.cohort_table import CohortTable

__all__ = ["ViewerState", "follow", "offer_encoder", "viewer_state"]

_ATTRIBUTE = "_regional_mil_state"


def viewer_state(viewer: napari.viewer.Viewer) -> ViewerState:
    """The :class:`ViewerState` of ``viewer`` (made and attached on first use)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
    state = getattr(viewer, _ATTRIBUTE, None)
    if state is None:
        state = ViewerState(viewer)
        setattr(viewer, _ATTRIBUTE, state)
    return state


def follow(widget: Any, signal: Any, slot: Any) -> None:
    """Connect ``slot`` to ``signal`` (the state's, or a napari event) until ``widget`` is destroyed.

    A closed dock deletes its widget; its slots must not be called afterwards.
    """
    signal.connect(slot)
    widget.destroyed.connect(lambda *_: signal.disconnect(slot))


def offer_encoder(root: Any, name: str) -> None:
    """Add encoder ``name`` to every encoder list inside the widget ``root`` (once)."""
    for fields in root.findChildren(EncoderFields):
        if fields.name.findText(name) < 0:
            fields.name.addItem(name)


class ViewerState:
    """The open slide, the cohort, the current model and the decision threshold of one viewer.

    Parameters
    ----------
    viewer
        The napari viewer; the state follows its layer selection to know the open slide.

    Signals
    -------
    slide_changed(object)
        The current slide layer changed (``None``: no slide open).
    cohort_changed()
        The cohort's slides, labels, classes or cache folder changed.
    model_changed(object)
        The current first model (a ``Checkpoint``) changed.
    threshold_changed(float)
        The decision threshold changed.
    predicted(object)
        A slide was predicted (its :class:`~napari_regional_mil.heatmap.AttentionMaps`).
    encoder_registered(str)
        A new encoder was registered under this name (offer it in the encoder lists).
    """

    slide_changed = Signal(object)
    cohort_changed = Signal()
    model_changed = Signal(object)
    threshold_changed = Signal(float)
    predicted = Signal(object)
    encoder_registered = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self._slide_layer: Layer | None = find_slide_layer(viewer)
        self._cohort: CohortTable | None = None
        self._cache_dir: Path | None = None
        self._model: Checkpoint | None = None
        self._threshold = 0.5
        viewer.layers.selection.events.active.connect(self._follow_layers)
        viewer.layers.events.inserted.connect(self._follow_layers)
        viewer.layers.events.removed.connect(self._follow_layers)

    # -- the open slide -----------------------------------------------------------------------
    @property
    def slide_layer(self) -> Layer | None:
        """The current slide layer: the last slide layer made active, else the topmost one."""
        return self._slide_layer

    def _follow_layers(self, event: Event | None = None) -> None:
        slides = slide_layers(self.viewer)
        active = self.viewer.layers.selection.active
        if active is not None and active in slides:
            current = active
        elif self._slide_layer is not None and self._slide_layer in slides:
            current = self._slide_layer  # another kind of layer is active: the slide stays
        else:
            current = slides[-1] if slides else None
        if current is not self._slide_layer:
            self._slide_layer = current
            self.slide_changed.emit(current)

    # -- the cohort -----------------------------------------------------------------------------
    @property
    def cohort(self) -> CohortTable | None:
        """The Cohort widget's table (``None`` while no Cohort widget is open)."""
        return self._cohort

    @property
    def cache_dir(self) -> Path | None:
        """The cohort's embedding cache folder (``None``: not chosen)."""
        return self._cache_dir

    def publish_cohort(self, table: CohortTable | None, cache_dir: Path | None) -> None:
        """Share a cohort table and its cache folder (the table may have changed in place)."""
        self._cohort, self._cache_dir = table, cache_dir
        self.cohort_changed.emit()

    def withdraw_cohort(self, table: CohortTable) -> None:
        """Stop sharing ``table`` (its widget closed); another widget's table stays."""
        if self._cohort is table:
            self.publish_cohort(None, None)

    # -- the model and the threshold ----------------------------------------------------------
    @property
    def model(self) -> Checkpoint | None:
        """The current first model (a loaded ``Checkpoint``), or ``None``."""
        return self._model

    @model.setter
    def model(self, model: Checkpoint | None) -> None:
        self._model = model
        if model is not None and len(model.class_names) == 2:
            self.threshold = float(model.threshold)  # the model's stored threshold, once
        self.model_changed.emit(model)

    @property
    def threshold(self) -> float:
        """The decision threshold on the positive class's probability (binary models)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if value != self._threshold:
            self._threshold = value
            self.threshold_changed.emit(value)

    def announce_prediction(self, maps: AttentionMaps) -> None:
        """Tell the other widgets that a slide was predicted."""
        self.predicted.emit(maps)
