"""A package's public names resolved on first use (PEP 562), for packages whose parts import torch or zarr.

``training/``, ``encoders/``, ``embedding/`` and ``embedding/store/`` list each public
name's submodule and import it when the name is first used, so importing one of their light
submodules (from a widget, or the CLI's ``--help``) imports neither torch nor zarr::

    _LAZY = {"read_cohort": "cohort", ...}

    def __getattr__(name: str) -> Any:
        return resolve(__name__, _LAZY, globals(), name)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["resolve"]


def resolve(package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any], name: str) -> Any:
    """The value of ``package.name``: a public name from its submodule (then cached), or a submodule.

    Parameters
    ----------
    package
        The package's ``__name__``.
    table
        Public name -> submodule (relative to ``package``).
    namespace
        The package's ``globals()``, where a resolved name is cached.
    name
        The attribute asked for.

    Raises
    ------
    AttributeError
        ``name`` is neither a public name nor a submodule.
    """
    module = table.get(name)
    if module is None:  # a submodule (``training.crossval``), as when the package imported them all
        try:
            return importlib.import_module(f".{name}", package)
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", package), name)
    namespace[name] = value
    return value
