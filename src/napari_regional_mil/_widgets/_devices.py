"""The device choice of the Embed and Pretrain widgets, filled without importing torch on the GUI thread.

Listing CUDA devices needs torch, whose import takes seconds. A :class:`DeviceBox` starts
with what is known without it (``cpu``; the GPUs too when torch is already imported) and
asks a worker for the rest; the first GPU is chosen when one appears, unless the user has
already picked a device.
"""

from __future__ import annotations

import sys
from typing import Any

from qtpy.QtWidgets import QComboBox

from napari_regional_mil._widgets._warm_up import collect_after_imports
from napari_regional_mil._widgets._worker import start_job

__all__ = ["DeviceBox", "find_devices", "known_devices"]


def _devices_of(torch: Any) -> list[str]:
    return ["cpu"] + [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]


def _imported_torch() -> Any:
    """The torch module once imported, else None (also while another thread is still importing it)."""
    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
        return None  # a half-imported torch has no ``cuda`` yet (e.g. another widget's worker imports it)
    return torch


def known_devices() -> list[str]:
    """The devices known without importing torch: ``cpu``, and the GPUs when torch is imported."""
    torch = _imported_torch()
    return ["cpu"] if torch is None else _devices_of(torch)


def find_devices() -> list[str]:
    """Every device torch sees (call it in a worker: it imports torch)."""
    import torch  # lazy: torch (a worker lists the GPUs)

    return _devices_of(torch)


class DeviceBox(QComboBox):
    """Where a job runs: ``cpu``, ``cuda``, ``cuda:1`` ...; the GPUs are listed by a worker.

    Parameters
    ----------
    viewer
        The napari viewer (closing it stops the worker).
    kind
        The worker's job kind (one per widget type, e.g. ``"embed-devices"``).
    """

    def __init__(self, viewer: Any, *, kind: str) -> None:
        super().__init__()
        self._touched = False
        self.set_devices(known_devices())
        self.activated.connect(self._on_activated)
        if _imported_torch() is None:  # the worker's import waits for one in progress
            start_job(find_devices, kind=kind, description="Looking for GPUs", on_result=self._found,
                      viewer=viewer, owner=self, show_progress=False, on_busy="replace")

    def _found(self, devices: list[str]) -> None:
        self.set_devices(devices)
        collect_after_imports()  # torch's import: its garbage now, not at a random later moment

    def _on_activated(self, _index: int) -> None:
        self._touched = True

    def set_devices(self, devices: list[str]) -> None:
        """Offer ``devices``; the first GPU becomes the choice unless the user chose already."""
        for name in devices:
            if self.findText(name) < 0:
                self.addItem(name)  # keeps the current choice
        if not self._touched and self.count() > 1:
            self.setCurrentIndex(1)  # the first GPU when there is one
