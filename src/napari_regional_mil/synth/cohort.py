"""Synthetic cohorts with known answers, for tests and the regional-vs-ABMIL benchmark.

A slide is a grid of regions of k x k patches; each tissue region has one context
texture (``stroma``, ``tumour`` or ``necrosis``), a few corner regions are background.
A motif (``lymphocytes``) occupies compact clusters of patches inside one or two regions.

Task ``"context"`` (classes ``excluded`` / ``inflamed``): the label depends on *where*
the motif lies. ``inflamed`` slides have the motif inside tumour regions (tumour-
infiltrating lymphocytes); ``excluded`` slides have the same number of motif patches
inside stroma regions only, the same number of regions of each context, and as many
stroma patches scattered inside tumour regions as the motif displaced, so both slides
of a pair hold exactly the same multiset of patch types. A model that sees patches
without their regions (any permutation-invariant patch-level MIL) cannot tell the
classes apart; one that sees each patch with its region can.

Task ``"presence"`` (classes ``absent`` / ``present``): positive iff motif patches exist.

Ground truth per slide: the region-grid cells ``(x, y)`` whose motif makes the slide
positive (``positive_regions``; empty for negative slides).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..atomic import write_text_atomic
from ..embedding.types import SlideEmbeddings
from ..jobs import Progress
from .clinical import CLASS_NAMES as CLINICAL_CLASS_NAMES
from .clinical import COLUMNS as CLINICAL_COLUMNS
from .clinical import RULE, clinical_label, clinical_values
from .slides import write_synthetic_slide

__all__ = [
    "CLASS_NAMES",
    "CONTEXT_A",
    "CONTEXT_B",
    "FILLER",
    "MOTIF",
    "TASKS",
    "SlideLayout",
    "SyntheticCohort",
    "layout_embeddings",
    "make_cohort_layouts",
    "make_layout",
    "write_synthetic_cohort",
]

TASKS = ("context", "presence")
#: Class names per task (sorted, so the positive class is index 1).
CLASS_NAMES = {"context": ("excluded", "inflamed"), "presence": ("absent", "present")}
#: Tissue-type ids (indices into ``synth.textures.TISSUE_TYPES``).
CONTEXT_A, CONTEXT_B, MOTIF, FILLER = 0, 1, 2, 4  # stroma, tumour, lymphocytes, necrosis
BACKGROUND = -1


@dataclass(frozen=True, eq=False)
class SlideLayout:
    """The patch types of one synthetic slide and its answer.

    Parameters
    ----------
    name
        Slide name.
    patch_types
        ``(n_rows, n_cols)`` int16 tissue-type ids of the patch grid, -1 = background.
    label
        Class name.
    region_size
        k (regions are k x k patches).
    positive_regions
        ``(P, 2)`` region-grid cells ``(x, y)`` whose motif makes the slide positive.
    motif_regions
        ``(M, 2)`` region-grid cells holding motif patches.
    """

    name: str
    patch_types: np.ndarray
    label: str
    region_size: int
    positive_regions: np.ndarray
    motif_regions: np.ndarray

    def truth(self, *, task: str) -> dict[str, Any]:
        """The ground-truth record written as ``<slide>.truth.json``."""
        return {
            "slide": self.name,
            "task": task,
            "label": self.label,
            "region_size": self.region_size,
            "grid_shape": list(self.patch_types.shape),
            "positive_regions": self.positive_regions.tolist(),
            "motif_regions": self.motif_regions.tolist(),
            "type_counts": {int(t): int(c) for t, c in zip(*np.unique(self.patch_types, return_counts=True))},
        }


def _cluster(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` cells of a k x k region grown as one compact cluster from a random seed."""
    cells = {(int(rng.integers(k)), int(rng.integers(k)))}
    while len(cells) < size:
        frontier = sorted(
            {(x + dx, y + dy) for x, y in cells for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))} - cells
        )
        frontier = [(x, y) for x, y in frontier if 0 <= x < k and 0 <= y < k]
        cells.add(frontier[int(rng.integers(len(frontier)))])
    return np.array(sorted(cells), dtype=np.int64)


def _place(types: np.ndarray, region: tuple[int, int], k: int, cells: np.ndarray, value: int) -> None:
    rx, ry = region
    types[ry * k + cells[:, 1], rx * k + cells[:, 0]] = value


