"""Run a GUI benchmark under Xvfb when there is no display (shared by the benchmarks that show a viewer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def needs_xvfb(marker: str | None = None) -> bool:
    """Whether this process has no display and was not already re-run under Xvfb (``marker`` set)."""
    return not os.environ.get("DISPLAY") and not (marker and os.environ.get(marker))


def rerun_under_xvfb(marker: str | None = None, *, screen: str = "1600x1000x24") -> int:
    """Run this script again, with the same arguments, under ``xvfb-run``; its exit status.

    ``marker``: an environment variable set in the child, so that it does not re-run itself.
    """
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print("no display and no xvfb-run: install Xvfb (apt-get install xvfb)", file=sys.stderr)
        return 2
    env = {**os.environ, marker: "1"} if marker else None
    return subprocess.call([xvfb, "-a", "-s", f"-screen 0 {screen}", sys.executable, *sys.argv], env=env)
