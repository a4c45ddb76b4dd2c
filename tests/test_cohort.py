"""The cohort table (CSV, TSV, XLSX): columns, extra columns, validation with messages naming the file and line."""

from __future__ import annotations

import pytest

from napari_regional_mil.errors import CohortError
from napari_regional_mil.training.cohort import CohortColumns, read_cohort, slide_key


def _csv(tmp_path, text: str | bytes, name: str = "labels.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_reads_rows_classes_patients_and_splits(tmp_path):
    path = _csv(
        tmp_path,
        "slide,label,patient,split\nA.svs,mut,p1,train\nB,wt,p1,\n/data/C.tiff,wt,,val\n\nD,mut,p3,TEST\n",
    )
    cohort = read_cohort(path)
    assert cohort.class_names == ("mut", "wt")  # sorted
    assert [r.name for r in cohort.rows] == ["A", "B", "C", "D"]
    assert [r.line for r in cohort.rows] == [2, 3, 4, 6]
    assert cohort.labels.tolist() == [0, 1, 1, 0]
    assert cohort.patients.tolist() == ["p1", "p1", "C", "p3"]
    assert [r.split for r in cohort.rows] == ["train", None, "val", "test"]


def test_explicit_class_order(tmp_path):
    cohort = read_cohort(_csv(tmp_path, "slide,label\na,x\nb,y\n"), class_names=["y", "x", "z"])
    assert cohort.class_names == ("y", "x", "z") and cohort.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slide,patient\na,p\n", "labels.csv line 1: no label column 'label' \\(columns: slide, patient\\)"),
        ("slide_name,label\na,x\n", "labels.csv line 1: no slide column 'slide' or 'slide_id'.*--slide-column"),
        ("slide,label,Label\na,x,y\n", "labels.csv line 1: column 'label' appears twice"),
        ("slide,label,,\na,x,,3\n", "labels.csv line 1: column 4 has values but no name"),
        ("slide,label\na,x\nb,\nc,y\n", "labels.csv line 3: slide 'b' has no label"),
        ("slide,label\na,x\nb,y\na.svs,y\n", "labels.csv line 4: slide 'a' is already listed on line 2"),
        ("slide,label\na,x\nb,x\n", r"labels.csv: only one class \('x'\)"),
        ("slide,label,split\na,x,train\nb,y,holdout\n", "labels.csv line 3: split 'holdout'"),
        ("slide,label\na,x,extra\n", "labels.csv line 2: 3 fields for 2 columns"),
        ("", "labels.csv: empty file"),
        ("slide,label\n", "labels.csv: no slides listed"),
    ],
)
def test_bad_csv_names_the_row(tmp_path, text, message):
    with pytest.raises(CohortError, match=message):
        read_cohort(_csv(tmp_path, text))


def test_unknown_label_with_explicit_classes(tmp_path):
    with pytest.raises(CohortError, match="line 3: unknown label 'maybe' \\(classes: no, yes\\)"):
        read_cohort(_csv(tmp_path, "slide,label\na,yes\nb,maybe\n"), class_names=["no", "yes"])


def test_non_utf8_byte_names_the_line(tmp_path):
    path = _csv(tmp_path, b"slide,label\na,x\nb\xe9,y\n")
    with pytest.raises(CohortError, match=r"labels.csv line 3: not UTF-8 \(byte 0xe9\)"):
        read_cohort(path)


def test_utf8_bom_and_non_ascii_names_are_fine(tmp_path):
    cohort = read_cohort(_csv(tmp_path, "\ufeffslide,label\nbiopsie_é,muté\nb,wt\n"))
    assert cohort.rows[0].name == "biopsie_é" and "muté" in cohort.class_names


def test_unknown_slide_names_the_row(tmp_path):
    path = _csv(tmp_path, "slide,label\na,x\nghost,y\n")
    with pytest.raises(CohortError, match="line 3: unknown slide 'ghost' \\(nothing here\\)"):
        read_cohort(path, slide_exists=lambda row: row.name != "ghost", unknown_slide_hint="nothing here")


def test_missing_file(tmp_path):
    with pytest.raises(CohortError, match="cannot read"):
        read_cohort(tmp_path / "absent.csv")


def test_slide_key():
    assert slide_key("/a/b/case 1.svs") == "case 1"
    assert slide_key("x.ome.tiff") == "x"
    assert slide_key("name.with.dots") == "name.with.dots"


