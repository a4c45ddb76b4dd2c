"""Synthetic cohorts: equal patch-type multisets (context task), ground truth, files, CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from napari_regional_mil.cli import main
from napari_regional_mil.jobs import run_job
from napari_regional_mil.synth.cohort import (
    BACKGROUND,
    CONTEXT_A,
    CONTEXT_B,
    MOTIF,
    layout_embeddings,
    make_cohort_layouts,
    write_synthetic_cohort,
)


def _counts(layout):
    return Counter(layout.patch_types.ravel().tolist())


def _region_types(layout, xy):
    k = layout.region_size
    x, y = xy
    return layout.patch_types[y * k : (y + 1) * k, x * k : (x + 1) * k]


def test_context_task_classes_have_exactly_the_same_patch_types():
    layouts = make_cohort_layouts(20, seed=4, task="context", region_grid=(4, 5), region_size=6)
    for pos, neg in zip(layouts[::2], layouts[1::2]):
        assert (pos.label, neg.label) == ("inflamed", "excluded")
        assert _counts(pos) == _counts(neg)  # same multiset, slide by slide
    by_class = {c: sum((_counts(x) for x in layouts if x.label == c), Counter()) for c in ("inflamed", "excluded")}
    assert by_class["inflamed"] == by_class["excluded"]
    assert by_class["inflamed"][MOTIF] > 0


def test_context_task_motif_lies_in_tumour_for_positives_and_stroma_for_negatives():
    for layout in make_cohort_layouts(12, seed=5, task="context", region_grid=(3, 5), region_size=5):
        assert len(layout.motif_regions) >= 1
        for xy in layout.motif_regions:
            region = _region_types(layout, xy)
            host = Counter(region[region != MOTIF].ravel().tolist()).most_common(1)[0][0]
            assert host == (CONTEXT_B if layout.label == "inflamed" else CONTEXT_A)
        if layout.label == "inflamed":
            assert np.array_equal(layout.positive_regions, layout.motif_regions)
        else:
            assert layout.positive_regions.shape == (0, 2)
        types = set(np.unique(layout.patch_types).tolist())
        assert BACKGROUND in types and len(types - {BACKGROUND, MOTIF}) >= 3


def test_presence_task_positive_iff_motif():
    for layout in make_cohort_layouts(10, seed=6, task="presence", region_grid=(3, 4), region_size=4):
        has_motif = bool((layout.patch_types == MOTIF).any())
        assert has_motif == (layout.label == "present") == (len(layout.positive_regions) > 0)


def test_layouts_are_deterministic_by_seed():
    a = make_cohort_layouts(4, seed=9, region_grid=(3, 4), region_size=4)
    b = make_cohort_layouts(4, seed=9, region_grid=(3, 4), region_size=4)
    c = make_cohort_layouts(4, seed=10, region_grid=(3, 4), region_size=4)
    assert all(np.array_equal(x.patch_types, y.patch_types) for x, y in zip(a, b))
    assert not all(np.array_equal(x.patch_types, y.patch_types) for x, y in zip(a, c))


def test_layout_embeddings_follow_the_conventions():
    layout = make_cohort_layouts(1, seed=1, region_grid=(3, 4), region_size=5)[0]
    emb = layout_embeddings(layout, dim=6)
    rows, cols = layout.patch_types.shape  # 15 x 20, non-square
    assert emb.grid_xy[:, 0].max() < cols and emb.grid_xy[:, 1].max() < rows
    assert np.array_equal(emb.region_xy[emb.region_index], emb.grid_xy // 5)
    order = emb.grid_xy[:, 1] * cols + emb.grid_xy[:, 0]
    assert np.all(np.diff(order) > 0)  # row-major
    np.testing.assert_allclose(
        emb.regional_embeddings["mean"][0], emb.features[emb.region_index == 0].mean(0), rtol=1e-5
    )


def test_written_cohort_has_slides_labels_and_truth(tmp_path):
    import tifffile

    cohort = run_job(
        write_synthetic_cohort(
            tmp_path, n_slides=2, seed=2, task="context", patch_px=16, region_size=4, region_grid=(3, 4)
        )
    )
    assert cohort.labels_csv.read_text().splitlines() == ["slide,label", "synth_000,inflamed", "synth_001,excluded"]
    with tifffile.TiffFile(cohort.slides[0]) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.imagewidth, page.imagelength) == (4 * 4 * 16, 3 * 4 * 16)
        assert page.tags["XResolution"].value[0] > 0
    truth = json.loads(cohort.truths[0].read_text())
    assert truth["label"] == "inflamed" and truth["positive_regions"] and truth["patch_px"] == 16
    assert not list(tmp_path.glob("*.tmp"))


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "cohort"
    status = main(["synth", str(out), "--slides", "3", "--seed", "2", "--task", "presence", "--patch-px", "16",
                   "--region-size", "4", "--grid", "3x4"])
    assert status == 0
    assert len(list(out.glob("*.tif"))) == 3 and len(list(out.glob("*.truth.json"))) == 3
    assert "embed with --patch-size 16" in capsys.readouterr().out
    assert main(["synth", str(out), "--slides", "1"]) == 2
    with pytest.raises(SystemExit):
        main(["synth", str(out), "--grid", "four"])