def make_layout(
    name: str,
    *,
    positive: bool,
    task: Literal["context", "presence"],
    counts: dict[str, int],
    region_grid: tuple[int, int],
    region_size: int,
    rng: np.random.Generator,
) -> SlideLayout:
    """One slide's layout for given region counts (shared by the two slides of a pair).

    Parameters
    ----------
    counts
        ``background``, ``a``, ``b`` (regions of each context; the rest are filler),
        ``motif_regions`` and ``motif_per_region`` (patches).
    """
    rows, cols = region_grid
    k = region_size
    n_regions = rows * cols
    xy = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2)
    corner_order = np.argsort(
        np.minimum(xy[:, 0], cols - 1 - xy[:, 0]) + np.minimum(xy[:, 1], rows - 1 - xy[:, 1]) + rng.random(n_regions)
    )
    background = corner_order[: counts["background"]]
    tissue = rng.permutation(np.setdiff1d(np.arange(n_regions), background))
    region_type = np.full(n_regions, FILLER)
    region_type[background] = BACKGROUND
    region_type[tissue[: counts["a"]]] = CONTEXT_A
    region_type[tissue[counts["a"] : counts["a"] + counts["b"]]] = CONTEXT_B
    types = np.kron(region_type.reshape(rows, cols), np.ones((k, k), dtype=np.int64)).astype(np.int16)
    label_names = CLASS_NAMES[task]
    n_motif, per_region = counts["motif_regions"], counts["motif_per_region"]
    if task == "context":
        host_type = CONTEXT_B if positive else CONTEXT_A
    else:
        host_type = None
    if task == "presence" and not positive:
        hosts = np.zeros(0, dtype=np.int64)
    elif host_type is None:
        hosts = rng.choice(tissue, size=n_motif, replace=False)
    else:
        hosts = rng.choice(np.flatnonzero(region_type == host_type), size=n_motif, replace=False)
    for r in hosts:
        _place(types, tuple(xy[r]), k, _cluster(k, per_region, rng), MOTIF)
    if task == "context" and not positive:
        # the motif displaced stroma here but tumour in the positive slide: move as many
        # stroma patches into tumour regions, scattered, so the type counts match exactly
        tumour_cells = np.argwhere(types == CONTEXT_B)
        moved = tumour_cells[rng.choice(len(tumour_cells), size=n_motif * per_region, replace=False)]
        types[moved[:, 0], moved[:, 1]] = CONTEXT_A
    motif_xy = xy[np.sort(hosts)] if len(hosts) else np.zeros((0, 2), dtype=np.int64)
    positive_xy = motif_xy if positive else np.zeros((0, 2), dtype=np.int64)
    return SlideLayout(name, types, label_names[int(positive)], k, positive_xy, motif_xy)


