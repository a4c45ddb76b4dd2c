"""What a user does in napari, for the journey tests: menus, File > Open, clicks on the canvas.

Everything goes through napari's own paths: the QActions of its menus (app-model), its
open-files dialog (only ``QFileDialog.getOpenFileNames`` is answered), its reader dialog,
and real mouse events on the vispy canvas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtWidgets import QApplication, QDialog, QFileDialog

PLUGIN = "napari-regional-mil"
OPEN_FILES = "napari.window.file.open_files_dialog"


def menu_actions(menu: Any) -> dict[str, Any]:
    """Every QAction under ``menu`` (recursively), by app-model command id."""
    found: dict[str, Any] = {}
    for action in menu.actions():
        if action.menu() is not None:
            found.update(menu_actions(action.menu()))
        command = getattr(action, "_command_id", None)
        if command:
            found[command] = action
    return found


def open_widget(viewer: Any, name: str, qtbot: Any) -> Any:
    """Plugins > Regional MIL > ``name``: the docked widget (made by napari, viewer injected)."""
    window = viewer.window
    full_name = f"{name} (Regional MIL)"
    if full_name not in window._wrapped_dock_widgets:
        menu_actions(window.plugins_menu)[f"{PLUGIN}.{name.lower()}_widget"].trigger()
        qtbot.waitUntil(lambda: full_name in window._wrapped_dock_widgets)
    dock = window._wrapped_dock_widgets[full_name]
    dock.show()
    dock.raise_()
    return dock.inner_widget()


def file_open(viewer: Any, paths: list[Path], monkeypatch: Any) -> None:
    """File > Open...: napari's open-files dialog answers ``paths``; napari picks the reader."""
    monkeypatch.setattr(
        QFileDialog, "getOpenFileNames", lambda *args, **kwargs: ([str(p) for p in paths], "")
    )
    menu_actions(viewer.window.file_menu)[OPEN_FILES].trigger()


def answer_reader_dialog(qtbot: Any, *, choose: str | None, remember: bool = False) -> dict[str, Any]:
    """Answer napari's reader dialog when it appears (it is modal: answered from a timer).

    ``choose``: the reader's display name to pick (``None``: press Cancel). Returns a dict
    that gets ``text`` (every label of the dialog) and ``choices`` once it was answered.
    """
    seen: dict[str, Any] = {}
    tries = iter(range(3000))  # polls for at most about a minute

    def poll() -> None:
        from qtpy.QtWidgets import QLabel

        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QDialog) or not hasattr(dialog, "reader_btn_group"):
            if next(tries, None) is not None:
                QTimer.singleShot(20, poll)
            return
        seen["text"] = "\n".join(label.text() for label in dialog.findChildren(QLabel))
        seen["choices"] = [button.text() for button in dialog.reader_btn_group.buttons()]
        if choose is None:
            dialog.reject()
            return
        (button,) = [b for b in dialog.reader_btn_group.buttons() if b.text() == choose]
        button.setChecked(True)
        if hasattr(dialog, "persist_checkbox"):
            dialog.persist_checkbox.setChecked(remember)
        dialog.accept()

    QTimer.singleShot(20, poll)
    return seen


def click_canvas_at(viewer: Any, world_yx: tuple[float, float], qtbot: Any) -> None:
    """A left click (press and release, no move) on the canvas over world point ``(y, x)``.

    The camera is centred on the point first (as a user pans there), then the canvas
    widget's centre is clicked with real Qt mouse events.
    """
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (float(world_yx[0]), float(world_yx[1]))
    QApplication.processEvents()
    native = viewer.window._qt_viewer.canvas.native
    centre = QPoint(native.width() // 2, native.height() // 2)
    qtbot.mouseClick(native, Qt.MouseButton.LeftButton, pos=centre)


def click(qtbot: Any, button: Any) -> None:
    """A left click on a button (it must be enabled)."""
    assert button.isEnabled(), f"{button.text()!r} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def type_into(qtbot: Any, line: Any, text: str, *, enter: bool = True) -> None:
    """Replace a line edit's text by typing, then (``enter``) Return, which finishes the edit."""
    line.clear()
    qtbot.keyClicks(line, text)
    if enter:
        qtbot.keyClick(line, Qt.Key.Key_Return)


def world_of_cell(layer: Any, gy: float, gx: float) -> np.ndarray:
    """World ``(y, x)`` of data pixel ``(gy, gx)`` of a 2-D layer."""
    return np.asarray(layer.data_to_world((gy, gx)))[-2:]
