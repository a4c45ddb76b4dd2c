"""Shared test fixtures.

Each area keeps its fixtures in its own marked section below. Test slides from
``../shared/testslides`` are read in place, never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTSLIDES = REPO_ROOT.parent / "shared" / "testslides"


@pytest.fixture(scope="session")
def testslides_dir(tmp_path_factory) -> Path:
    """The test slides CMU-1-Small-Region.svs, small.svs, boxes.tiff and kidney-48-5.tif.

    The shared real files (``../shared/testslides``, read in place) when present;
    otherwise synthetic stand-ins with the same names and the properties the tests check
    (``tests/vendor_standins.py``: an Aperio SVS with MPP, AppMag, thumbnail, label and
    macro; a tiny Aperio SVS; a 72-dpi tiled pyramid; an uncompressed strip TIFF without
    mpp), so a clean clone runs these tests too.
    """
    if TESTSLIDES.is_dir():
        return TESTSLIDES
    from vendor_standins import write_standins

    return write_standins(tmp_path_factory.mktemp("testslides-standins"))


# --- slide I/O, tissue, tiling, synthetic slides (foundation) -----------------------------


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory):
    """Factory writing small deterministic synthetic slides, cached for the session.

    ``synthetic_slide(patch_types, *, patch_px=32, mpp=0.5, seed=0, tile=64,
    min_level_size=64) -> Path``: a tiled JPEG pyramidal BigTIFF whose level 0 is
    ``n_cols * patch_px`` x ``n_rows * patch_px`` px (see ``synth.slides``).
    """
    import numpy as np

    from napari_regional_mil.synth.slides import write_synthetic_slide

    root = tmp_path_factory.mktemp("synthetic_slides")
    cache: dict = {}

    def make(patch_types, *, patch_px: int = 32, mpp: float = 0.5, seed: int = 0, tile: int = 64,
             min_level_size: int = 64) -> Path:
        types = np.asarray(patch_types)
        key = (types.shape, types.tobytes(), patch_px, mpp, seed, tile, min_level_size)
        if key not in cache:
            path = root / f"synthetic_{len(cache)}.tiff"
            cache[key] = write_synthetic_slide(path, types, patch_px=patch_px, mpp=mpp, seed=seed,
                                               tile=tile, min_level_size=min_level_size)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def odd_patch_types():
    """A non-square, odd-sized (7 rows x 11 columns) layout of every tissue type on background."""
    import numpy as np

    types = np.full((7, 11), -1, np.int16)
    types[1:6, 2:9] = np.arange(35).reshape(5, 7) % 6
    types[3, 5] = -1  # a hole
    types[0, 10] = 2  # an island in the corner
    return types


# --- encoders, embedding pipeline, cache ----------------------------------------------------


#: 13 x 17 cells: an 11 x 14 block of three tissue types (stripes of 2 columns) with a
#: background hole, on background. With 32 px cells at 0.5 um/px the tissue is large
#: enough for tissue detection's minimum object size.
EMBED_LAYOUT_SHAPE = (13, 17)


def _embed_layout(n_types: int = 3):
    import numpy as np

    types = np.full(EMBED_LAYOUT_SHAPE, -1, np.int16)
    cols = np.arange(14) // 2 % n_types
    types[1:12, 2:16] = cols[None, :]
    types[5:7, 7:9] = -1
    return types


@pytest.fixture(scope="session")
def embed_layout():
    """Factory ``(n_types=3) -> (13, 17) int16`` patch-type layout used by the embedding tests."""
    return _embed_layout


@pytest.fixture(scope="session")
def embed_slide_path(synthetic_slide):
    """A small synthetic slide for embedding: 544 x 416 px (17 x 13 cells of 32 px), 3 tissue types."""
    return synthetic_slide(_embed_layout(3), patch_px=32, mpp=0.5, seed=11)


@pytest.fixture(scope="session")
def empty_slide_path(synthetic_slide):
    """A synthetic slide with no tissue at all (background only), 9 x 7 cells of 32 px."""
    import numpy as np

    return synthetic_slide(np.full((7, 9), -1, np.int16), patch_px=32, mpp=0.5, seed=11)


@pytest.fixture
def small_tiling():
    """Tiling parameters matching the small synthetic slides: 32 px patches at 0.5 um/px, 4 x 4 regions."""
    from napari_regional_mil.tiling import TilingParams

    return TilingParams(patch_size=32, target_mpp=0.5, region_size=4)



# --- first model, training, cohort ------------------------------------------------------------


# --- widgets: worker, slide, embed (_worker.py, _layers.py, slide_widget.py, embed_widget.py) ---


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during the test, as ``(severity, text)``."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def _record(event):
        n = getattr(event, "value", event)
        seen.append((str(n.severity), str(n.message)))

    notification_manager.notification_ready.connect(_record)
    yield seen
    notification_manager.notification_ready.disconnect(_record)


@pytest.fixture(scope="session")
def widget_slide(tmp_path_factory):
    """A tiny synthetic H&E-like pyramidal slide: 13 x 9 cells of 64 px (832 x 576 px,
    2 levels) at 0.5 um/px, tissue in an off-centre blob with a hole, background around.
    """
    import numpy as np

    from napari_regional_mil.synth.slides import write_synthetic_slide

    cells = np.full((9, 13), -1, dtype=np.int64)
    cells[1:7, 2:11] = np.arange(6 * 9).reshape(6, 9) % 3
    cells[3, 5] = -1
    path = tmp_path_factory.mktemp("widget_slide") / "tiny_slide.tif"
    write_synthetic_slide(path, cells, patch_px=64, mpp=0.5, seed=3, tile=64, min_level_size=400)
    return path


# --- widgets: predict and heatmaps (heatmap.py, export.py, predict_widget.py) -------------


def _make_attention_case(seed: int = 0, *, evidence: bool = True, regional: bool = True):
    """Hand-built embeddings + prediction on a 7 x 11 patch grid with holes (no tissue).

    Regions of 3 x 3 patches (a 3 x 4 region grid, the last row/column partial); the patch
    side is 37.5 level-0 px (non-integer on purpose) at 0.4 um/px.
    """
    import numpy as np

    from napari_regional_mil.embedding.types import SlideEmbeddings
    from napari_regional_mil.training.prediction import SlidePrediction

    n_rows, n_cols, k, s = ATTENTION_GRID
    rng = np.random.default_rng(seed)
    keep = rng.random((n_rows, n_cols)) > 0.3
    keep[0, 0] = keep[6, 10] = keep[2, 5] = True
    keep[3, 4] = False
    gy, gx = np.nonzero(keep)  # row-major order
    grid_xy = np.stack([gx, gy], axis=1).astype(np.int32)
    coords = np.stack([np.round(gx * s), np.round(gy * s)], axis=1).astype(np.int64)
    cell = grid_xy // k
    uniq, region_index = np.unique(cell[:, 1] * 100 + cell[:, 0], return_inverse=True)
    region_xy = np.stack([uniq % 100, uniq // 100], axis=1).astype(np.int32)
    n, r = len(grid_xy), len(region_xy)
    emb = SlideEmbeddings(
        slide_name="case",
        features=rng.normal(size=(n, 4)).astype(np.float32),
        coords_px=coords,
        grid_xy=grid_xy,
        region_index=region_index.astype(np.int32),
        region_xy=region_xy,
        tissue_fraction=rng.uniform(0.5, 1, n).astype(np.float32),
        meta={"patch_size_level0": s, "region_size": k, "slide_mpp": 0.4, "grid_shape": (n_rows, n_cols)},
    )
    att = rng.random(n) ** 4
    ratt = rng.random(r)
    pred = SlidePrediction(
        slide_name="case",
        class_names=("negative", "positive"),
        probabilities=np.array([0.3, 0.7]),
        threshold=0.5,
        patch_attention=att / att.sum(),
        region_attention=(ratt / ratt.sum()) if regional else None,
        region_index=emb.region_index,
        class_evidence=rng.normal(size=(n, 2)) if evidence else None,
    )
    return emb, pred


#: (n_rows, n_cols, region size k, patch side in level-0 px) of ``attention_case``.
ATTENTION_GRID = (7, 11, 3, 37.5)


@pytest.fixture
def attention_case():
    """Factory ``(seed=0, *, evidence=True, regional=True) -> (SlideEmbeddings, SlidePrediction)``.

    Its ``grid`` attribute is ``(n_rows, n_cols, k, patch_size_level0)``.
    """
    _make_attention_case.grid = ATTENTION_GRID
    return _make_attention_case


# --- first model, training, cross-validation (issue 4) ------------------------------------


def _labelled_synthetic(n_slides, *, task="context", seed=0, region_grid=(3, 4), region_size=5, dim=12, noise=0.4):
    from napari_regional_mil.synth.cohort import (
        CLASS_NAMES,
        layout_embeddings,
        make_cohort_layouts,
    )
    from napari_regional_mil.training.datasets import LabelledSlide

    classes = CLASS_NAMES[task]
    layouts = make_cohort_layouts(n_slides, seed=seed, task=task, region_grid=region_grid, region_size=region_size)
    slides = [
        LabelledSlide(
            layout_embeddings(lay, dim=dim, noise=noise, seed=seed * 1000 + i), classes.index(lay.label), lay.name
        )
        for i, lay in enumerate(layouts)
    ]
    return slides, classes


@pytest.fixture(scope="session")
def labelled_synthetic():
    """Factory ``(n_slides, *, task="context", seed=0, region_grid=(3, 4), region_size=5, dim=12,
    noise=0.4) -> (list[LabelledSlide], class_names)``: synthetic patch embeddings of a
    synthetic cohort's layouts (no images, no encoder; non-square grids)."""
    return _labelled_synthetic