def test_extra_columns_are_kept_and_reachable_per_slide(tmp_path):
    path = _csv(tmp_path, "slide,Age,label,Sex,notes\nA.svs,61,mut,F,\"smoker, 20 py\"\nB,47,wt,M,\n")
    cohort = read_cohort(path)
    assert cohort.columns == ("Age", "Sex", "notes")
    assert cohort.column("Age") == {"A": "61", "B": "47"}
    assert cohort.column("sex") == {"A": "F", "B": "M"}  # case-insensitive when unambiguous
    assert cohort.rows[0].extra == {"Age": "61", "Sex": "F", "notes": "smoker, 20 py"}
    assert cohort.subset([1]).column("notes") == {"B": ""}
    with pytest.raises(CohortError, match=r"labels.csv: no column 'grade' \(other columns: Age, Sex, notes\)"):
        cohort.column("grade")


def test_clam_layout_case_id_slide_id_label(tmp_path):
    path = _csv(tmp_path, "case_id,slide_id,label\ncase_1,slide_1a,tumor_tissue\ncase_1,slide_1b,tumor_tissue\n"
                          "case_2,slide_2,normal_tissue\n")
    cohort = read_cohort(path)
    assert [r.name for r in cohort.rows] == ["slide_1a", "slide_1b", "slide_2"]
    assert cohort.patients.tolist() == ["case_1", "case_1", "case_2"] and cohort.has_patients
    assert cohort.columns == ()


def test_chosen_columns_and_missing_chosen_column(tmp_path):
    path = _csv(tmp_path, "file,diagnosis,subject,fold\nx.svs,A,s1,train\ny.svs,B,s2,test\n")
    cohort = read_cohort(path, columns=CohortColumns(slide="file", label="Diagnosis", patient="subject", split="fold"))
    assert [r.name for r in cohort.rows] == ["x", "y"]
    assert cohort.labels.tolist() == [0, 1] and cohort.patients.tolist() == ["s1", "s2"]
    assert [r.split for r in cohort.rows] == ["train", "test"] and cohort.columns == ()
    with pytest.raises(CohortError, match=r"labels.csv line 1: no label column 'grade' \(columns: file, diagnosis"):
        read_cohort(path, columns=CohortColumns(slide="file", label="grade"))
    with pytest.raises(CohortError, match=r"one column is used for two roles"):
        read_cohort(path, columns=CohortColumns(slide="file", label="diagnosis", patient="file"))
    assert not read_cohort(_csv(tmp_path, "slide,label\na,x\nb,y\n", "plain.csv")).has_patients


def test_tsv_and_semicolon_tables(tmp_path):
    tsv = read_cohort(_csv(tmp_path, "slide\tlabel\tgrade\na\tx\t2\nb\ty\t3\n", "cohort.tsv"))
    semi = read_cohort(_csv(tmp_path, "slide;label;grade\na;x;2\nb;y;3\n", "cohort.csv"))
    for cohort in (tsv, semi):
        assert [r.name for r in cohort.rows] == ["a", "b"] and cohort.column("grade") == {"a": "2", "b": "3"}


def _xlsx(path, rows, merge=None):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "cohort"
    for row in rows:
        sheet.append(row)
    if merge:
        sheet.merge_cells(merge)
    book.save(path)
    return path


def test_xlsx_with_numbers_dates_and_empty_rows(tmp_path):
    import datetime as dt

    path = _xlsx(tmp_path / "cohort.xlsx", [
        ["case_id", "slide_id", "label", "age", "diagnosed", "ki67"],
        ["c1", "s1", "A", 61, dt.datetime(2020, 3, 4), 0.25],
        [None, None, None, None, None, None],
        ["c2", "s2", "B", 47.0, None, None],
    ])
    cohort = read_cohort(path)
    assert [r.name for r in cohort.rows] == ["s1", "s2"] and [r.line for r in cohort.rows] == [2, 4]
    assert cohort.column("age") == {"s1": "61", "s2": "47"}
    assert cohort.column("diagnosed") == {"s1": "2020-03-04", "s2": ""}
    assert cohort.column("ki67") == {"s1": "0.25", "s2": ""}
    assert cohort.where(cohort.rows[1]) == "cohort.xlsx row 4"


def test_xlsx_merged_header_cells_are_refused(tmp_path):
    path = _xlsx(tmp_path / "merged.xlsx", [["slide", "label", "clinical", None], ["a", "x", 1, 2], ["b", "y", 3, 4]],
                 merge="C1:D1")
    with pytest.raises(CohortError, match=r"^merged.xlsx sheet 'cohort' row 1: merged header cells C1:D1; unmerge"):
        read_cohort(path)


def test_xlsx_errors_name_the_row_and_damaged_files(tmp_path):
    path = _xlsx(tmp_path / "bad.xlsx", [["slide", "label"], ["a", "x"], ["b", None]])
    with pytest.raises(CohortError, match=r"^bad.xlsx row 3: slide 'b' has no label"):
        read_cohort(path)
    broken = _csv(tmp_path, b"PK\x03\x04 not really a zip", "broken.xlsx")
    with pytest.raises(CohortError, match=r"^broken.xlsx: not a readable XLSX workbook"):
        read_cohort(broken)
