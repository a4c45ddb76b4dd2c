"""The Cohort widget's core state: CohortTable (no Qt)."""

from __future__ import annotations

import hashlib

import pytest

from napari_regional_mil.errors import CohortError
from napari_regional_mil.training.cohort import read_cohort
from napari_regional_mil.training.cohort_table import CohortTable, resolve_slide_file


@pytest.fixture
def slide_files(tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("b_slide.svs", "a_slide.tif", "c.ndpi", "notes.txt", ".hidden.tif"):
        (folder / name).write_bytes(b"x")
    return folder


def test_add_folder_picks_slides_sorted_and_skips_duplicates(slide_files):
    table = CohortTable()
    added = table.add_folder(slide_files)
    assert [table.rows[i].name for i in added] == ["a_slide", "b_slide", "c"]
    assert all(row.path is not None and row.path.is_file() for row in table.rows)
    assert table.add_slides([slide_files / "a_slide.tif"]) == []  # already listed
    assert len(table) == 3
    with pytest.raises(CohortError, match="no such folder"):
        table.add_folder(slide_files / "nope")


def test_classes_add_rename_remove_follow_the_rows(slide_files):
    table = CohortTable(["neg"])
    table.add_folder(slide_files)
    table.add_class(" pos ")
    assert table.class_names == ["neg", "pos"]
    table.set_label(0, "neg")
    table.set_label(1, "pos")
    table.set_label(2, "pos")
    with pytest.raises(CohortError, match="unknown class 'other'"):
        table.set_label(0, "other")
    with pytest.raises(CohortError, match="already exists"):
        table.add_class("neg")
    with pytest.raises(CohortError, match="empty"):
        table.add_class("  ")
    table.rename_class("pos", "tumour")
    assert [row.label for row in table.rows] == ["neg", "tumour", "tumour"]
    assert table.class_counts() == {"neg": 1, "tumour": 2}
    assert table.remove_class("neg") == 1
    assert [row.label for row in table.rows] == ["", "tumour", "tumour"]
    with pytest.raises(CohortError, match="split 'later'"):
        table.set_split(0, "later")


def test_export_then_import_round_trips_and_cli_reads_it(slide_files, tmp_path):
    table = CohortTable(["neg", "pos"])
    table.add_folder(slide_files)
    with pytest.raises(CohortError, match="'a_slide' has no label"):
        table.save_csv(tmp_path / "cohort.csv")
    for i, label in enumerate(["neg", "pos", "pos"]):
        table.set_label(i, label)
    table.set_split(2, "test")
    table.rows[1].patient = "P7"
    out = table.save_csv(slide_files / "cohort.csv")
    lines = out.read_text().splitlines()
    assert lines[0] == "slide,label,patient,split"
    assert lines[1] == "a_slide.tif,neg,,"  # relative to the CSV's folder
    cohort = read_cohort(out)  # the CLI's reader accepts it
    assert [(r.name, r.label, r.patient, r.split) for r in cohort.rows] == [
        ("a_slide", "neg", "a_slide", None), ("b_slide", "pos", "P7", None), ("c", "pos", "c", "test")]
    again = CohortTable()
    again.load_csv(out)
    assert [(r.name, r.label, r.patient, r.split) for r in again.rows] == [
        ("a_slide", "neg", "", ""), ("b_slide", "pos", "P7", ""), ("c", "pos", "", "test")]
    assert [r.path for r in again.rows] == [r.path for r in table.rows]
    built = again.to_cohort()
    assert built.class_names == cohort.class_names == ("neg", "pos")
    assert [r.patient for r in built.rows] == [r.patient for r in cohort.rows]


def test_bad_csv_names_the_row_and_keeps_the_table(tmp_path, slide_files):
    table = CohortTable()
    table.add_folder(slide_files)
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\na,neg\nb,\nc,pos\n")
    with pytest.raises(CohortError, match=r"bad.csv line 3: slide 'b' has no label"):
        table.load_csv(bad)
    assert len(table) == 3  # unchanged


def test_bare_names_resolve_to_files_next_to_the_csv(slide_files):
    assert resolve_slide_file("a_slide", slide_files) == (slide_files / "a_slide.tif").resolve()
    assert resolve_slide_file("b_slide.svs", slide_files) == (slide_files / "b_slide.svs").resolve()
    assert resolve_slide_file("missing", slide_files) is None


def test_to_cohort_needs_labels_and_two_classes(slide_files):
    table = CohortTable(["only"])
    with pytest.raises(CohortError, match="no slides"):
        table.to_cohort()
    table.add_folder(slide_files)
    with pytest.raises(CohortError, match="has no label"):
        table.to_cohort()
    for i in range(3):
        table.set_label(i, "only")
    with pytest.raises(CohortError, match="only one class"):
        table.to_cohort()


def test_embedded_states_from_the_cache(tmp_path, labelled_synthetic):
    from napari_regional_mil.embedding import write_slide_embeddings

    slides, classes = labelled_synthetic(3, seed=5)
    cache = tmp_path / "cache"
    for s in slides[:2]:
        write_slide_embeddings(cache, s.embeddings, key=hashlib.sha256(s.name.encode()).hexdigest())
    table = CohortTable(classes)
    table.add_slides([tmp_path / f"{s.name}.tif" for s in slides])
    assert table.refresh_embedded(cache) == [0, 1]
    assert [row.embedded for row in table.rows] == ["yes", "yes", "no"]
    assert table.missing() == [2]
    (cache / f"{slides[2].name}-0123456789ab.zarr.partial").mkdir()
    ((cache / f"{slides[2].name}-0123456789ab.zarr.partial") / "zarr.json").write_text(
        f'{{"attributes": {{"cache_key": "k", "slide_name": "{slides[2].name}", "complete": false}}}}')
    assert table.refresh_embedded(cache) == [2] and table.rows[2].embedded == "partial"
    assert table.set_prediction(slides[1].name, "inflamed (0.90)") == 1
    assert table.set_prediction("unknown", "x") is None


def test_other_columns_survive_import_edit_and_export(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in (["case_id", "slide_id", "label", "age", "grade"], ["c1", "s1", "A", 61, "G2"],
                ["c1", "s2", "A", 61, "G3"], ["c2", "s3", "B", 47, None]):
        sheet.append(row)
    book.save(tmp_path / "clinical.xlsx")
    table = CohortTable()
    table.load_csv(tmp_path / "clinical.xlsx")
    assert table.extra_columns == ["age", "grade"] and table.rows[0].patient == "c1"
    table.set_label(1, "B")
    with pytest.raises(CohortError, match=r"clinical.xlsx: the cohort is exported as CSV"):
        table.save_csv(tmp_path / "clinical.xlsx")
    assert table.to_cohort().column("grade") == {"s1": "G2", "s2": "G3", "s3": ""}
    out = table.save_csv(tmp_path / "cohort.csv")
    assert out.read_text().splitlines() == [
        "slide,label,patient,age,grade", "s1,A,c1,61,G2", "s2,B,c1,61,G3", "s3,B,c2,47,"]
    cohort = read_cohort(out)
    assert cohort.columns == ("age", "grade") and cohort.column("age") == {"s1": "61", "s2": "61", "s3": "47"}
