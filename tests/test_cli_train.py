"""The train / crossval / predict commands end to end on small synthetic caches and bags."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from napari_regional_mil.cli import main

FAST = ["--epochs", "2", "--min-epochs", "1", "--hidden-dim", "16", "--attention-dim", "8",
        "--min-patches", "16", "--max-patches", "48"]


def _write_labels(path, slides, classes, *, extra=None):
    lines = ["slide,label"] + [f"{s.name},{classes[s.label]}" for s in slides] + list(extra or [])
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory, labelled_synthetic):
    """Embedding caches (written by the cache's own writer) and feature bags of 10 slides."""
    from napari_regional_mil.embedding import write_slide_embeddings

    root = tmp_path_factory.mktemp("cli_cohort")
    slides, classes = labelled_synthetic(10, seed=41)
    for s in slides:
        key = hashlib.sha256(s.name.encode()).hexdigest()
        write_slide_embeddings(root / "cache", s.embeddings, key=key)
        (root / "bags").mkdir(exist_ok=True)
        np.savez(root / "bags" / f"{s.name}.npz", features=s.embeddings.features)
    _write_labels(root / "labels.csv", slides, classes)
    return root, slides, classes


def test_train_then_predict_with_caches(cohort_dir, tmp_path, capsys):
    root, slides, classes = cohort_dir
    model = tmp_path / "model.safetensors"
    assert main(["train", "--labels", str(root / "labels.csv"), "--cache", str(root / "cache"),
                 "--out", str(model), "--seed", "3", *FAST]) == 0
    out = capsys.readouterr().out
    assert "best epoch" in out and f"saved {model}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.run.json", "model.safetensors"]
    record = json.loads((tmp_path / "model.run.json").read_text())
    assert record["command"] == "train" and record["seed"] == 3 and record["options"]["epochs"] == 2
    assert record["inputs"]["cohort_table"]["sha256"] == hashlib.sha256((root / "labels.csv").read_bytes()).hexdigest()
    assert sorted(record["inputs"]["caches"]) == sorted(s.name for s in slides)

    preds = tmp_path / "preds.csv"
    names = [s.name for s in slides[:3]]
    assert main(["predict", "--model", str(model), "--cache", str(root / "cache"), *names, "--out", str(preds)]) == 0
    rows = list(csv.DictReader(preds.open()))
    assert [r["slide"] for r in rows] == names
    assert set(rows[0]) == {"slide", "predicted", "prob_excluded", "prob_inflamed"}
    for r in rows:
        assert r["predicted"] in classes
        assert float(r["prob_excluded"]) + float(r["prob_inflamed"]) == pytest.approx(1.0, abs=1e-5)
    attention = sorted((root / "cache").glob("*.attention.npz"))
    assert len(attention) == 3
    with np.load(attention[0], allow_pickle=False) as data:
        assert data["patch_attention"].sum() == pytest.approx(1.0, abs=1e-4) and "region_attention" in data