# --- pretraining the second model, several scales (issue 6: pretrain/, embedding/context.py) ---


@pytest.fixture(scope="session")
def pretrain_cohort(tmp_path_factory):
    """A tiny labelled synthetic cohort (task "presence": absent/present lymphocytes).

    4 slides of 12 x 16 cells of 32 px at 0.5 um/px (384 x 512 px, non-square), regions
    of 4 x 4 cells; ``labels.csv`` names 2 slides per class. Returns the
    :class:`~napari_regional_mil.synth.cohort.SyntheticCohort`.
    """
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.synth.cohort import write_synthetic_cohort

    out = tmp_path_factory.mktemp("pretrain_cohort")
    return run_job(
        write_synthetic_cohort(out, n_slides=4, seed=5, task="presence", patch_px=32, region_size=4, region_grid=(3, 4))
    )


@pytest.fixture
def tiny_autoencoder_config():
    """Autoencoder settings small enough for a 2-core CI: 32 px patches at 0.5 um/px, 2 stages."""
    from napari_regional_mil.pretrain import AutoencoderConfig

    return AutoencoderConfig(
        patch_size=32, mpp=0.5, max_patches=64, min_patches=16, epochs=3, batch_size=16, widths=(8, 16),
        embedding_dim=16, learning_rate=3e-3, preview_patches=3,
    )


