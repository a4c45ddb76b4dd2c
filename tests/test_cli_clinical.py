"""Clinical variables on the command line: train/crossval/evaluate --clinical, predict --clinical-table."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from napari_regional_mil.cli import main

FAST = [
    "--epochs",
    "2",
    "--min-epochs",
    "1",
    "--hidden-dim",
    "16",
    "--attention-dim",
    "8",
    "--min-patches",
    "16",
    "--max-patches",
    "48",
]


def _write_table(path, header, rows):
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, clinical_synthetic):
    """Caches of 16 synthetic slides and labels.csv with grade, age (some missing) and sex."""
    from napari_regional_mil.embedding import write_slide_embeddings

    root = tmp_path_factory.mktemp("cli_clinical")
    slides, classes, _ = clinical_synthetic(16, seed=51)
    for s in slides:
        write_slide_embeddings(root / "cache", s.embeddings, key=hashlib.sha256(s.name.encode()).hexdigest())
    rows = [
        [
            s.name,
            classes[s.label],
            s.clinical.values["grade"],
            s.clinical.values["age"],
            s.clinical.values["sex"],
        ]
        for s in slides
    ]
    rows[2][3] = ""  # an age missing in training: the model gets a missing indicator
    labels = _write_table(root / "labels.csv", ["slide", "label", "grade", "age", "sex"], rows)
    return root, labels, slides, classes, rows


@pytest.fixture(scope="module")
def fused_model(cohort, tmp_path_factory):
    root, labels, _, _, _ = cohort
    model = tmp_path_factory.mktemp("fused") / "fused.safetensors"
    assert (
        main(
            [
                "train",
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--out",
                str(model),
                "--clinical",
                "grade,age,sex",
                "--selection",
                "uniform",
                *FAST,
            ]
        )
        == 0
    )
    return model


def test_train_stores_the_encoding_and_predict_writes_contributions(cohort, fused_model, tmp_path, capsys):
    from napari_regional_mil.model.checkpoint import load_checkpoint

    root, _, slides, _classes, rows = cohort
    checkpoint = load_checkpoint(fused_model)
    assert checkpoint.config.clinical.names == ("grade", "age", "sex")
    assert checkpoint.config.selection.strategy == "uniform"
    assert checkpoint.config.clinical.variable("age").n_missing == 1
    table = _write_table(
        tmp_path / "clinical.csv",
        ["slide_id", "sex", "age", "grade"],
        [[r[0] + ".tif", r[4], r[3], r[2]] for r in rows[:3]],
    )
    preds = tmp_path / "preds.csv"
    names = [s.name for s in slides[:3]]
    assert (
        main(
            [
                "predict",
                "--model",
                str(fused_model),
                "--cache",
                str(root / "cache"),
                *names,
                "--clinical-table",
                str(table),
                "--out",
                str(preds),
                "--no-attention",
            ]
        )
        == 0
    )
    out = list(csv.DictReader(preds.open()))
    assert list(out[0]) == [
        "slide",
        "predicted",
        "prob_negative",
        "prob_positive",
        "explained",
        "contribution_slide",
        "contribution_grade",
        "contribution_age",
        "contribution_sex",
    ]
    assert [r["slide"] for r in out] == names and {r["explained"] for r in out} == {"positive"}
    from napari_regional_mil.clinical import ClinicalRecord
    from napari_regional_mil.embedding import load_slide_embeddings
    from napari_regional_mil.training.cohort import CohortRow
    from napari_regional_mil.training.datasets import find_cache
    from napari_regional_mil.training.predict import predict_slide

    emb = load_slide_embeddings(find_cache(root / "cache", CohortRow(1, names[1], "", names[1])))
    record = ClinicalRecord({"grade": rows[1][2], "age": rows[1][3], "sex": rows[1][4]})
    expected = predict_slide(checkpoint, emb, clinical=record)
    assert float(out[1]["prob_positive"]) == pytest.approx(expected.probabilities[1], abs=1e-5)
    assert float(out[1]["contribution_grade"]) == pytest.approx(
        expected.contributions.variables["grade"], abs=1e-5
    )
    assert float(out[1]["contribution_slide"]) == pytest.approx(expected.contributions.slide, abs=1e-5)


def test_crossval_with_clinical_and_ablation(cohort, tmp_path, capsys):
    root, labels, _, _, _ = cohort
    out = tmp_path / "ablation"
    assert (
        main(
            [
                "crossval",
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--folds",
                "2",
                "--clinical",
                "grade,age,sex",
                "--ablation",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "fused" in text and "slide_only" in text and "clinical_only" in text
    assert sorted(p.name for p in out.iterdir()) == ["ablation.json", "ablation_predictions.csv", "run.json"]
    record = json.loads((out / "ablation.json").read_text())
    assert set(record["arms"]) == {"fused", "slide_only", "clinical_only"}
    rows = list(csv.DictReader((out / "ablation_predictions.csv").open()))
    assert len(rows) == 16 and "clinical_only_p_positive" in rows[0]
    assert json.loads((out / "run.json").read_text())["options"]["clinical"] == "grade,age,sex"
    plain = tmp_path / "cv"
    assert (
        main(
            [
                "crossval",
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--folds",
                "2",
                "--clinical",
                "grade",
                "--out",
                str(plain),
                *FAST,
            ]
        )
        == 0
    )
    assert json.loads((plain / "crossval.json").read_text())["n_folds"] == 2


def test_evaluate_reads_the_values_from_the_table(cohort, fused_model, tmp_path, capsys):
    root, labels, _, _, _ = cohort
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(fused_model),
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--out",
                str(out),
                "--bootstrap",
                "20",
                "--clinical",
                "sex,grade,age",
            ]
        )
        == 0
    )
    predicted = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(predicted) == 16  # no split column: every slide, each with its own clinical values
    bad = tmp_path / "eval2"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(fused_model),
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--out",
                str(bad),
                "--clinical",
                "grade",
            ]
        )
        == 2
    )
    assert "takes clinical variables grade, age, sex, but --clinical names grade" in capsys.readouterr().err
    assert not bad.exists()


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_input_is_one_line_naming_column_and_row_and_nothing_is_written(
    cohort, fused_model, tmp_path, capsys
):
    root, labels, slides, _classes, rows = cohort
    model = tmp_path / "m.safetensors"
    # a clinical column that does not exist
    assert (
        main(
            [
                "train",
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--out",
                str(model),
                "--clinical",
                "grade,bmi",
                *FAST,
            ]
        )
        == 2
    )
    assert "labels.csv header: no clinical column 'bmi' (columns: grade, age, sex)" in _one_error_line(capsys)
    # a numeric column with text in it
    texty = [list(r) for r in rows]
    texty[5][3] = "old"
    bad_labels = _write_table(tmp_path / "bad.csv", ["slide", "label", "grade", "age", "sex"], texty)
    assert (
        main(
            [
                "train",
                "--labels",
                str(bad_labels),
                "--cache",
                str(root / "cache"),
                "--out",
                str(model),
                "--clinical",
                "age",
                *FAST,
            ]
        )
        == 2
    )
    assert "bad.csv line 7: column 'age': 'old' is not a number" in _one_error_line(capsys)
    assert (
        main(
            [
                "crossval",
                "--labels",
                str(bad_labels),
                "--cache",
                str(root / "cache"),
                "--folds",
                "2",
                "--clinical",
                "age",
                "--out",
                str(tmp_path / "cv"),
                *FAST,
            ]
        )
        == 2
    )
    assert "bad.csv line 7: column 'age'" in _one_error_line(capsys)
    assert not model.exists() and not (tmp_path / "cv").exists()
    # a category at prediction time that training never saw
    unseen = _write_table(
        tmp_path / "unseen.csv",
        ["slide", "grade", "age", "sex"],
        [[slides[0].name, "G1", "50", "F"], [slides[1].name, "G4", "60", "M"]],
    )
    preds = tmp_path / "preds.csv"
    before = sorted((root / "cache").glob("*.attention.npz"))
    assert (
        main(
            [
                "predict",
                "--model",
                str(fused_model),
                "--cache",
                str(root / "cache"),
                slides[0].name,
                slides[1].name,
                "--clinical-table",
                str(unseen),
                "--out",
                str(preds),
            ]
        )
        == 2
    )
    assert "unseen.csv line 3: column 'grade': category 'G4' was never seen in training" in _one_error_line(
        capsys
    )
    # a checkpoint with clinical inputs used without them
    assert (
        main(
            [
                "predict",
                "--model",
                str(fused_model),
                "--cache",
                str(root / "cache"),
                slides[0].name,
                "--out",
                str(preds),
            ]
        )
        == 2
    )
    line = _one_error_line(capsys)
    assert "fused.safetensors: the model takes clinical variables (grade, age, sex)" in line
    # a slide the clinical table does not list
    assert (
        main(
            [
                "predict",
                "--model",
                str(fused_model),
                "--cache",
                str(root / "cache"),
                slides[3].name,
                "--clinical-table",
                str(unseen),
                "--out",
                str(preds),
            ]
        )
        == 2
    )
    assert f"unseen.csv: no row for slide '{slides[3].name}'" in _one_error_line(capsys)
    assert not preds.exists() and sorted((root / "cache").glob("*.attention.npz")) == before
    # ablation without clinical columns
    assert (
        main(["crossval", "--labels", str(labels), "--cache", str(root / "cache"), "--ablation", *FAST]) == 2
    )
    assert "--ablation" in _one_error_line(capsys)
    assert (
        main(
            [
                "train",
                "--labels",
                str(labels),
                "--cache",
                str(root / "cache"),
                "--out",
                str(model),
                "--clinical",
                "grade:ordinal",
                *FAST,
            ]
        )
        == 2
    )
    assert "unknown kind 'ordinal'" in _one_error_line(capsys)
