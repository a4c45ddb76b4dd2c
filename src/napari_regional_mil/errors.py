"""The project's own error types.

Every error that a user can cause (a bad file, a bad CSV, a foreign checkpoint, ...)
is raised as a subclass of :class:`RegionalMilError` with a one-line message that
names the file or row and the problem. The CLI prints ``error: <message>`` and exits
non-zero; the GUI shows the message as a napari notification.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CheckpointError",
    "ClinicalError",
    "CohortError",
    "ConfigError",
    "EncoderError",
    "JobCancelled",
    "MissingCacheError",
    "RegionalMilError",
    "SlideError",
    "TilingError",
    "TrainingError",
]


class RegionalMilError(Exception):
    """Base class of every error caused by user input or user files."""


class SlideError(RegionalMilError):
    """A slide cannot be opened or read (missing, not a slide, truncated, unsupported)."""


class TilingError(RegionalMilError):
    """A slide cannot be tiled as asked (smaller than one patch, no tissue, bad parameters)."""


class EncoderError(RegionalMilError):
    """An encoder cannot be built or loaded (unknown name, not TorchScript, wrong weights)."""


class CacheError(RegionalMilError):
    """An embedding cache is missing, incomplete, foreign or cannot be written."""


class MissingCacheError(CacheError):
    """No complete embedding cache matches (the slide was not embedded with this encoder and tiling)."""


class CohortError(RegionalMilError):
    """A cohort/labels CSV is invalid (unknown slide, missing label, one class, bad encoding)."""


class ClinicalError(CohortError):
    """A clinical value cannot be used (missing column, text in a numeric column, unseen category, ...)."""


class CheckpointError(RegionalMilError):
    """A model checkpoint is corrupt, foreign, or does not match the embeddings."""


class ConfigError(RegionalMilError):
    """A ``--config`` file that cannot be used (not TOML, an unknown key, a value of the wrong type)."""


class TrainingError(RegionalMilError):
    """Training cannot start or go on (too few slides, a fold without a class, ...)."""


class JobCancelled(RegionalMilError):
    """A long job was stopped by the user; whatever it wrote is consistent."""
