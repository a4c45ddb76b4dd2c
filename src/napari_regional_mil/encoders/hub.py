"""Weights of known encoders from the Hugging Face hub: the only networked code of the package.

Nothing here runs unless the user asked for a download (``embed --from-hub``, the Embed
widget's "download from the hub" box, ``load_encoder(name, from_hub=True)``). A download
goes through ``huggingface_hub.hf_hub_download`` into the user's hub cache
(``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``) with the user's token (the
``HF_TOKEN`` environment variable or an earlier ``hf auth login``); a file already in
that cache is used without a connection, and with ``HF_HUB_OFFLINE=1`` only the cache is
read. Only data files are fetched (weights, ``config.json``): never code.

Every failure (gated repository without access, no network, a file missing from the
repository, a full disk) becomes one :class:`~napari_regional_mil.errors.EncoderError`
line naming the encoder, the repository and what to do.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub import errors as hub_errors
from tqdm.auto import tqdm

from ..encoders.known import KNOWN_ENCODERS, KnownEncoder, canonical_name
from ..errors import EncoderError, JobCancelled
from ..jobs import Progress

__all__ = ["ProgressFn", "cached_file", "fetch_file", "fetch_weights_job", "hub_cache_dir", "prefetch_job"]

#: Called with (bytes done, bytes total or 0 when unknown) while a file downloads.
ProgressFn = Callable[[int, int], None]


def hub_cache_dir() -> Path:
    """The hub cache this process uses (``HF_HUB_CACHE``)."""
    return Path(constants.HF_HUB_CACHE)


def cached_file(known: KnownEncoder, filename: str | None = None) -> Path | None:
    """The local copy of a known encoder's file in the hub cache, or ``None`` (no network)."""
    name = filename or known.weights_file
    found = huggingface_hub.try_to_load_from_cache(known.hub_repo, name, repo_type=known.repo_type)
    return Path(found) if isinstance(found, str) else None


def _progress_bar(callback: ProgressFn | None, cancelled: Callable[[], bool]) -> type:
    """A tqdm class that reports to ``callback`` and stops the download when ``cancelled()``."""
    class _Bar(tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            if cancelled():
                raise JobCancelled("download stopped")
            out = super().update(n)
            if callback is not None:
                callback(int(self.n), int(self.total or 0))
            return out

    return _Bar


def fetch_file(
    known: KnownEncoder,
    filename: str | None = None,
    *,
    progress: ProgressFn | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Download one file of a known encoder's repository (or take it from the hub cache).

    Parameters
    ----------
    known
        The encoder.
    filename
        A file of its repository (default: its weights file).
    progress
        Called with (bytes done, bytes total) while downloading.
    cancelled
        Polled while downloading; when it returns true the download stops with
        :class:`~napari_regional_mil.errors.JobCancelled` (the partial file stays in the
        hub cache's ``.incomplete`` form and resumes next time).

    Raises
    ------
    EncoderError
        Gated repository without access, no network and no cached copy, missing file,
        an ``OSError`` while writing (one line each).
    """
    if not known.hub_repo:
        raise EncoderError(f"encoder {known.name}: no hub repository is known for it; give its weights file")
    name = filename or known.weights_file
    try:
        path = huggingface_hub.hf_hub_download(
            known.hub_repo, name, repo_type=known.repo_type, tqdm_class=_progress_bar(progress, cancelled)
        )
    except JobCancelled:
        raise
    except Exception as exc:
        raise _hub_error(known, name, exc) from None
    return Path(str(path))


def _hub_error(known: KnownEncoder, filename: str, exc: BaseException) -> EncoderError:
    """One line for a failed download: which encoder, which repository, what to do."""
    where = f"encoder {known.name}: {known.hub_repo}"
    if isinstance(exc, hub_errors.GatedRepoError):
        return EncoderError(
            f"{where} is gated: accept its terms ({known.licence}) at {known.hub_url} while logged in, "
            "then log in "
            "here (hf auth login) or set HF_TOKEN; or download it there and give --weights FILE"
        )
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return EncoderError(
            f"{where}: repository not found or not accessible with your token: check {known.hub_url}, log in "
            "(hf auth login) or set HF_TOKEN"
        )
    if isinstance(exc, hub_errors.LocalEntryNotFoundError):
        return EncoderError(
            f"{where}: cannot download {filename} (no network, or HF_HUB_OFFLINE is set) and it is not in "
            "the hub "
            f"cache {hub_cache_dir()}: connect and retry, or download it elsewhere and give --weights FILE"
        )
    if isinstance(exc, hub_errors.EntryNotFoundError):
        return EncoderError(
            f"{where}: the repository has no file {filename}; give the weights file with --weights FILE"
        )
    if isinstance(exc, hub_errors.HfHubHTTPError):
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return EncoderError(f"{where}: download of {filename} failed ({first})")
    if isinstance(exc, OSError):
        target = exc.filename or hub_cache_dir()
        return EncoderError(
            f"{where}: cannot write {target} ({exc.strerror or exc}); free space or set HF_HUB_CACHE"
        )
    return EncoderError(f"{where}: download of {filename} failed ({type(exc).__name__}: {str(exc)[:200]})")


def _download(
    known: KnownEncoder, name: str, events: queue.Queue[tuple[str, Any]], stop: threading.Event
) -> None:
    """Thread body of :func:`fetch_weights_job`: report progress, then the path or the error."""
    try:
        path = fetch_file(
            known, name, progress=lambda d, t: events.put(("progress", (d, t))), cancelled=stop.is_set
        )
        events.put(("done", path))
    except BaseException as exc:
        events.put(("error", exc))


def fetch_weights_job(
    known: KnownEncoder, *, files: tuple[str, ...] = ()
) -> Generator[Progress, None, list[Path]]:
    """The download as a job: yields ``Progress("download", bytes, total)``; closing it stops the download.

    Parameters
    ----------
    known
        The encoder whose files to fetch.
    files
        Files of its repository (default: the weights file and, for transformers
        models, ``config.json``).

    Returns
    -------
    list[Path]
        The local paths, in the order asked.
    """
    names = files or tuple(f for f in (known.weights_file, known.config_file) if f)
    out: list[Path] = []
    for name in names:
        if (found := cached_file(known, name)) is not None:
            out.append(found)
            continue
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(
            target=_download, args=(known, name, events, stop), name=f"download-{known.name}", daemon=True
        )
        thread.start()
        yield Progress("download", 0, 0, f"downloading {name} of {known.name} from {known.hub_repo}")
        try:
            while True:
                kind, value = events.get()
                if kind == "progress":
                    done, total = value
                    yield Progress("download", done, total, f"downloading {name} of {known.name}")
                elif kind == "done":
                    out.append(value)
                    break
                else:
                    raise value
        finally:
            stop.set()
    return out


def prefetch_job(encoder: object, options: Mapping[str, object] | None) -> Generator[Progress, None, None]:
    """Download a published encoder's files first when the user asked for the hub (a job; else nothing).

    The GUI runs this before loading the encoder so the download shows its progress;
    loading then finds the files in the hub cache.
    """
    if not (options or {}).get("from_hub") or not isinstance(encoder, str):
        return
    known = KNOWN_ENCODERS.get(canonical_name(encoder))
    if known is not None and known.loadable:
        yield from fetch_weights_job(known)
