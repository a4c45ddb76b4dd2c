"""``synth --task context --clinical``: clinical columns and the rule that needs slide AND grade."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from napari_regional_mil.cli import main
from napari_regional_mil.jobs import run_job
from napari_regional_mil.synth.clinical import (
    CLASS_NAMES,
    clinical_label,
    clinical_values,
)
from napari_regional_mil.synth.cohort import make_cohort_layouts, write_synthetic_cohort


def test_values_half_g3_per_context_and_distractors_independent():
    context = [lay.label for lay in make_cohort_layouts(200, seed=3)]
    values = clinical_values(context, seed=3)
    assert values == clinical_values(context, seed=3) and values != clinical_values(context, seed=4)
    for name in ("inflamed", "excluded"):
        grades = Counter(v["grade"] for v, c in zip(values, context) if c == name)
        assert grades["G3"] == 50 and grades["G1"] == grades["G2"] == 25
    ages = np.array([float(v["age"]) for v in values if v["age"]])
    assert 0 < sum(not v["age"] for v in values) < 20  # a few missing ages
    assert 55 < ages.mean() < 73 and ages.min() >= 30 and ages.max() <= 95
    labels = np.array([clinical_label(c, v) == "positive" for c, v in zip(context, values)])
    assert labels.sum() == 50  # inflamed AND G3
    # distractors: no relation to the label
    has_age = np.array([bool(v["age"]) for v in values])
    assert abs(np.corrcoef(ages, labels[has_age])[0, 1]) < 0.2
    female = np.array([v["sex"] == "F" for v in values], dtype=float)
    assert 0.3 < female.mean() < 0.7 and abs(np.corrcoef(female, labels)[0, 1]) < 0.2


@pytest.mark.parametrize(
    ("context", "grade", "label"),
    [
        ("inflamed", "G3", "positive"),
        ("inflamed", "G2", "negative"),
        ("excluded", "G3", "negative"),
        ("excluded", "G1", "negative"),
    ],
)
def test_the_rule(context, grade, label):
    assert clinical_label(context, {"grade": grade, "age": "50", "sex": "F"}) == label


def test_written_cohort_has_the_clinical_columns_and_truth(tmp_path):
    cohort = run_job(
        write_synthetic_cohort(
            tmp_path,
            n_slides=8,
            seed=2,
            task="context",
            patch_px=16,
            region_size=4,
            region_grid=(3, 4),
            clinical=True,
        )
    )
    assert cohort.class_names == CLASS_NAMES
    with cohort.labels_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["slide", "label", "grade", "age", "sex"]
    for row, truth_path in zip(rows, cohort.truths):
        truth = json.loads(truth_path.read_text())
        assert truth["clinical"] == {"grade": row["grade"], "age": row["age"], "sex": row["sex"]}
        assert row["label"] == truth["label"] == clinical_label(truth["context_label"], truth["clinical"])
        assert truth["context_label"] in ("inflamed", "excluded") and "G3" in truth["rule"]
    with pytest.raises(ValueError, match="context task only"):
        run_job(write_synthetic_cohort(tmp_path / "p", n_slides=2, task="presence", clinical=True))


def test_synth_command_with_clinical(tmp_path, capsys):
    out = tmp_path / "cohort"
    status = main(
        [
            "synth",
            str(out),
            "--slides",
            "4",
            "--patch-px",
            "16",
            "--region-size",
            "4",
            "--grid",
            "3x4",
            "--clinical",
        ]
    )
    assert status == 0
    assert "with clinical columns grade, age, sex; classes negative, positive" in capsys.readouterr().out
    assert (out / "labels.csv").read_text().splitlines()[0] == "slide,label,grade,age,sex"
    assert main(["synth", str(tmp_path / "p"), "--slides", "2", "--task", "presence", "--clinical"]) == 2
