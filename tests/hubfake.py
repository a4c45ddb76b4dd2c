"""An offline stand-in for the Hugging Face hub: a local hub cache and a local HTTP server.

``hub_cache`` (a fixture factory) points ``huggingface_hub`` at an empty cache in tmp with
``HF_HUB_OFFLINE=1``; ``publish(repo, {file: writer})`` fills one snapshot in the layout the
hub client writes, so the client finds it exactly as after a download. :class:`FakeHub`
answers the client's HTTP requests like the hub does (``HEAD``/``GET`` of
``/{repo}/resolve/{revision}/{file}``, with commit hash, ETag and size headers; a gated
repository answers 401 ``GatedRepo``), so a real download, with its progress, runs
through ``hf_hub_download`` without the network.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def point_hub_at(monkeypatch: Any, cache: Path, *, offline: bool, endpoint: str | None = None) -> None:
    """Make ``huggingface_hub`` use ``cache`` (and ``endpoint``), online or not."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if endpoint is not None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def publish(cache: Path, repo: str, files: dict[str, Any], *, repo_type: str = "model") -> Path:
    """Write ``files`` (name -> ``writer(path)``) as the ``main`` snapshot of ``repo`` in ``cache``."""
    folder = cache / f"{repo_type}s--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    for name, write in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target)
    return snapshot


class FakeHub:
    """A local HTTP server answering like the hub for ``files`` (repo -> {name: bytes}).

    Parameters
    ----------
    files
        The repositories' files.
    gated
        Repositories that answer 401 ``GatedRepo`` (no token has access).
    """

    def __init__(self, files: dict[str, dict[str, bytes]], *, gated: tuple[str, ...] = ()) -> None:
        self.files, self.gated, self.requests = files, set(gated), []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                if repo in hub.gated:
                    self.send_response(401)
                    self.send_header("X-Error-Code", "GatedRepo")
                    self.send_header("X-Error-Message", f"Access to model {repo} is restricted.")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = hub.files.get(repo, {}).get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    for start in range(0, len(data), 1 << 16):  # in pieces: progress moves
                        self.wfile.write(data[start : start + (1 << 16)])

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the server."""
        self.server.shutdown()
        self.server.server_close()