def make_cohort_layouts(
    n_slides: int,
    *,
    seed: int = 0,
    task: Literal["context", "presence"] = "context",
    region_grid: tuple[int, int] = (4, 5),
    region_size: int = 8,
    prefix: str = "synth",
) -> list[SlideLayout]:
    """Layouts of a cohort: pairs of one positive and one negative slide with equal counts.

    Parameters
    ----------
    n_slides
        Number of slides (an odd last slide is positive).
    seed
        Seeds everything (same seed, same cohort).
    task
        ``"context"`` or ``"presence"``.
    region_grid
        ``(rows, cols)`` of regions per slide (>= 3 x 3).
    region_size
        k: regions are k x k patches (k >= 4, so motif clusters fit).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    rows, cols = region_grid
    if rows < 3 or cols < 3 or region_size < 4:
        raise ValueError("need a region grid of at least 3 x 3 and regions of at least 4 x 4 patches")
    rng = np.random.default_rng(seed)
    n_regions = rows * cols
    out = []
    for pair in range((n_slides + 1) // 2):
        n_bg = int(rng.integers(1, max(2, n_regions // 8) + 1))
        n_tissue = n_regions - n_bg
        counts = {
            "background": n_bg,
            "a": int(rng.integers(max(2, n_tissue // 4), n_tissue // 3 + 2)),
            "b": int(rng.integers(max(2, n_tissue // 4), n_tissue // 3 + 2)),
            "motif_regions": int(rng.integers(1, 3)),
            "motif_per_region": int(rng.integers(region_size**2 // 5, region_size**2 // 3 + 1)),
        }
        for positive in (True, False):
            index = 2 * pair + (0 if positive else 1)
            if index < n_slides:
                name = f"{prefix}_{index:03d}"
                out.append(
                    make_layout(
                        name,
                        positive=positive,
                        task=task,
                        counts=counts,
                        region_grid=region_grid,
                        region_size=region_size,
                        rng=rng,
                    )
                )
    return out


def layout_embeddings(
    layout: SlideLayout,
    *,
    dim: int = 16,
    noise: float = 0.5,
    seed: int = 0,
    prototype_seed: int = 12345,
) -> SlideEmbeddings:
    """Synthetic patch embeddings of a layout (no image, no encoder): fast model tests.

    Each tissue type has a fixed random prototype (``prototype_seed``, shared by a cohort);
    a patch's embedding is its type's prototype plus Gaussian noise. Grid, regions and
    mean/max regional embeddings follow the architecture's conventions.
    """
    prototypes = np.random.default_rng(prototype_seed).standard_normal((8, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(layout.patch_types >= 0)  # row-major order
    types = layout.patch_types[rows, cols].astype(np.int64)
    features = prototypes[types] + noise * rng.standard_normal((types.size, dim)).astype(np.float32)
    grid_xy = np.stack([cols, rows], axis=1).astype(np.int32)
    k = layout.region_size
    n_region_cols = -(-layout.patch_types.shape[1] // k)
    region_id = (rows // k) * n_region_cols + cols // k
    present, region_index = np.unique(region_id, return_inverse=True)
    region_xy = np.stack([present % n_region_cols, present // n_region_cols], axis=1).astype(np.int32)
    n_regions = present.size
    mean = np.zeros((n_regions, dim), np.float32)
    np.add.at(mean, region_index, features)
    mean /= np.bincount(region_index, minlength=n_regions)[:, None]
    maxed = np.full((n_regions, dim), -np.inf, np.float32)
    np.maximum.at(maxed, region_index, features)
    meta = {
        "encoder": "synthetic-prototypes",
        "encoder_hash": f"prototypes-{prototype_seed}",
        "embedding_dim": dim,
        "target_mpp": 0.5,
        "patch_size": 32,
        "region_size": k,
    }
    return SlideEmbeddings(
        slide_name=layout.name,
        features=features.astype(np.float32),
        coords_px=(grid_xy.astype(np.int64) * 32),
        grid_xy=grid_xy,
        region_index=region_index.astype(np.int32),
        region_xy=region_xy,
        regional_embeddings={"mean": mean, "max": maxed},
        tissue_fraction=np.ones(types.size, np.float32),
        meta=meta,
    )


@dataclass(frozen=True)
class SyntheticCohort:
    """What :func:`write_synthetic_cohort` wrote.

    Parameters
    ----------
    out_dir
        The folder.
    labels_csv
        ``labels.csv`` (``slide,label``).
    slides
        The slide files, in cohort order.
    truths
        The ``<slide>.truth.json`` files.
    class_names
        The task's class names.
    layouts
        The layouts (patch types and answers).
    """

    out_dir: Path
    labels_csv: Path
    slides: tuple[Path, ...]
    truths: tuple[Path, ...]
    class_names: tuple[str, ...]
    layouts: tuple[SlideLayout, ...] = field(repr=False, default=())


def write_synthetic_cohort(
    out_dir: str | os.PathLike,
    *,
    n_slides: int,
    seed: int = 0,
    task: Literal["context", "presence"] = "context",
    patch_px: int = 64,
    region_size: int = 8,
    region_grid: tuple[int, int] = (4, 5),
    mpp: float = 0.5,
    clinical: bool = False,
) -> Generator[Progress, None, SyntheticCohort]:
    """Write a synthetic cohort of pyramidal tiled TIFF slides (a job).

    Writes ``<out_dir>/<slide>.tif`` (mpp in the TIFF resolution tags),
    ``<out_dir>/<slide>.truth.json`` and ``<out_dir>/labels.csv``. Embed them with
    ``patch_size=patch_px`` at ``target_mpp=mpp`` and ``region_size=region_size`` so the
    patch grid matches the layout.

    ``clinical=True`` (task ``"context"`` only) adds the columns ``grade``, ``age`` and
    ``sex`` to ``labels.csv`` and labels each slide by :data:`.clinical.RULE` (classes
    ``negative``/``positive``): see :mod:`.clinical`. The truth file keeps the slide's
    context label (``context_label``) and its clinical values.
    """
    if clinical and task != "context":
        raise ValueError("clinical columns are defined for the context task only")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layouts = make_cohort_layouts(n_slides, seed=seed, task=task, region_grid=region_grid, region_size=region_size)
    values = clinical_values([lay.label for lay in layouts], seed=seed) if clinical else [{} for _ in layouts]
    labels = [clinical_label(lay.label, v) if clinical else lay.label for lay, v in zip(layouts, values)]
    slides, truths = [], []
    tile = max(16, min(256, (patch_px * region_size) // 16 * 16))
    for i, layout in enumerate(layouts):
        yield Progress("synth", i, len(layouts), f"writing {layout.name}")
        slides.append(
            write_synthetic_slide(
                out / f"{layout.name}.tif", layout.patch_types, patch_px=patch_px, mpp=mpp, seed=seed, tile=tile
            )
        )
        truth = out / f"{layout.name}.truth.json"
        record = {**layout.truth(task=task), "patch_px": patch_px, "mpp": mpp}
        if clinical:
            record.update(context_label=layout.label, label=labels[i], clinical=values[i], rule=RULE)
        write_text_atomic(truth, json.dumps(record, indent=1))
        truths.append(truth)
    columns = list(CLINICAL_COLUMNS) if clinical else []
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [["slide", "label", *columns]]
        + [
            [layout.name, label] + [v[c] for c in columns]
            for layout, label, v in zip(layouts, labels, values)
        ]
    )
    labels_csv = out / "labels.csv"
    write_text_atomic(labels_csv, buffer.getvalue())
    yield Progress("synth", len(layouts), len(layouts), f"wrote {len(layouts)} slides to {out}")
    class_names = CLINICAL_CLASS_NAMES if clinical else CLASS_NAMES[task]
    return SyntheticCohort(out, labels_csv, tuple(slides), tuple(truths), class_names, tuple(layouts))
