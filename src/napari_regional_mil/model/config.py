"""Hyper-parameters of the first model and of its patch selection (defined in :mod:`napari_regional_mil.settings`).

The settings classes live in the torch-free :mod:`napari_regional_mil.settings`, the one
table of user options from which the CLI flags and the Train widget's form are made;
this module keeps the model package's names for them.
"""

from __future__ import annotations

from ..settings import (
    MODEL_TYPES,
    PATCH_UNITS,
    REGIONAL_SOURCES,
    SELECTION_STRATEGIES,
    WEIGHT_SOURCES,
    ModelConfig,
    SelectionConfig,
)

__all__ = [
    "MODEL_TYPES",
    "PATCH_UNITS",
    "REGIONAL_SOURCES",
    "SELECTION_STRATEGIES",
    "WEIGHT_SOURCES",
    "ModelConfig",
    "SelectionConfig",
]
