"""A cohort of 1,000 slides lists at once: files and caches are looked up in a worker, then filled in."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_regional_mil.embedding.store import write_slide_embeddings
from napari_regional_mil.embedding.types import SlideEmbeddings
from napari_regional_mil.training import cohort_table
from napari_regional_mil.training.cohort_table import (
    CHECKING,
    CohortTable,
    check_status,
)

N_SLIDES = 1000


def _cohort(folder):
    """1,000 rows naming slides by bare name; 12 slide files exist; 5 of those have a cache."""
    slides = folder / "slides"
    slides.mkdir()
    for i in range(12):
        (slides / f"s{i:04d}.svs").write_bytes(b"not read")
    cache = folder / "cache"
    for i in range(5):
        emb = SlideEmbeddings(f"s{i:04d}", np.zeros((3, 4), np.float32), meta={"encoder": "e", "encoder_hash": "h"})
        write_slide_embeddings(cache, emb, key=f"{i:064d}")
    csv = slides / "cohort.csv"
    csv.write_text("slide,label\n" + "".join(f"s{i:04d},{'ab'[i % 2]}\n" for i in range(N_SLIDES)))
    return csv, cache


def test_a_lazy_import_reads_nothing_until_the_status_is_applied(tmp_path):
    csv, cache = _cohort(tmp_path)
    table = CohortTable()
    table.load_csv(csv, resolve=False)
    assert len(table) == N_SLIDES and {r.embedded for r in table.rows} == {CHECKING}
    assert all(r.path is None and not r.resolved for r in table.rows)
    status = check_status(table.unresolved(), base=table.base, cache_dir=cache)
    table.rows.pop(7)  # edited meanwhile: rows are matched by entry and name
    changed = table.apply_status(status)
    assert len(changed) == N_SLIDES - 1
    assert [r.embedded for r in table.rows[:6]] == ["yes"] * 5 + ["no"]
    assert [r.path is not None for r in table.rows[:12]] == [True] * 11 + [False]  # s0012 has no file
    assert table.rows[0].path == (csv.parent / "s0000.svs").resolve()
    eager = CohortTable()
    eager.load_csv(csv)
    eager.refresh_embedded(cache)
    assert [r.path for r in eager.rows if r.name != "s0007"] == [r.path for r in table.rows]
    assert [r.embedded for r in eager.rows if r.name != "s0007"] == [r.embedded for r in table.rows]


def test_resolve_looks_for_one_file_on_demand(tmp_path):
    csv, _ = _cohort(tmp_path)
    table = CohortTable()
    table.load_csv(csv, resolve=False)
    assert table.resolve(3) == (csv.parent / "s0003.svs").resolve() and table.rows[3].resolved
    assert table.resolve(500) is None and table.rows[500].resolved
    assert len(table.unresolved()) == N_SLIDES - 2


def test_adding_files_skips_names_already_listed(tmp_path):
    table = CohortTable()
    files = [tmp_path / f"x{i}.svs" for i in range(3)]
    for f in files:
        f.write_bytes(b"")
    assert table.add_slides([*files, files[1]]) == [0, 1, 2]
    assert table.add_slides([tmp_path / "elsewhere" / "x2.svs", tmp_path / "x3.svs"]) == [3]


@pytest.mark.gui
def test_the_cohort_widget_lists_1000_slides_and_checks_them_in_a_worker(make_napari_viewer, qtbot, tmp_path,
                                                                          monkeypatch):
    from napari_regional_mil._widgets._cohort_model import EMBEDDED
    from napari_regional_mil._widgets._worker import running_job
    from napari_regional_mil._widgets.cohort_widget import CohortWidget

    csv, cache = _cohort(tmp_path)
    on_main = []
    for name in ("resolve_slide_file", "embedded_states"):
        real = getattr(cohort_table, name)

        def spy(*args, _real=real, **kwargs):
            on_main.append(threading.current_thread() is threading.main_thread())
            return _real(*args, **kwargs)

        monkeypatch.setattr(cohort_table, name, spy)
    widget = CohortWidget(make_napari_viewer())
    widget.embed_box.set_cache_dir(cache)
    qtbot.waitUntil(lambda: running_job("cohort-status") is None, timeout=30000)
    on_main.clear()
    assert widget.import_csv(csv)
    model = widget.model
    assert model.rowCount() == N_SLIDES
    assert not on_main  # listed without looking at a file or a cache
    assert {model.data(model.index(r, EMBEDDED)) for r in range(N_SLIDES)} == {CHECKING}
    # one condition, one budget: the check has finished and its result is in the table
    qtbot.waitUntil(lambda: running_job("cohort-status") is None and model.data(model.index(0, EMBEDDED)) == "yes",
                    timeout=60000)
    assert on_main and not any(on_main)  # every look-up ran in the worker
    column = [model.data(model.index(r, EMBEDDED)) for r in range(N_SLIDES)]
    assert column[:5] == ["yes"] * 5 and set(column[5:]) == {"no"}
    assert "embedded: 5/1000" in widget.summary.text()
    assert widget.table.rows[11].path is not None and widget.table.rows[12].path is None
