"""Interruption (issue 7): SIGKILL an embedding run and a training run part way, then run again.

* The embedding resumes from its last complete chunk (it does not start from zero) and
  its final cache equals an uninterrupted run's, array by array; the killed run's
  partial store is never taken as complete.
* A killed training leaves the previous model file byte-identical (no half-written
  checkpoint under its name, no temp file taken for it); training again works.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from badinputs import save_model_for, write_cohort_caches
from napari_regional_mil.embedding.store import CHUNK_ROWS, PARTIAL_SUFFIX
from napari_regional_mil.errors import CacheError
from resume_check import RECORDING_CHILD, assert_same_store, recorded_pixels

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

_SCRIPT = Path(sys.executable).with_name("napari-regional-mil")  # the installed console script
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "napari_regional_mil.cli"]
EMBED_ARGS = ["--patch-size", "32", "--region-size", "4", "--batch-size", "256", "--readers", "2"]
#: ``python -c`` script running the CLI with argv[2:] while recording the reads into argv[1].
RECORDED_CLI = RECORDING_CHILD + """
from napari_regional_mil.cli import main
with record(sys.argv[1]):
    code = main(sys.argv[2:])
sys.exit(code)
"""


def recorded_cli(record: Path) -> list[str]:
    """The CLI, recording the pixels its patch reader returns under ``record``."""
    return [sys.executable, "-c", RECORDED_CLI, str(record)]


class Child:
    """A CLI subprocess whose stderr lines are collected as they come."""

    def __init__(self, argv: list, *, cli: list | None = None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*(cli or CLI), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)
        assert self.proc.returncode == -signal.SIGKILL


def _wait_for(condition, child: Child, *, timeout: float = 120.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not condition():
        if child.proc.poll() is not None:
            pytest.fail(f"the run ended (exit {child.proc.returncode}) before {what}: {child.lines[-5:]}")
        if time.monotonic() - t0 > timeout:
            child.proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _n_done(partial: Path) -> int:
    try:
        return int(json.loads((partial / "zarr.json").read_text())["attributes"].get("n_done", 0))
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def resumable_slide(tmp_path_factory):
    """A synthetic slide of 2 000 - 3 000 tissue patches of 32 px (three cache chunks of 1 024), non-square."""
    from napari_regional_mil.synth.slides import write_synthetic_slide

    types = np.full((47, 61), -1, np.int16)
    types[2:45, 3:58] = (np.arange(43 * 55).reshape(43, 55) // 7) % 6
    types[20:24, 30:36] = -1
    return write_synthetic_slide(tmp_path_factory.mktemp("resume") / "slide_a.tif", types, patch_px=32, mpp=0.5,
                                 seed=4, tile=256, min_level_size=256)


def test_killed_embedding_resumes_from_its_last_chunk_and_equals_an_uninterrupted_run(resumable_slide, tmp_path):
    from napari_regional_mil.embedding import (
        find_slide_cache,
        list_caches,
        load_slide_embeddings,
    )

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    child = Child(
        ["embed", resumable_slide, "--out", killed, *EMBED_ARGS], cli=recorded_cli(tmp_path / "pixels-killed")
    )
    partial: list[Path] = []

    def one_chunk_landed() -> bool:
        partial[:] = list(killed.glob(f"*.zarr{PARTIAL_SUFFIX}")) if killed.exists() else []
        return bool(partial) and _n_done(partial[0]) >= CHUNK_ROWS

    _wait_for(one_chunk_landed, child, what="the first cache chunk")
    child.kill()
    n_done = _n_done(partial[0])
    infos = list_caches(killed)
    assert len(infos) == 1 and not infos[0].complete and 0 < n_done < infos[0].n_patches
    assert n_done % CHUNK_ROWS == 0  # only whole chunks count
    assert not list(killed.glob("*.zarr"))  # nothing under a final name
    with pytest.raises(CacheError, match="1 incomplete: run embed again to resume"):
        find_slide_cache(killed, resumable_slide)
    with pytest.raises(CacheError, match="incomplete"):
        load_slide_embeddings(partial[0])

    again = subprocess.run([*recorded_cli(tmp_path / "pixels-resumed"), "embed", str(resumable_slide), "--out",
                            str(killed), *EMBED_ARGS], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resumed at {n_done}," in again.stdout  # started at the last whole chunk, not from zero
    reference = subprocess.run([*recorded_cli(tmp_path / "pixels-clean"), "embed", str(resumable_slide), "--out",
                                str(clean), *EMBED_ARGS], capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr
    assert "resumed at" not in reference.stdout

    resumed = load_slide_embeddings(find_slide_cache(killed, resumable_slide))
    fresh = load_slide_embeddings(find_slide_cache(clean, resumable_slide))
    assert resumed.n_patches == fresh.n_patches > 2 * CHUNK_ROWS
    killed_pixels = {r: p for r, p in recorded_pixels(tmp_path / "pixels-killed").items() if r < n_done}
    assert_same_store(resumed, fresh, pixels={**recorded_pixels(tmp_path / "pixels-resumed"), **killed_pixels},
                      ref_pixels=recorded_pixels(tmp_path / "pixels-clean"), dump=tmp_path / "differing-rows.npz")
    assert np.isfinite(resumed.features).all()
    assert not list(killed.glob(f"*{PARTIAL_SUFFIX}"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_training_leaves_the_previous_model_untouched(tmp_path):
    from napari_regional_mil.embedding import find_slide_cache
    from napari_regional_mil.model.checkpoint import load_checkpoint

    cache = tmp_path / "cache"
    names, labels = write_cohort_caches(cache, n_slides=6)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("slide,label\n" + "".join(f"{n},{lab}\n" for n, lab in zip(names, labels)))
    models = tmp_path / "models"
    models.mkdir()
    model = save_model_for(find_slide_cache(cache, names[0]), models / "model.safetensors")  # "last week's model"
    before = _sha(model)
    small = ["--hidden-dim", "16", "--attention-dim", "8", "--min-patches", "8", "--max-patches", "24"]

    # a fresh output path: killed mid-epoch, nothing appears under its name
    child = Child(["train", "--labels", labels_csv, "--cache", cache, "--out", models / "new.safetensors",
                   "--epochs", "2000", "--min-epochs", "2000", "--patience", "2000", *small])
    _wait_for(lambda: any(line.lstrip().startswith(("train ", "train:")) for line in child.lines), child,
              what="training steps")
    time.sleep(0.5)
    child.kill()
    assert sorted(p.name for p in models.iterdir()) == ["model.safetensors"]

    # over an existing model: killed mid-epoch, the old file is byte-identical and still loads
    child = Child(["train", "--labels", labels_csv, "--cache", cache, "--out", model,
                   "--epochs", "2000", "--min-epochs", "2000", "--patience", "2000", *small])
    _wait_for(lambda: any(line.lstrip().startswith(("train ", "train:")) for line in child.lines), child,
              what="training steps")
    time.sleep(0.5)
    child.kill()
    assert _sha(model) == before
    assert sorted(p.name for p in models.iterdir()) == ["model.safetensors"]
    assert load_checkpoint(model).class_names == ("negative", "positive")

    # training again completes and replaces the model atomically
    done = subprocess.run([*CLI, "train", "--labels", str(labels_csv), "--cache", str(cache), "--out", str(model),
                           "--epochs", "2", "--min-epochs", "1", *small], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _sha(model) != before and load_checkpoint(model).class_names == tuple(sorted(set(labels)))
    assert sorted(p.name for p in models.iterdir()) == ["model.run.json", "model.safetensors"]  # its run record


def test_a_half_written_temp_checkpoint_is_never_taken_for_the_model(tmp_path, capsys):
    """What a kill during the save leaves (a temp file beside the model) is never taken for the model."""
    from napari_regional_mil.cli import main
    from napari_regional_mil.embedding import find_slide_cache

    cache = tmp_path / "cache"
    names, _labels = write_cohort_caches(cache, n_slides=4)
    model = save_model_for(find_slide_cache(cache, names[0]), tmp_path / "model.safetensors")
    leftover = tmp_path / ".model.safetensors.k1ll3d.tmp"
    leftover.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    assert main(["predict", "--model", str(model), "--cache", str(cache), names[0], "--no-attention"]) == 0
    assert capsys.readouterr().out.startswith("slide,predicted")
    assert main(["predict", "--model", str(leftover), "--cache", str(cache), names[0]]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
