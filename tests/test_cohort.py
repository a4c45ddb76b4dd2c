"""The cohort CSV: validation with messages that name the file and line."""

from __future__ import annotations

import pytest

from napari_regional_mil.errors import CohortError
from napari_regional_mil.training.cohort import read_cohort, slide_key


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
        ("slide,label,colour\na,x,red\n", "labels.csv line 1: unknown column 'colour'"),
        ("slide,patient\na,p\n", "labels.csv line 1: no 'label' column"),
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
