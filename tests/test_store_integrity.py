"""The store's integrity: one writer per store (two processes), reported discards, no uninitialised rows."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from napari_regional_mil.embedding import (
    embed_slide,
    load_slide_embeddings,
    slide_store,
)
from napari_regional_mil.embedding.reader import PatchReader, plan_reads
from napari_regional_mil.embedding.store import PARTIAL_SUFFIX, StoreLock, list_caches
from napari_regional_mil.jobs import run_job

_EMBED = """
import sys, time
from pathlib import Path
from napari_regional_mil.embedding import embed_slide
from napari_regional_mil.tiling import TilingParams

job = embed_slide(sys.argv[1], cache_dir=sys.argv[2], tiling_params=TilingParams(patch_size=32, region_size=4),
                  batch_size=8, chunk_rows=16)
gate = Path(sys.argv[3]) if len(sys.argv) > 3 else None
try:
    while True:
        event = next(job)
        print("event", event.message, flush=True)
        while gate is not None and event.done > 0 and not gate.exists():  # hold the lock until told
            time.sleep(0.05)
except StopIteration as stop:
    print("result", "computed" if stop.value.computed else "cached", stop.value.cache_path, flush=True)
"""


def _start(slide, cache, *gate) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _EMBED, str(slide), str(cache), *map(str, gate)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_embedding_one_slide_take_turns_and_the_second_reuses_the_store(embed_slide_path, tmp_path):
    cache, gate = tmp_path / "cache", tmp_path / "go"
    first = _start(embed_slide_path, cache, gate)  # stops after its first batch, holding the lock
    t0 = time.monotonic()
    while not list(cache.glob(f"*.zarr{PARTIAL_SUFFIX}")):
        assert first.poll() is None and time.monotonic() - t0 < 120, first.communicate()
        time.sleep(0.02)
    second = _start(embed_slide_path, cache)
    seen = []
    for line in second.stdout:  # the second waits for the lock (and says so) ...
        seen.append(line)
        if "waiting for another process writing this cache" in line:
            break
    assert seen and "waiting for another process" in seen[-1], (seen, second.stderr.read())
    gate.write_text("")  # ... until the first finishes
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    out2 = "".join(seen) + out2
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    result1 = next(line.split() for line in out1.splitlines() if line.startswith("result"))
    result2 = next(line.split() for line in out2.splitlines() if line.startswith("result"))
    assert result1[1] == "computed" and result2[1] == "cached" and result1[2] == result2[2]
    infos = list_caches(cache)
    assert len(infos) == 1 and infos[0].complete
    assert load_slide_embeddings(infos[0].path).n_patches == infos[0].n_patches > 100


def test_the_lock_excludes_another_holder_until_released(embed_slide_path, small_tiling, tmp_path):
    location = slide_store(tmp_path, embed_slide_path, tiling_params=small_tiling)
    holder = StoreLock(location)
    assert holder.acquire(timeout=1)
    other = StoreLock(location)
    assert not other.acquire(timeout=0.2)
    done = threading.Event()

    def take() -> None:
        other.acquire(timeout=30)
        done.set()

    thread = threading.Thread(target=take)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()
    holder.release()
    thread.join(30)
    assert done.is_set()
    other.release()


def test_a_partial_store_that_cannot_be_opened_is_reported_then_rewritten(embed_slide_path, small_tiling, tmp_path,
                                                                           caplog):
    location = slide_store(tmp_path, embed_slide_path, tiling_params=small_tiling)
    location.partial.mkdir(parents=True)
    (location.partial / "zarr.json").write_text("{ this is not json")
    events = []
    with caplog.at_level(logging.WARNING, logger="napari_regional_mil"):
        result = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling), events.append)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    message = warnings[0].getMessage()
    assert str(location.partial) in message and "discarding the partial cache" in message
    assert "cannot be opened" in message
    assert any(e.message == message for e in events)  # the GUI and the CLI's progress see it too
    assert result.computed and result.resumed_from == 0 and load_slide_embeddings(result.cache_path).n_patches > 100


def test_a_partial_store_of_other_patches_is_reported(embed_slide_path, small_tiling, tmp_path, caplog):
    job = embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling, batch_size=8, chunk_rows=16)
    for event in job:
        if event.total and event.done >= 32:
            break
    job.close()
    location = slide_store(tmp_path, embed_slide_path, tiling_params=small_tiling)
    meta = json.loads((location.partial / "zarr.json").read_text())
    meta["attributes"]["embedding_dim"] = 3  # as if written by another encoder version
    (location.partial / "zarr.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="napari_regional_mil"):
        result = run_job(embed_slide(embed_slide_path, cache_dir=tmp_path, tiling_params=small_tiling))
    assert [r.getMessage().split(": ", 2)[-1] for r in caplog.records] == ["its embedding dimension 3 is not 185"]
    assert result.resumed_from == 0


def test_a_halted_batch_holds_only_the_patches_read(embed_slide_path):
    from napari_regional_mil.slide import open_slide

    coords = np.array([[0, 0], [32, 0], [64, 0], [0, 64], [32, 64], [256, 96]], np.int64)
    with open_slide(embed_slide_path) as slide:
        plan = plan_reads(slide_mpp=0.5, level_downsamples=slide.info.level_downsamples, patch_size=32,
                          patch_size_level0=32, input_size=None, encoder_mpp=None)
        reader = PatchReader(slide, coords, plan, num_threads=1, batch_size=6)
        halt = threading.Event()
        assert reader._read_batch(0, 6, halt).shape == (6, 32, 32, 3)
        read_run = reader._read_run

        def then_halt(first, stop):
            patches = read_run(first, stop)
            halt.set()
            return patches

        reader._read_run = then_halt
        batch = reader._read_batch(0, 6, halt)  # the first run (3 neighbours in a row), then halted
        expected = np.stack([slide.read_region(tuple(c), 0, (32, 32)) for c in coords[:3]])
        assert batch.shape == (3, 32, 32, 3) and np.array_equal(batch, expected)
        halt.set()
        assert reader._read_batch(0, 6, halt).shape == (0, 32, 32, 3)


def test_a_lock_that_cannot_be_created_is_a_cache_error(tmp_path):
    from napari_regional_mil.embedding.store import StoreLocation
    from napari_regional_mil.errors import CacheError

    folder = tmp_path / "a-file"
    folder.write_text("")
    lock = StoreLock(StoreLocation("k" * 64, folder / "s-kkkkkkkkkkkk.zarr"))
    with pytest.raises(CacheError, match=r"a-file/s-kkkkkkkkkkkk\.lock: cannot lock the cache"):
        lock.acquire(timeout=1)
