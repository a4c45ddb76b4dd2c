"""Kill an embedding run part way and resume it, many times; the result must equal an uninterrupted run bitwise.

Usage::

    python scripts/stress_resume.py --runs 50            # prints one line per run and a summary
    python scripts/stress_resume.py --runs 3 --keep out  # CI: a small count; keep what differs

Every run embeds the same synthetic slide (13 x 17 cells of 32 px, three tissue types; the
one the tests use) in a child process with 8-patch batches and 16-patch cache chunks,
kills it (SIGKILL; TerminateProcess on Windows) once 1 to 3 chunks have landed, resumes
it in a fresh child, and compares every array of the store with an uninterrupted
reference run, with ``np.array_equal``. Each child records the pixels its patch reader
returned, so a difference is traced to its cause: the pixels (the reader) or the
features computed from the same pixels (the encoder). The differing rows' pixels and
features are saved under ``--keep`` (``run<k>.npz``). Exit status 1 when any run differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHUNK_ROWS = 16
BATCH = 8


def _layout() -> np.ndarray:
    """The embedding tests' layout (``tests/conftest.py``): 13 x 17 cells, three tissue types, a hole."""
    types = np.full((13, 17), -1, np.int16)
    types[1:12, 2:16] = (np.arange(14) // 2 % 3)[None, :]
    types[5:7, 7:9] = -1
    return types


def child(slide: str, cache: str, record: str) -> None:
    """Embed ``slide`` into ``cache``, saving each batch of pixels the reader returned under ``record``."""
    from napari_regional_mil.embedding import embed_slide
    from napari_regional_mil.embedding.reader import PatchReader
    from napari_regional_mil.tiling import TilingParams

    read_batch = PatchReader._read_batch

    def recording(self: PatchReader, start: int, stop: int, halt: threading.Event) -> np.ndarray:
        batch = read_batch(self, start, stop, halt)
        tmp = Path(record) / f".batch_{start:06d}.npy"
        np.save(tmp, batch)
        os.replace(tmp, Path(record) / f"batch_{start:06d}.npy")
        return batch

    PatchReader._read_batch = recording  # type: ignore[method-assign]  # records what the reader returns
    job = embed_slide(slide, cache_dir=cache, tiling_params=TilingParams(patch_size=32, region_size=4),
                      batch_size=BATCH, chunk_rows=CHUNK_ROWS)
    for event in job:
        print(event.done, flush=True)
        time.sleep(0.02)  # a slow consumer: the parent's kill lands part way on any machine


def _spawn(slide: Path, cache: Path, record: Path) -> subprocess.Popen[str]:
    record.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, __file__, "--child", str(slide), str(cache), str(record)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _n_done(cache: Path) -> int:
    for partial in cache.glob("*.zarr.partial"):
        try:
            return int(json.loads((partial / "zarr.json").read_text())["attributes"].get("n_done", 0))
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def _pixels(record: Path) -> dict[int, np.ndarray]:
    """Rows -> pixels the reader returned (from a run's recorded batches)."""
    rows = {}
    for path in sorted(record.glob("batch_*.npy")):
        start = int(path.stem.split("_")[1])
        for i, patch in enumerate(np.load(path)):
            rows[start + i] = patch
    return rows


def _store(cache: Path) -> dict[str, np.ndarray]:
    from napari_regional_mil.embedding import find_slide_cache, load_slide_embeddings

    emb = load_slide_embeddings(find_slide_cache(cache, "stress"))
    arrays = {name: getattr(emb, name) for name in ("features", "coords_px", "grid_xy", "region_index",
                                                    "region_xy", "tissue_fraction")}
    arrays.update({f"region_{k}": v for k, v in emb.regional_embeddings.items()})
    return arrays


def run(args: argparse.Namespace) -> int:
    """The stress loop; returns the exit status."""
    from napari_regional_mil.synth.slides import write_synthetic_slide

    work = Path(tempfile.mkdtemp(prefix="stress-resume-"))
    keep = Path(args.keep) if args.keep else None
    rng = random.Random(args.seed)
    try:
        slide = write_synthetic_slide(work / "stress.tiff", _layout(), patch_px=32, mpp=0.5, seed=11)
        ref_proc = _spawn(slide, work / "ref", work / "ref-pixels")
        ref_proc.communicate()
        if ref_proc.returncode != 0:
            print("the reference run failed", file=sys.stderr)
            return 2
        reference, ref_pixels = _store(work / "ref"), _pixels(work / "ref-pixels")
        n = len(reference["features"])
        failed = 0
        for k in range(args.runs):
            cache, record = work / f"run{k}", work / f"run{k}-pixels"
            chunks = rng.randint(1, 3)
            proc = _spawn(slide, cache, record)
            assert proc.stdout is not None
            t0 = time.monotonic()
            for _ in proc.stdout:
                if _n_done(cache) >= chunks * CHUNK_ROWS or time.monotonic() - t0 > 300:
                    break
            proc.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            proc.wait(60)
            killed_at = _n_done(cache)
            killed_pixels = _pixels(record)
            resume = _spawn(slide, cache, work / f"run{k}-resume-pixels")
            resume.communicate()
            resumed_pixels = _pixels(work / f"run{k}-resume-pixels")
            seen = {r: (killed_pixels if r < killed_at else resumed_pixels).get(r) for r in range(n)}
            got = _store(cache)
            differ = [name for name in reference if not np.array_equal(got[name], reference[name])]
            line = f"run {k + 1}/{args.runs}: killed at {killed_at}/{n} patches"
            if not differ:
                print(f"{line}: equal", flush=True)
            else:
                failed += 1
                rows = np.flatnonzero((got["features"] != reference["features"]).any(axis=1))
                same_pixels = [r for r in rows if seen[r] is not None and np.array_equal(seen[r], ref_pixels[r])]
                print(f"{line}: DIFFERENT {differ}; feature rows {rows.tolist()}; of these, read with the same pixels: "
                      f"{[int(r) for r in same_pixels]}; max |d| "
                      f"{np.abs(got['features'] - reference['features']).max():.3g}", flush=True)
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    np.savez(keep / f"run{k}.npz", rows=rows, features=got["features"][rows],
                             reference_features=reference["features"][rows],
                             pixels=np.stack([seen[r] if seen[r] is not None else np.zeros_like(ref_pixels[r])
                                              for r in rows]),
                             reference_pixels=np.stack([ref_pixels[r] for r in rows]))
            shutil.rmtree(cache, ignore_errors=True)
            for folder in (record, work / f"run{k}-resume-pixels"):
                shutil.rmtree(folder, ignore_errors=True)
        print(f"{args.runs - failed} of {args.runs} killed-and-resumed runs equal the uninterrupted run bitwise")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    """Parse the arguments and run (or be a child)."""
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="kill-and-resume runs (default: 50)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="save the differing rows here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points (default: 0)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
