"""``evaluate``: a trained model scored on the test split or an external cohort, with CIs, tables and plots."""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
)

from napari_regional_mil.cli import main

FAST = ["--epochs", "3", "--min-epochs", "1", "--hidden-dim", "16", "--attention-dim", "8",
        "--min-patches", "16", "--max-patches", "48"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, labelled_synthetic):
    """Caches of 24 slides (12 patients), a labels table with splits and a clinical column, a trained model."""
    from napari_regional_mil.embedding import write_slide_embeddings

    root = tmp_path_factory.mktemp("evaluate")
    slides, classes = labelled_synthetic(24, seed=51, task="presence")
    splits = ["test" if i % 3 == 0 else "val" if i % 3 == 1 and i < 12 else "train" for i in range(24)]
    lines = ["slide,label,patient,split,age"]
    for i, s in enumerate(slides):
        write_slide_embeddings(root / "cache", s.embeddings, key=hashlib.sha256(s.name.encode()).hexdigest())
        lines.append(f"{s.name},{classes[s.label]},P{i // 2 if splits[i] != 'test' else i},{splits[i]},{40 + i}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    model = root / "model.safetensors"
    assert main(["train", "--labels", str(root / "labels.csv"), "--cache", str(root / "cache"), "--out", str(model),
                 "--seed", "1", *FAST]) == 0
    return root, slides, classes, splits, model


def _evaluate(world, out, *extra):
    root, *_, model = world
    return main(["evaluate", "--model", str(model), "--labels", str(root / "labels.csv"), "--cache",
                 str(root / "cache"), "--out", str(out), "--bootstrap", "200", *extra])


def test_scores_the_test_split_with_intervals_tables_and_plots(world, tmp_path, capsys):
    _, slides, classes, splits, model = world
    out = tmp_path / "eval"
    assert _evaluate(world, out) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "95% CI" in printed and f"wrote {out}" in printed
    names = sorted(p.name for p in out.iterdir())
    for stem in ("roc", "pr", "calibration", "confusion"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    assert {"metrics.json", "predictions.csv", "calibration.csv", "patients.csv"} <= set(names)
    assert not [n for n in tmp_path.iterdir() if n.name.startswith(".")]  # no staging folder left

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    test = {s.name for s, sp in zip(slides, splits) if sp == "test"}
    assert {r["slide"] for r in rows} == test  # only the held-out slides
    y = np.array([classes.index(r["label"]) for r in rows])
    p = np.array([float(r[f"prob_{classes[1]}"]) for r in rows])
    pred = np.array([classes.index(r["predicted"]) for r in rows])
    assert all(r["correct"] == str(r["label"] == r["predicted"]).lower() for r in rows)

    text = (out / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert metrics["split"] == "test" and metrics["n"] == len(test) and metrics["model"] == "model.safetensors"
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert metrics["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-6)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    low, high = metrics["auroc_ci95"]
    assert low <= metrics["auroc"] <= high
    from napari_regional_mil.model.checkpoint import load_checkpoint

    threshold = load_checkpoint(model).threshold
    assert metrics["threshold"] == pytest.approx(threshold)
    assert (pred == (p >= threshold).astype(int)).all()  # decided at the model's threshold
    tn, fp, fn, tp = np.array(metrics["confusion"]).ravel()
    assert metrics["sensitivity"] == pytest.approx(tp / (tp + fn)) and metrics["specificity"] == pytest.approx(
        tn / (tn + fp)
    )
    bins = [b for b in metrics["calibration"] if b["n"]]
    assert sum(b["n"] for b in metrics["calibration"]) == len(test)
    for b in bins:
        inside = (p >= b["lower"]) & ((p < b["upper"]) | (b["upper"] == 1.0))
        assert b["n"] == inside.sum() and b["observed_fraction"] == pytest.approx(y[inside].mean())
    assert metrics["patient_level"]["n"] == len(test)  # one slide per test patient here


def test_external_cohort_without_splits_scores_every_slide_and_patients_average(world, tmp_path, capsys):
    root, slides, classes, _, model = world
    table = tmp_path / "external.tsv"
    ordered = sorted(slides[:12], key=lambda s: s.label)
    assert [s.label for s in ordered] == [0] * 6 + [1] * 6
    cases = ["C0", "C0", "C1", "C1", "C2", "MIX", "MIX", "C3", "C3", "C4", "C4", "C5"]  # MIX: one slide per class
    table.write_text("case_id\tslide_id\tlabel\tsite\n" + "".join(
        f"{c}\t{s.name}\t{classes[s.label]}\tB\n" for c, s in zip(cases, ordered)))
    out = tmp_path / "ext"
    assert main(["evaluate", "--model", str(model), "--labels", str(table), "--cache", str(root / "cache"),
                 "--out", str(out), "--bootstrap", "100"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["n"] == 12
    patients = list(csv.DictReader((out / "patients.csv").open()))
    slides_rows = list(csv.DictReader((out / "predictions.csv").open()))
    for patient in patients:  # mean of the patient's slides' probabilities
        mine = [float(r[f"prob_{classes[1]}"]) for r in slides_rows if r["patient"] == patient["patient"]]
        assert float(patient[f"prob_{classes[1]}"]) == pytest.approx(np.mean(mine), abs=2e-6)
    pl = metrics["patient_level"]
    assert pl["n"] == 6 and pl["mixed_label_patients_left_out"] == 1
    assert {p["patient"] for p in patients} == {f"C{i}" for i in range(6)}


def test_bad_inputs_give_one_line_and_write_nothing(world, tmp_path, capsys):
    from openpyxl import Workbook

    root, slides, classes, _, model = world
    cases = {}
    other = tmp_path / "other.csv"
    other.write_text("slide,label\n" + "".join(f"{s.name},{['cat', 'dog'][s.label]}\n" for s in slides[:4]))
    cases["classes"] = (["--labels", other, "--split", "all"],
                        r"model.safetensors: classes .* do not match the labels of other.csv line 2: label '(cat|dog)'")
    one = tmp_path / "one.csv"
    one.write_text("slide,label,split\n" + "".join(
        f"{s.name},{classes[0]},{'test' if i < 3 else 'train'}\n{slides[i + 12].name},{classes[1]},train\n"
        for i, s in enumerate(slides[:6])))
    cases["one_class"] = (["--labels", one], r"one.csv: the test split holds one class only")
    cases["no_column"] = (["--label-column", "diagnosis"], r"labels.csv line 1: no label column 'diagnosis'")
    book = Workbook()
    sheet = book.active
    sheet.append(["slide", "label", "clinical", None])
    sheet.append([slides[0].name, classes[0], 1, 2])
    sheet.merge_cells("C1:D1")
    book.save(tmp_path / "merged.xlsx")
    cases["merged"] = (
        ["--labels", tmp_path / "merged.xlsx"],
        r"merged.xlsx sheet 'Sheet' row 1: merged header cells C1:D1",
    )
    for key, (extra, problem) in cases.items():
        out = tmp_path / f"out_{key}"
        argv = ["evaluate", "--model", str(model), "--labels", str(root / "labels.csv"), "--cache", str(root / "cache"),
                "--out", str(out), "--bootstrap", "50"]
        for flag, value in zip(extra[::2], extra[1::2]):
            if flag in argv:
                argv[argv.index(flag) + 1] = str(value)
            else:
                argv += [flag, str(value)]
        assert main(argv) == 2, key
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and re.search(problem, lines[0]), (key, err)
        assert not out.exists(), key
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_run_record_and_config_file_with_flags_overriding(world, tmp_path, capsys):
    root, slides, _, splits, model = world
    config = tmp_path / "eval.toml"
    config.write_text(f'model = "{model}"\nlabels = "{root / "labels.csv"}"\ncache = "{root / "cache"}"\n'
                      'bootstrap = 50\nseed = 3\n[evaluate]\nout = "results"\n[train]\nepochs = 99\n')
    assert main(["evaluate", "--config", str(config), "--seed", "4"]) == 0
    out = tmp_path / "results"  # relative to the config file's folder
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "evaluate" and record["seed"] == 4  # the flag beats the file
    assert record["options"]["bootstrap"] == 50 and record["config_file"]["path"] == str(config)
    assert record["inputs"]["cohort_table"]["sha256"] == hashlib.sha256((root / "labels.csv").read_bytes()).hexdigest()
    test = sorted(s.name for s, sp in zip(slides, splits) if sp == "test")
    assert sorted(record["inputs"]["caches"]) == test and len(record["inputs"]["caches_sha256"]) == 64
    assert all(len(key) == 64 for key in record["inputs"]["caches"].values())
    assert {"metrics.json", "roc.png", "run.json"} <= set(record["outputs"])
    assert record["versions"]["scikit-learn"] and record["versions"]["torch"]
    assert json.loads((out / "metrics.json").read_text())["bootstrap"]["resamples"] == 50


@pytest.mark.parametrize(("text", "problem"), [
    ("bootstrapp = 5\n", r"bad.toml: unknown key 'bootstrapp' for evaluate"),
    ("bootstrap = 'many'\n", r"bad.toml: key 'bootstrap': expected an integer, got 'many'"),
    ("bootstrap = 2.5\n", r"bad.toml: key 'bootstrap': expected an integer, got 2.5"),
    ("split = 'holdout'\n", r"bad.toml: key 'split': 'holdout' is not one of auto, test, all"),
    ("[evalute]\nseed = 1\n", r"bad.toml: unknown table \[evalute\]"),
    ("seed = \n", r"bad.toml: not valid TOML"),
])
def test_bad_config_files_name_the_file_and_key(world, tmp_path, capsys, text, problem):
    root, *_, model = world
    (tmp_path / "bad.toml").write_text(text)
    out = tmp_path / "out"
    code = main(["evaluate", "--config", str(tmp_path / "bad.toml"), "--model", str(model), "--labels",
                 str(root / "labels.csv"), "--cache", str(root / "cache"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and re.search(problem, err) and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
