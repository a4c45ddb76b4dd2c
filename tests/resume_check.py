"""Bitwise comparison of embedding stores, tracing a difference to the pixels read or to the encoder.

Every run that takes part in a kill-and-resume test records the pixels its patch reader
returned (:func:`record_reads`, in this process or in a child through
:data:`RECORDING_CHILD`). When a resumed store differs from the uninterrupted one,
:func:`assert_same_store` fails with the differing rows, says for each whether it was
computed from the same pixels, and saves those rows' pixels and features to an ``.npz``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TESTS_DIR = Path(__file__).resolve().parent

#: Prefix of a ``python -c`` child script: ``record(directory)`` records its reads.
RECORDING_CHILD = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from resume_check import record_reads as record
"""


@contextlib.contextmanager
def record_reads(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Save every batch the patch reader returns as ``<directory>/batch_<first>.npy`` (atomically)."""
    from napari_regional_mil.embedding.reader import PatchReader

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    original = PatchReader._read_batch

    def recording(self, start, stop, halt):
        batch = original(self, start, stop, halt)
        tmp = folder / f".batch_{start:06d}.{os.getpid()}.npy"
        np.save(tmp, batch)
        os.replace(tmp, folder / f"batch_{start:06d}.npy")
        return batch

    PatchReader._read_batch = recording
    try:
        yield folder
    finally:
        PatchReader._read_batch = original


def recorded_pixels(*directories: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """Row -> pixels from recorded batches (later directories win: the resumed run after the killed one)."""
    rows: dict[int, np.ndarray] = {}
    for directory in directories:
        for path in sorted(Path(directory).glob("batch_*.npy")):
            start = int(path.stem.split("_")[1])
            for i, patch in enumerate(np.load(path)):
                rows[start + i] = patch
    return rows


def assert_same_store(got, ref, *, pixels=None, ref_pixels=None, dump: Path | None = None) -> None:
    """Every array of two :class:`SlideEmbeddings` equal bitwise; otherwise a diagnosis of the differing rows."""
    for name in ("coords_px", "grid_xy", "region_index", "region_xy", "tissue_fraction"):
        assert np.array_equal(getattr(got, name), getattr(ref, name)), name
    if not np.array_equal(got.features, ref.features):
        rows = np.flatnonzero((got.features != ref.features).any(axis=1))
        lines = []
        for r in rows[:20]:
            d = np.abs(got.features[r] - ref.features[r])
            seen, expected = (pixels or {}).get(int(r)), (ref_pixels or {}).get(int(r))
            if seen is None or expected is None:
                how = "pixels not recorded"
            elif np.array_equal(seen, expected):
                how = "same pixels: the encoder computed differently"
            else:
                px = np.abs(seen.astype(int) - expected.astype(int))
                how = f"different pixels: {int((px > 0).sum())} values differ, by up to {int(px.max())}"
            lines.append(f"row {int(r)}: {int((d > 0).sum())} features differ (max {d.max():.3g}); {how}")
        where = ""
        if dump is not None:
            np.savez(dump, rows=rows, features=got.features[rows], reference_features=ref.features[rows],
                     pixels=np.stack([(pixels or {}).get(int(r), np.zeros((0,), np.uint8)) for r in rows])
                     if all(int(r) in (pixels or {}) for r in rows) else np.zeros(0),
                     reference_pixels=np.stack([ref_pixels[int(r)] for r in rows])
                     if ref_pixels and all(int(r) in ref_pixels for r in rows) else np.zeros(0))
            where = f"; saved to {dump}"
        raise AssertionError(f"{len(rows)} rows differ{where}:\n" + "\n".join(lines))
    for pool in ("mean", "max"):
        assert np.array_equal(got.regional_embeddings[pool], ref.regional_embeddings[pool]), f"region_{pool}"
