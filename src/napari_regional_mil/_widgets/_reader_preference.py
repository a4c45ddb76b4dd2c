"""napari's default-reader preference for slide files (``settings.plugins.extension2reader``).

Dropping a ``.svs`` or ``.tif`` on napari, or File > Open, finds two readers (napari's
builtins and this plugin) and asks which to use. The preference maps filename patterns to
a plugin; with this plugin set for the patterns of its reader contribution (read from the
manifest, so they are the ones napari matches), napari opens slides with it without asking.
The user sets it here explicitly (the Slide widget's check box), in napari's own reader
dialog ("Remember this choice"), or in Preferences > Plugins; it is never set behind the
user's back.
"""

from __future__ import annotations

from napari.settings import get_settings
from npe2 import PluginManager

__all__ = ["PLUGIN", "is_default_reader", "reader_patterns", "set_default_reader"]

PLUGIN = "napari-regional-mil"


def reader_patterns() -> list[str]:
    """The filename patterns of this plugin's reader contribution (``*.svs``, ``*.tif``, ...)."""
    manager = PluginManager.instance()
    if PLUGIN not in manager:
        manager.discover()
    manifest = manager.get_manifest(PLUGIN)
    return [
        pattern for reader in manifest.contributions.readers or () for pattern in reader.filename_patterns
    ]


def is_default_reader() -> bool:
    """Whether napari opens every slide pattern with this plugin without asking."""
    preferences = get_settings().plugins.extension2reader
    return all(preferences.get(pattern) == PLUGIN for pattern in reader_patterns())


def set_default_reader(on: bool) -> None:
    """Make this plugin napari's reader for its slide patterns (``on``), or drop that preference.

    Patterns preferred for another plugin are left alone when ``on`` is ``False``.
    """
    settings = get_settings().plugins
    preferences = dict(settings.extension2reader)
    for pattern in reader_patterns():
        if on:
            preferences[pattern] = PLUGIN
        elif preferences.get(pattern) == PLUGIN:
            del preferences[pattern]
    settings.extension2reader = preferences
