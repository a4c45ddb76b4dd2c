"""Resources and concurrency (issue 7): read-only and full output folders, one job per kind, closing napari.

Tests run as root in CI, where ``chmod 555`` does not stop writes: an unwritable folder is
made as a path under a *file* (``file/sub``), which fails for root too, and a full disk
is simulated by ``os.replace`` (every atomic write's last step) raising ``ENOSPC``, or
``shutil.disk_usage`` reporting little free space. Whatever fails, it fails with one
line naming the file, before work where that can be known, and leaves no half-written file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import threading
import time

import pytest

from badinputs import save_model_for, tree_hashes, write_cohort_caches
from test_bad_input_corpus import assert_one_error_line, run_cli

SMALL_EMBED = ["--patch-size", "32", "--region-size", "4", "--batch-size", "64"]
SMALL_TRAIN = ["--epochs", "2", "--min-epochs", "1", "--hidden-dim", "16", "--attention-dim", "8",
               "--min-patches", "8", "--max-patches", "24"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """6 small synthetic caches with a labels CSV and a model for them."""
    from types import SimpleNamespace

    from napari_regional_mil.embedding import find_slide_cache

    root = tmp_path_factory.mktemp("resources")
    names, labels = write_cohort_caches(root / "cache", n_slides=6)
    csv = root / "labels.csv"
    csv.write_text("slide,label\n" + "".join(f"{n},{lab}\n" for n, lab in zip(names, labels)))
    model = save_model_for(find_slide_cache(root / "cache", names[0]), root / "model.safetensors")
    return SimpleNamespace(root=root, cache=root / "cache", csv=csv, names=names, model=model)


def _blocked(tmp_path):
    """A folder nobody can create, root included: it lies under a regular file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return blocker / "sub"


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- unwritable output folders: refused before any work ------------------------------------------


def test_unwritable_outputs_are_refused_before_work(embed_slide_path, cohort, tmp_path, capsys, monkeypatch):
    out = _blocked(tmp_path)
    started = []
    from napari_regional_mil.embedding import pipeline
    from napari_regional_mil.training import train

    monkeypatch.setattr(pipeline, "PatchReader", lambda *a, **k: started.append("embed") or pytest.fail("work began"))
    monkeypatch.setattr(train, "_train", lambda *a, **k: started.append("train") or pytest.fail("work began"))
    cases = [
        (["embed", embed_slide_path, "--out", out, *SMALL_EMBED], "not writable"),
        (["train", "--labels", cohort.csv, "--cache", cohort.cache, "--out", out / "m.safetensors", *SMALL_TRAIN],
         "does not exist"),
        (["crossval", "--labels", cohort.csv, "--cache", cohort.cache, "--out", out / "cv", *SMALL_TRAIN],
         "does not exist"),
        (["evaluate", "--model", cohort.model, "--labels", cohort.csv, "--cache", cohort.cache, "--out", out / "ev"],
         "does not exist"),
        (["predict", "--model", cohort.model, "--cache", cohort.cache, cohort.names[0], "--out", out / "p.csv"],
         "does not exist"),
    ]
    for argv, problem in cases:
        code, stdout, err = run_cli(argv, capsys)
        assert_one_error_line(code, stdout, err, names=str(out), problem=problem)
    assert started == []
    assert _listing(tmp_path) == ["a_file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores chmod 555 (see _blocked)")
def test_read_only_cache_folder_is_refused_before_work(embed_slide_path, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        code, out, err = run_cli(["embed", embed_slide_path, "--out", ro, *SMALL_EMBED], capsys)
        assert_one_error_line(code, out, err, names=str(ro), problem="not writable")
        assert _listing(ro) == []
    finally:
        ro.chmod(0o755)


def test_too_little_free_space_is_refused_before_work(embed_slide_path, tmp_path, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))  # 1 MiB free
    code, out, err = run_cli(["embed", embed_slide_path, "--out", tmp_path / "c", *SMALL_EMBED], capsys)
    assert_one_error_line(code, out, err, names=str(tmp_path / "c"), problem=r"only 1 MiB free, about \d+ MiB needed")
    assert _listing(tmp_path / "c") == []


# --- a full disk at the last step: no half-written file, the old one intact ------------------------


@pytest.fixture
def disk_full(monkeypatch):
    """``os.replace`` raises ENOSPC (what a full disk does to the atomic writes' last step)."""
    calls = []

    def full(src, dst, *a, **k):
        calls.append(dst)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", full)
    return calls


def test_full_disk_keeps_the_previous_model_and_leaves_no_temp(cohort, capsys, disk_full):
    before = tree_hashes(cohort.root)
    code, out, err = run_cli(["train", "--labels", cohort.csv, "--cache", cohort.cache, "--out", cohort.model,
                              *SMALL_TRAIN], capsys)
    assert_one_error_line(code, out, err, names=cohort.model.name, problem="No space left on device")
    assert disk_full  # the failure did happen at the rename
    assert tree_hashes(cohort.root) == before  # the old model byte-identical, no temp file beside it


@pytest.mark.parametrize("command", ["predict", "crossval"])
def test_full_disk_on_csv_and_json_outputs(cohort, tmp_path, capsys, disk_full, command):
    if command == "predict":
        previous = tmp_path / "p.csv"
        previous.write_text("previous results\n")
        argv = ["predict", "--model", cohort.model, "--cache", cohort.cache, cohort.names[0], "--no-attention",
                "--out", previous]
    else:  # an output folder holding a previous run's results
        (tmp_path / "cv").mkdir()
        previous = tmp_path / "cv" / "crossval.json"
        previous.write_text("previous results\n")
        argv = ["crossval", "--labels", cohort.csv, "--cache", cohort.cache, "--folds", "2", *SMALL_TRAIN,
                "--bootstrap", "20", "--out", tmp_path / "cv"]
    code, out, err = run_cli(argv, capsys)
    assert_one_error_line(code, out, err, names=str(tmp_path), problem="No space left on device")
    assert previous.read_text() == "previous results\n"
    assert _listing(tmp_path) == [previous.name if command == "predict" else "cv"]  # no temp file or folder left
    assert _listing(previous.parent) == [previous.name]


