"""Clinical variables: encoding fitted on training values, missing values, bad values, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from napari_regional_mil.clinical import (
    UNKNOWN,
    ClinicalEncoding,
    ClinicalRecord,
    fit_clinical_encoding,
    is_missing,
    parse_clinical_columns,
)
from napari_regional_mil.errors import ClinicalError
from napari_regional_mil.model.config import ModelConfig


def _records(rows, source="labels.csv"):
    return [ClinicalRecord(dict(r), f"{source} line {i + 2}", source) for i, r in enumerate(rows)]


TRAIN = _records(
    [
        {"age": "50", "sex": "F", "grade": "G1", "note": "x"},
        {"age": "70", "sex": "M", "grade": "G3", "note": "y"},
        {"age": "", "sex": "f", "grade": "G3", "note": "z"},
        {"age": "60", "sex": "NA", "grade": "G2", "note": "w"},
    ]
)


def test_numeric_is_standardised_with_training_statistics_and_missing_is_explicit():
    enc = fit_clinical_encoding(TRAIN, parse_clinical_columns("age"))
    (age,) = enc.variables
    assert age.kind == "numeric" and age.mean == pytest.approx(60.0)
    assert age.scale == pytest.approx(np.std([50, 70, 60]))
    assert age.n_missing == 1 and age.missing_indicator
    assert enc.columns == ("age", "age:missing")
    x = enc.encode_all(TRAIN)
    assert x[:, 0] == pytest.approx([-10 / age.scale, 10 / age.scale, 0.0, 0.0])
    assert x[:, 1].tolist() == [0, 0, 1, 0]  # the missing one says so; its value is the training mean
    # the statistics are the training slides' only: a new slide's value does not move them
    new = ClinicalRecord({"age": "90"}, "other.csv line 2")
    assert enc.encode(new)[0] == pytest.approx(30 / age.scale)


def test_categorical_is_one_hot_with_an_unknown_level_and_a_reference():
    enc = fit_clinical_encoding(TRAIN, parse_clinical_columns("sex,grade"))
    sex, grade = enc.variables
    assert sex.kind == grade.kind == "categorical"
    assert sex.levels == ("F", "M") and sex.reference == "F"  # "f" is the same level as "F"
    assert grade.levels == ("G1", "G2", "G3") and grade.reference == "G3"  # most frequent
    assert enc.columns == (
        "sex=F",
        "sex=M",
        f"sex={UNKNOWN}",
        "grade=G1",
        "grade=G2",
        "grade=G3",
        f"grade={UNKNOWN}",
    )
    x = enc.encode_all(TRAIN)
    assert x[:, :3].tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]  # NA -> unknown
    assert x[:, 3:].sum(axis=1).tolist() == [1, 1, 1, 1]
    assert enc.with_reference(x[0], "grade")[3:].tolist() == [0, 0, 1, 0]
    assert enc.with_reference(x[0], "grade")[:3].tolist() == [1, 0, 0]  # the other variable untouched


def test_kind_is_inferred_and_can_be_forced():
    rows = _records([{"stage": "1"}, {"stage": "2"}, {"stage": "4"}])
    assert fit_clinical_encoding(rows, parse_clinical_columns("stage")).variables[0].kind == "numeric"
    forced = fit_clinical_encoding(rows, parse_clinical_columns("stage:categorical")).variables[0]
    assert forced.kind == "categorical" and forced.levels == ("1", "2", "4")


def test_refuse_policy_has_no_indicators_and_refuses_missing_values():
    spec = parse_clinical_columns("grade,sex", missing="refuse")
    complete = [r for r in TRAIN if not is_missing(r.values["sex"])]
    enc = fit_clinical_encoding(complete, spec)
    assert not any(v.missing_indicator for v in enc.variables)
    with pytest.raises(ClinicalError, match=r"^labels.csv line 5: column 'sex' has no value"):
        fit_clinical_encoding(TRAIN, spec)
    with pytest.raises(
        ClinicalError, match=r"^new.csv line 3: column 'grade' has no value.*no missing indicator"
    ):
        enc.encode(ClinicalRecord({"grade": "", "sex": "M"}, "new.csv line 3"))


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        (TRAIN, "bmi", r"^labels.csv header: no clinical column 'bmi' \(columns: age, sex, grade, note\)$"),
        (
            _records([{"age": "50"}, {"age": "61"}, {"age": "old"}]),
            "age",
            r"^labels.csv line 4: column 'age': 'old' is not a number \(the column is numeric\)$",
        ),
        (
            _records([{"age": ""}, {"age": "NA"}]),
            "age",
            r"^labels.csv: column 'age' has no value in any training slide$",
        ),
    ],
    ids=["no-such-column", "text-in-numeric", "all-missing"],
)
def test_bad_training_values_name_the_column_and_the_row(rows, columns, message):
    with pytest.raises(ClinicalError, match=message):
        fit_clinical_encoding(rows, parse_clinical_columns(columns))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"age": "55", "sex": "F", "grade": "G4"},
            r"^new.csv line 7: column 'grade': category 'G4' was never seen",
        ),
        (
            {"age": "fifty", "sex": "F", "grade": "G1"},
            r"^new.csv line 7: column 'age': 'fifty' is not a number",
        ),
        ({"age": "55", "grade": "G1"}, r"^new.csv header: no column 'sex' \(the model needs it"),
    ],
    ids=["unseen-category", "text-in-numeric", "column-missing"],
)
def test_bad_prediction_values_name_the_column_and_the_row(values, message):
    enc = fit_clinical_encoding(TRAIN, parse_clinical_columns("age,sex,grade"))
    with pytest.raises(ClinicalError, match=message):
        enc.encode(ClinicalRecord(values, "new.csv line 7", "new.csv"))


def test_column_names_match_without_regard_to_case():
    enc = fit_clinical_encoding(TRAIN, parse_clinical_columns("AGE,Grade"))
    assert enc.names == ("age", "grade")  # as the table spells them
    x = enc.encode(ClinicalRecord({"Age": "60", "GRADE": "g2"}, "t.csv line 2"))
    assert x.tolist() == [0, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("text", ["", "age,,sex", "age:ordinal", "age,AGE"])
def test_bad_column_lists_are_refused(text):
    with pytest.raises(ValueError):
        parse_clinical_columns(text)


def test_encoding_round_trips_through_the_model_config():
    enc = fit_clinical_encoding(TRAIN, parse_clinical_columns("age,sex,grade"))
    assert ClinicalEncoding.from_dict(enc.to_dict()) == enc
    cfg = ModelConfig(input_dim=5, clinical=enc)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.clinical == enc
    assert ModelConfig.from_dict(ModelConfig(input_dim=5).to_dict()).clinical is None
    with pytest.raises(ValueError):
        ClinicalEncoding.from_dict(
            {"variables": [{"name": "g", "kind": "categorical", "levels": ["a"], "reference": "b"}]}
        )
    assert enc.describe()[0].startswith("age: numeric (training mean 60")
    assert enc.describe()[2].endswith("reference G3); may be missing")


def test_levels_of_the_whole_table_let_a_fold_meet_a_level_its_training_slides_lack():
    spec = parse_clinical_columns("grade")
    held_out = ClinicalRecord({"grade": "G4"}, "labels.csv line 9")
    with pytest.raises(ClinicalError, match="category 'G4' was never seen"):
        fit_clinical_encoding(TRAIN, spec).encode(held_out)
    knowing = spec.knowing([*TRAIN, held_out, ClinicalRecord({"grade": "g4"}, "labels.csv line 10")])
    enc = fit_clinical_encoding(TRAIN, knowing)
    (grade,) = enc.variables
    assert grade.levels == ("G1", "G2", "G3", "G4") and grade.reference == "G3"  # reference: training only
    assert enc.encode(held_out).tolist() == [0, 0, 0, 1, 0]
    # statistics still come from the training slides only
    age = fit_clinical_encoding(
        TRAIN, parse_clinical_columns("age").knowing([ClinicalRecord({"age": "900"})])
    )
    assert age.variables[0].mean == pytest.approx(60.0)
