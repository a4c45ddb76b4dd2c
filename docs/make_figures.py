"""Draw the figures of docs/method.md with matplotlib (no GUI needed).

Writes ``docs/images/method.png``: (a) a slide cut into a patch grid and regions of k x k
patches, with the patches one training step selects (an equal number per region, the
method's preferred embodiment) on a real synthetic layout of the ``context`` task; (b) the
first model's data flow, from the cached patch and regional embeddings to the class
probabilities and the two attention maps.

Run: ``python docs/make_figures.py``
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

from napari_regional_mil.model.config import SelectionConfig  # noqa: E402
from napari_regional_mil.model.selection import select_patches  # noqa: E402
from napari_regional_mil.synth.cohort import make_cohort_layouts  # noqa: E402

OUT = Path(__file__).resolve().parent / "images" / "method.png"
#: Tissue colours of the layout panel: stroma, tumour, lymphocytes, (unused), necrosis.
TYPE_COLOURS = {0: "#e9a3c9", 1: "#8e5ea2", 2: "#3b2c85", 4: "#f3d9b1"}
TYPE_NAMES = {0: "stroma", 1: "tumour", 2: "lymphocytes", 4: "necrosis"}


def layout_panel(ax: plt.Axes) -> None:
    """(a) patch grid, regions, and one training step's selected patches."""
    k = 6
    layout = make_cohort_layouts(2, seed=3, task="context", region_grid=(4, 5), region_size=k)[0]
    types = layout.patch_types
    rows, cols = types.shape
    colours = ["#ffffff"] + [TYPE_COLOURS.get(t, "#cccccc") for t in range(5)]
    ax.imshow(types + 1, cmap=ListedColormap(colours), vmin=0, vmax=5, interpolation="nearest")
    for x in range(cols + 1):
        ax.axvline(x - 0.5, color="white", linewidth=0.3)
    for y in range(rows + 1):
        ax.axhline(y - 0.5, color="white", linewidth=0.3)
    for x in range(0, cols + 1, k):
        ax.axvline(x - 0.5, color="#ffb000", linewidth=2)
    for y in range(0, rows + 1, k):
        ax.axhline(y - 0.5, color="#ffb000", linewidth=2)
    gy, gx = np.nonzero(types >= 0)
    region_index = (gy // k) * (cols // k) + gx // k
    _, region_index = np.unique(region_index, return_inverse=True)
    chosen = select_patches(SelectionConfig(min_patches=24, max_patches=24, patches_per_region=2), gy.size,
                            region_index=region_index, rng=np.random.default_rng(1))
    for i in chosen:
        ax.add_patch(Rectangle((gx[i] - 0.5, gy[i] - 0.5), 1, 1, fill=False, edgecolor="#00e5ff", linewidth=1.8))
    for rx, ry in layout.positive_regions:
        ax.add_patch(Rectangle((rx * k - 0.5, ry * k - 0.5), k, k, fill=False, edgecolor="#ff3b3b", linewidth=3,
                               linestyle="--", zorder=5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("(a) a slide: patches, regions of 6 x 6 patches, one training step's selection", fontsize=10)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in TYPE_COLOURS.values()]
    handles += [Rectangle((0, 0), 1, 1, fill=False, edgecolor="#ffb000", linewidth=2),
                Rectangle((0, 0), 1, 1, fill=False, edgecolor="#00e5ff", linewidth=1.8),
                Rectangle((0, 0), 1, 1, fill=False, edgecolor="#ff3b3b", linestyle="--", linewidth=2)]
    labels = list(TYPE_NAMES.values()) + ["region", "selected patch (2 per region)", "region that makes it 'inflamed'"]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=7.5, frameon=False)


def _box(ax, xy, text, colour, *, w=2.3, h=0.62, fontsize=7.8):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                facecolor=colour, edgecolor="#333333", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, wrap=True)
    return (x, y, w, h)


def _arrow(ax, a, b, *, colour="#333333"):
    (x0, y0, w0, h0), (x1, y1, w1, h1) = a, b
    # from the bottom edge of a to the top edge of b, each end shifted towards the other box
    start = (x0 + np.clip(x1 - x0, -w0 / 3, w0 / 3), y0 - h0 / 2)
    end = (x1 + np.clip(x0 - x1, -w1 / 3, w1 / 3), y1 + h1 / 2)
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=colour, linewidth=1))


def flow_panel(ax: plt.Axes) -> None:
    """(b) the first model's data flow."""
    frozen, trained, data, out = "#dfe7f3", "#ffe2b8", "#e8e8e8", "#cdebd3"
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    slide = _box(ax, (5, 9.4), "slide -> tissue -> patch grid -> regions (k x k patches)", data, w=6.2)
    second = _box(ax, (5, 8.4), "second model (frozen encoder): every tissue patch once -> cache", frozen, w=6.2)
    _arrow(ax, slide, second)
    pe = _box(ax, (2.6, 7.3), "patch embeddings", data)
    re = _box(ax, (7.4, 7.3), "regional embeddings\n(mean / max of its patches)", data)
    _arrow(ax, second, pe)
    _arrow(ax, second, re)
    sel = _box(ax, (2.6, 6.2), "select patches\n(equal number per region)", trained)
    unit = _box(ax, (2.6, 5.1), "patch unit (trainable)\n+ 1x1 conv -> FV_P", trained)
    conv_sr = _box(ax, (5.0, 5.1), "1x1 conv of the patch's\nregion -> FV_SR", trained, w=2.0)
    fuse = _box(ax, (3.8, 4.0), "concatenate FV_P | FV_SR, 1x1 conv\n-> FV_SR+P per selected patch", trained, w=3.6)
    att1 = _box(ax, (3.8, 2.9), "gated attention -> FV*_SR+P\n(patch attention)", trained, w=3.2)
    conv_r = _box(ax, (7.6, 5.1), "1x1 conv of every\nregion -> FV_R", trained, w=2.2)
    att2 = _box(ax, (7.6, 2.9), "gated attention -> FV*_R\n(region attention)", trained, w=2.6)
    _arrow(ax, pe, sel)
    _arrow(ax, sel, unit)
    _arrow(ax, re, conv_sr)
    _arrow(ax, re, conv_r)
    _arrow(ax, unit, fuse)
    _arrow(ax, conv_sr, fuse)
    _arrow(ax, fuse, att1)
    _arrow(ax, conv_r, att2)
    glob = _box(ax, (5.6, 1.85), "global embedding = FV*_R | FV*_SR+P", trained, w=4.0)
    _arrow(ax, att1, glob)
    _arrow(ax, att2, glob)
    cls = _box(ax, (3.6, 0.75), "classifier -> class probabilities", out, w=3.4)
    heat = _box(ax, (7.9, 0.75), "attention of every patch and\nregion -> the two heatmaps", out, w=3.0)
    _arrow(ax, glob, cls)
    _arrow(ax, glob, heat)
    ax.text(0.5, -0.02, "blue: frozen, computed once · orange: trained (the first model) · green: outputs",
            fontsize=7.5, color="#555555", transform=ax.transAxes, ha="center", va="top")
    ax.set_title("(b) the first model (training: selected patches; prediction: every patch)", fontsize=10)


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 6.4), gridspec_kw={"width_ratios": [1, 1.25]})
    layout_panel(a)
    flow_panel(b)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