def test_crossval_writes_pooled_out_of_fold_results_and_refits(cohort_dir, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from napari_regional_mil.model.checkpoint import load_checkpoint
    from napari_regional_mil.training.evaluation import tune_threshold

    root, slides, classes = cohort_dir
    out = tmp_path / "cv"
    assert main(["crossval", "--labels", str(root / "labels.csv"), "--cache", str(root / "cache"), "--folds", "2",
                 "--model", "mean", "--out", str(out), "--refit", "--threshold", "youden", "--bootstrap", "100",
                 *FAST]) == 0
    printed = capsys.readouterr().out
    assert "AUC" in printed and "pooled out-of-fold" in printed and "95% CI" in printed
    names = {p.name for p in out.iterdir()}
    assert {"crossval.json", "oof_predictions.csv", "metrics.json", "calibration.csv", "roc.png", "roc.svg",
            "pr.png", "model.safetensors", "run.json"} <= names
    data = json.loads((out / "crossval.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["model_type"] == "mean" and data["n_folds"] == 2 and data["threshold_rule"] == "youden"
    rows = list(csv.DictReader((out / "oof_predictions.csv").open()))
    assert sorted(r["slide"] for r in rows) == sorted(s.name for s in slides)  # every slide once, out of fold
    assert {r["fold"] for r in rows} == {"1", "2"}
    y = np.array([classes.index(r["label"]) for r in rows])
    p = np.array([float(r[f"prob_{classes[1]}"]) for r in rows])
    assert data["pooled"]["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    model = load_checkpoint(out / "model.safetensors")
    assert model.training["n_train"] == len(slides)
    assert model.threshold == pytest.approx(tune_threshold("youden", np.stack([1 - p, p], 1), y), abs=1e-6)
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "crossval" and "model.safetensors" in record["outputs"]


def test_train_on_bags_without_coordinates_warns_and_runs_patch_level(cohort_dir, tmp_path, capsys):
    root, slides, _ = cohort_dir
    model = tmp_path / "bag_model.safetensors"
    assert main(["train", "--labels", str(root / "labels.csv"), "--features", str(root / "bags"),
                 "--out", str(model), *FAST]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "regional parts are switched off" in captured.err
    assert "trained abmil" in captured.out
    assert main(["predict", "--model", str(model), "--features", str(root / "bags"), slides[0].name]) == 0
    assert capsys.readouterr().out.startswith("slide,predicted,prob_excluded,prob_inflamed")


def test_bad_inputs_give_one_line_errors_and_no_model(cohort_dir, tmp_path, capsys):
    root, slides, classes = cohort_dir
    model = tmp_path / "m.safetensors"
    labels = _write_labels(tmp_path / "bad.csv", slides[:4], classes, extra=["ghost_slide,inflamed"])
    assert main(["train", "--labels", str(labels), "--cache", str(root / "cache"), "--out", str(model), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad.csv line 6: unknown slide 'ghost_slide'") and "\n" not in err
    assert not model.exists()

    pickled = tmp_path / "model.pt"
    pickled.write_bytes(b"\x80\x04K\x01.")
    assert main(["predict", "--model", str(pickled), "--cache", str(root / "cache"), slides[0].name]) == 2
    assert "model.pt" in capsys.readouterr().err

    assert main(["train", "--labels", str(root / "labels.csv"), "--cache", str(root / "cache"),
                 "--out", str(tmp_path / "no" / "m.safetensors"), *FAST]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_caches_are_listed_not_dropped(cohort_dir, tmp_path, capsys):
    root, slides, classes = cohort_dir
    (tmp_path / "orphan.tif").write_bytes(b"")  # the slide exists, its cache does not
    labels = _write_labels(tmp_path / "labels.csv", slides[:4], classes, extra=["orphan.tif,excluded"])
    assert main(["train", "--labels", str(labels), "--cache", str(root / "cache"),
                 "--out", str(tmp_path / "m.safetensors"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no embedding cache" in err and "'orphan' (line 6)" in err


def test_predict_refuses_a_model_from_another_tiling(cohort_dir, tmp_path, capsys, labelled_synthetic):
    from napari_regional_mil.embedding import write_slide_embeddings

    root, _, _ = cohort_dir
    model = tmp_path / "m.safetensors"
    assert main(["train", "--labels", str(root / "labels.csv"), "--cache", str(root / "cache"),
                 "--out", str(model), *FAST]) == 0
    other, _ = labelled_synthetic(1, seed=42, region_size=4)
    emb = other[0].embeddings
    write_slide_embeddings(tmp_path / "cache", emb, key="f" * 64)
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--cache", str(tmp_path / "cache"), emb.slide_name]) == 2
    assert "tiling region_size=5" in capsys.readouterr().err


def test_embed_missing_embeds_real_slides_first(tmp_path, capsys):
    """Slides without a cache are embedded with the built-in encoder, then trained on."""
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.synth.cohort import write_synthetic_cohort

    cohort = run_job(
        write_synthetic_cohort(tmp_path / "slides", n_slides=2, seed=2, task="presence", patch_px=32,
                               region_size=4, region_grid=(3, 3))
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,label\n" + "".join(
        f"slides/{p.name},{lay.label}\n" for p, lay in zip(cohort.slides, cohort.layouts)
    ))
    model = tmp_path / "m.safetensors"
    args = ["train", "--labels", str(labels), "--cache", str(tmp_path / "cache"), "--out", str(model),
            "--val-fraction", "0", *FAST]
    assert main(args) == 2
    assert "no embedding cache" in capsys.readouterr().err
    assert main([*args, "--embed-missing", "--patch-size", "32", "--region-size", "4"]) == 0
    assert len(list((tmp_path / "cache").glob("*.zarr"))) == 2
    from napari_regional_mil.model import load_checkpoint

    checkpoint = load_checkpoint(model)
    assert checkpoint.encoder["name"] == "builtin-he" and checkpoint.tiling == {
        "target_mpp": 0.5, "patch_size": 32, "region_size": 4}