@pytest.fixture
def tiny_mil_config():
    """Attention-MIL pretraining settings for a 2-core CI: 32 px patches, bags of 8, 2 epochs."""
    from napari_regional_mil.pretrain import MilPretrainConfig

    return MilPretrainConfig(
        patch_size=32, mpp=0.5, patches_per_slide=24, bag_size=8, epochs=2, widths=(8, 16), embedding_dim=16,
        attention_dim=8,
    )


# --- GUI workflow: cohort, train, demo (cohort_widget.py, train_widget.py, demo.py; issue 5) ---


#: Tiling of ``gui_cohort``'s slides: 32 px patches at 0.5 um/px, regions of 4 x 4 patches.
GUI_COHORT_TILING = {"patch_size": 32, "target_mpp": 0.5, "region_size": 4}


@pytest.fixture(scope="session")
def gui_cohort(tmp_path_factory):
    """A synthetic ``context`` cohort of 6 tiny slides (3 x 4 regions of 4 x 4 patches of 32 px,
    non-square) with ``labels.csv``, embedded once with ``builtin-he`` into ``cache``.

    Returns a namespace: ``dir``, ``labels_csv``, ``slides``, ``class_names``, ``cache``,
    ``tiling`` (:class:`TilingParams`).
    """
    from types import SimpleNamespace

    from napari_regional_mil.embedding.pipeline import embed_slide
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.synth.cohort import write_synthetic_cohort
    from napari_regional_mil.tiling import TilingParams

    root = tmp_path_factory.mktemp("gui_cohort")
    cohort = run_job(write_synthetic_cohort(root / "slides", n_slides=6, seed=7, task="context", patch_px=32,
                                            region_size=4, region_grid=(3, 4)))
    tiling = TilingParams(**GUI_COHORT_TILING)
    cache = root / "cache"
    for path in cohort.slides:
        run_job(embed_slide(path, cache_dir=cache, tiling_params=tiling, batch_size=256))
    return SimpleNamespace(dir=cohort.out_dir, labels_csv=cohort.labels_csv, slides=cohort.slides,
                           class_names=cohort.class_names, cache=cache, tiling=tiling)


@pytest.fixture
def shown_notes(monkeypatch):
    """Every napari notification shown through ``notifications.show_*``, as ``(kind, message)``."""
    from napari.utils import notifications

    shown: list[tuple[str, str]] = []
    for kind in ("show_info", "show_warning", "show_error"):
        monkeypatch.setattr(notifications, kind, lambda msg, kind=kind: shown.append((kind, str(msg))))
    return shown


# --- clinical variables (issue 15: model/clinical*.py, synth/clinical.py) ------------------


def _clinical_synthetic(n_slides, *, seed=0, region_grid=(3, 4), region_size=5, dim=12, noise=0.4, offset=0):
    from napari_regional_mil.clinical import ClinicalRecord
    from napari_regional_mil.synth.clinical import (
        CLASS_NAMES,
        clinical_label,
        clinical_values,
    )
    from napari_regional_mil.synth.cohort import layout_embeddings, make_cohort_layouts
    from napari_regional_mil.training.datasets import LabelledSlide

    layouts = make_cohort_layouts(
        n_slides, seed=seed, task="context", region_grid=region_grid, region_size=region_size
    )
    values = clinical_values([lay.label for lay in layouts], seed=seed)
    slides = []
    for i, (lay, v) in enumerate(zip(layouts, values)):
        record = ClinicalRecord(v, f"labels.csv line {i + 2 + offset}", "labels.csv")
        emb = layout_embeddings(lay, dim=dim, noise=noise, seed=seed * 1000 + i)
        label = CLASS_NAMES.index(clinical_label(lay.label, v))
        slides.append(LabelledSlide(emb, label, lay.name, clinical=record))
    return slides, CLASS_NAMES, [lay.label for lay in layouts]


@pytest.fixture(scope="session")
def clinical_synthetic():
    """Factory ``(n_slides, *, seed=0, ...) -> (slides, class_names, context_labels)``: the
    synthetic context task with clinical columns grade, age, sex (``synth.clinical``): the
    label is ``positive`` iff the slide is inflamed and its grade is G3."""
    return _clinical_synthetic
