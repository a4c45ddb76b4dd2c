"""The patch reader: kept patches read from a slide by a small thread pool, in order.

Each patch is read at the native pyramid level nearest (and not coarser than) the
resolution the encoder wants, then resized to the encoder's input size when the sizes
differ. Reads run in ``num_threads`` threads (each with its own slide file handle;
JPEG decoding and resizing release the GIL), one batch per task, with at most
``prefetch_batches`` batches in flight: memory stays bounded whatever the slide size,
and reading overlaps with the encoder that consumes the batches.

A run of patches that cannot be read (a damaged tile) is read again patch by patch; a
patch that still fails is a flat grey patch in its batch and is *marked*
(:meth:`PatchReader.damaged_in`): the pipeline leaves it out of the store, so a damaged
tile never becomes a silent zero (or grey) patch embedding.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import SlideError
from ..slide import Slide
from ..slide.damage import GREY

__all__ = ["PatchReader", "ReadPlan", "plan_reads"]


@dataclass(frozen=True)
class ReadPlan:
    """How patches are read.

    Parameters
    ----------
    level
        Native pyramid level read.
    read_size
        Side of the patch footprint in pixels of ``level``.
    out_size
        Side of the patches handed to the encoder (``read_size`` resized to it).
    input_mpp
        Effective microns per pixel of the output patches.
    """

    level: int
    read_size: int
    out_size: int
    input_mpp: float


def plan_reads(
    *,
    slide_mpp: float,
    level_downsamples: tuple[float, ...] | list[float],
    patch_size: int,
    patch_size_level0: float,
    input_size: int | None,
    encoder_mpp: float | None,
) -> ReadPlan:
    """Choose the level and sizes to read one patch footprint for an encoder.

    The output side is the encoder's ``input_size``, or the footprint at the encoder's
    mpp when it takes any size, or the tiling's ``patch_size`` when it has no mpp
    either. The level is the coarsest whose pixels are at least as fine as the output's.
    """
    footprint_um = patch_size_level0 * slide_mpp
    if input_size is not None:
        out = int(input_size)
    elif encoder_mpp is not None:
        out = max(1, round(footprint_um / encoder_mpp))
    else:
        out = int(patch_size)
    out_mpp = footprint_um / out
    level = 0
    for i, ds in enumerate(level_downsamples):
        if slide_mpp * ds <= out_mpp * 1.01:
            level = i
    read = max(1, round(patch_size_level0 / level_downsamples[level]))
    return ReadPlan(level=level, read_size=read, out_size=out, input_mpp=out_mpp)


class PatchReader:
    """Reads patches at level-0 corners ``coords_px`` as uint8 NHWC batches.

    Parameters
    ----------
    slide
        An open :class:`~napari_regional_mil.slide.Slide` (thread-safe ``read_region``).
    coords_px
        ``(N, 2)`` level-0 top-left ``(x, y)`` of the patches, in the order wanted.
    plan
        From :func:`plan_reads`.
    num_threads
        Reader threads.
    batch_size
        Patches per batch.
    prefetch_batches
        Batches in flight at most (read ahead of the consumer).
    max_run
        Up to this many horizontally adjacent patches are read with one ``read_region``
        call (each slide tile is then decoded once for the run, not once per patch).
    """

    def __init__(
        self,
        slide: Slide,
        coords_px: np.ndarray,
        plan: ReadPlan,
        *,
        num_threads: int = 2,
        batch_size: int = 64,
        prefetch_batches: int = 4,
        max_run: int = 8,
    ) -> None:
        self.slide = slide
        self.coords_px = np.asarray(coords_px)
        self.plan = plan
        self.num_threads = max(1, int(num_threads))
        self.batch_size = max(1, int(batch_size))
        self.prefetch_batches = max(self.num_threads, int(prefetch_batches))
        self.max_run = max(1, int(max_run))
        self._downsample = float(slide.info.level_downsamples[plan.level])
        self._damaged: set[int] = set()
        self._damaged_lock = threading.Lock()

    @property
    def damaged(self) -> list[int]:
        """Indices of the patches read so far that could not be read (sorted)."""
        with self._damaged_lock:
            return sorted(self._damaged)

    def damaged_in(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start,)`` bool: which of patches ``start:stop`` could not be read."""
        mask = np.zeros(max(0, stop - start), bool)
        with self._damaged_lock:
            for i in self._damaged:
                if start <= i < stop:
                    mask[i - start] = True
        return mask

    def read_patch(self, index: int) -> np.ndarray:
        """One patch ``(out, out, 3)`` uint8."""
        return self._read_run(index, index + 1)[0]

    def _runs(self, start: int, stop: int) -> Iterator[tuple[int, int]]:
        """Split patches ``start:stop`` into runs of horizontal neighbours (one read each)."""
        coords = self.coords_px
        step = self.plan.read_size * self._downsample * 1.01
        first = start
        for i in range(start + 1, stop + 1):
            if (
                i == stop
                or i - first >= self.max_run
                or coords[i, 1] != coords[first, 1]
                or not 0 < coords[i, 0] - coords[i - 1, 0] <= step
            ):
                yield first, i
                first = i

    def _read_run(self, first: int, stop: int) -> list[np.ndarray]:
        """Patches ``first:stop`` (horizontal neighbours) from one ``read_region`` call."""
        p = self.plan
        ds = self._downsample
        x0, y0 = (int(v) for v in self.coords_px[first])
        offsets = [round((int(x) - x0) / ds) for x in self.coords_px[first:stop, 0]]
        strip = self.slide.read_region((x0, y0), p.level, (offsets[-1] + p.read_size, p.read_size))
        out = []
        for off in offsets:
            patch = strip[:, off : off + p.read_size]
            if p.read_size != p.out_size:
                image = Image.fromarray(np.ascontiguousarray(patch))
                patch = np.asarray(image.resize((p.out_size, p.out_size), Image.Resampling.BILINEAR, reducing_gap=None))
            out.append(patch)
        return out

    def _read_guarded(self, first: int, stop: int) -> list[np.ndarray]:
        """:meth:`_read_run`; when it fails, patch by patch, marking those that still fail (flat grey)."""
        try:
            return self._read_run(first, stop)
        except SlideError:
            pass
        out = []
        for i in range(first, stop):
            try:
                out.append(self._read_run(i, i + 1)[0])
            except SlideError:
                with self._damaged_lock:
                    self._damaged.add(i)
                out.append(np.full((self.plan.out_size, self.plan.out_size, 3), GREY, np.uint8))
        return out

    def _read_batch(self, start: int, stop: int, halt: threading.Event) -> np.ndarray:
        """Patches ``start:stop``; when halted early, only those read (never uninitialised rows)."""
        out = np.zeros((stop - start, self.plan.out_size, self.plan.out_size, 3), np.uint8)
        filled = 0
        for first, end in self._runs(start, stop):
            if halt.is_set():
                break
            for i, patch in enumerate(self._read_guarded(first, end)):
                out[first - start + i] = patch
            filled = end - start
        return out[:filled]

    def batches(self, start: int = 0) -> Generator[tuple[int, np.ndarray], None, None]:
        """Yield ``(first_index, patches)`` from patch ``start`` on, in order.

        Closing the iterator stops the threads after their current patch.
        """
        n = len(self.coords_px)
        halt = threading.Event()
        pending: deque[tuple[int, Future[np.ndarray]]] = deque()
        starts = iter(range(start, n, self.batch_size))
        pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="patch-reader")
        try:
            for first in starts:
                pending.append((first, pool.submit(self._read_batch, first, min(n, first + self.batch_size), halt)))
                if len(pending) >= self.prefetch_batches:
                    break
            while pending:
                first, future = pending.popleft()
                batch = future.result()
                nxt = next(starts, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self._read_batch, nxt, min(n, nxt + self.batch_size), halt)))
                yield first, batch
        finally:
            halt.set()
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