def test_full_disk_while_embedding_leaves_no_complete_cache_then_resumes(
    embed_slide_path, tmp_path, capsys, monkeypatch
):
    from napari_regional_mil.embedding import (
        find_slide_cache,
        list_caches,
        load_slide_embeddings,
    )
    from napari_regional_mil.errors import CacheError

    cache = tmp_path / "cache"
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst, *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))))
    code, _out, err = run_cli(["embed", embed_slide_path, "--out", cache, *SMALL_EMBED], capsys)
    assert code != 0 and "No space left on device" in err and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [err.strip().splitlines()[-1]]
    assert not list(cache.glob("*.zarr"))  # nothing under a final name
    assert all(not info.complete for info in list_caches(cache))
    with pytest.raises(CacheError, match="no complete embedding cache"):
        find_slide_cache(cache, embed_slide_path)
    monkeypatch.setattr(os, "replace", real)  # space again: the run finishes (resuming what landed)
    code, _out, err = run_cli(["embed", embed_slide_path, "--out", cache, *SMALL_EMBED], capsys)
    assert code == 0, err
    assert load_slide_embeddings(find_slide_cache(cache, embed_slide_path)).n_patches > 100


# --- the GUI: one job per kind, closing napari while a worker runs -------------------------------------------


def _thread_names() -> set[str]:
    """Python threads alive (the job's helpers: readers, executors).

    zarr's process-wide I/O pool (``zarr_io``, ``asyncio_<n>``) is left out: it is started
    lazily by the first read and lives, idle, as long as the process, by zarr's design. So are
    Qt's pool threads: ``threading`` lists one as ``Dummy-<n>`` for good once it has run Python
    code (a ``_DummyThread`` is never marked as ended), idle or not; whether one still runs a
    task is :func:`_pool_threads`'s to say.
    """
    return {f"{t.name}-{t.ident}" for t in threading.enumerate()
            if t.is_alive() and not isinstance(t, threading._DummyThread)
            and not t.name.startswith(("asyncio_", "zarr_io"))}


def _pool_threads() -> int:
    """Threads of Qt's global pool running a task (napari workers run there, unseen by ``threading``)."""
    from qtpy.QtCore import QThreadPool

    return QThreadPool.globalInstance().activeThreadCount()


@pytest.fixture
def train_gui(make_napari_viewer, cohort, tmp_path):
    from types import SimpleNamespace

    from napari_regional_mil._widgets.cohort_widget import CohortWidget
    from napari_regional_mil._widgets.train_widget import TrainWidget

    viewer = make_napari_viewer()
    cohort_widget = CohortWidget(viewer)
    cohort_widget.embed_box.set_cache_dir(cohort.cache)
    assert cohort_widget.import_csv(cohort.csv)
    train = TrainWidget(viewer)
    m, o = train.model_fields, train.optim_fields
    m.hidden_dim.setValue(16)
    m.attention_dim.setValue(8)
    m.min_patches.setValue(8)
    m.max_patches.setValue(24)
    o.epochs.setValue(5000)  # runs until stopped
    o.val_fraction.setValue(0.34)
    model = tmp_path / "model.safetensors"
    shutil.copyfile(cohort.model, model)
    train.out_path.setText(str(model))
    return SimpleNamespace(viewer=viewer, train=train, model=model, sha=hashlib.sha256(model.read_bytes()).hexdigest())


def test_second_training_is_refused_then_closing_napari_cancels_cleanly(train_gui, qtbot, shown_notes, capsys, caplog):
    from napari_regional_mil._widgets._worker import running_job

    qtbot.waitUntil(lambda: _pool_threads() == 0, timeout=30000)  # the fixture's own quick jobs are done
    threads_before, pool_before = _thread_names(), 0
    first = train_gui.train.start()
    assert first is not None
    qtbot.waitUntil(lambda: bool(train_gui.train.plot.series("train_loss")), timeout=60000)  # epochs are going
    assert _pool_threads() > pool_before  # the job's thread is seen (so the checks below can fail)

    from napari_regional_mil._widgets.train_widget import TrainWidget

    other = TrainWidget(train_gui.viewer)
    other.out_path.setText(str(train_gui.model.with_name("other.safetensors")))
    assert other.start() is None  # refused, with a message
    assert any(kind == "show_warning" and "refused" in msg and "still running" in msg for kind, msg in shown_notes)
    assert first.running and running_job("train") is first

    train_gui.viewer.close()  # while the worker runs
    assert not first.running and first.cancel_requested
    qtbot.wait(200)
    deadline = time.monotonic() + 10
    while (_thread_names() - threads_before or _pool_threads() > pool_before) and time.monotonic() < deadline:
        qtbot.wait(50)
    assert _thread_names() - threads_before == set()  # no orphan thread
    assert _pool_threads() == pool_before
    assert running_job("train") is None
    assert hashlib.sha256(train_gui.model.read_bytes()).hexdigest() == train_gui.sha  # the old model untouched
    assert _listing(train_gui.model.parent) == ["model.safetensors"]
    assert not [m for kind, m in shown_notes if kind == "show_error"]
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
