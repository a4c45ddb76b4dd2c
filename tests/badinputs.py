"""Factories of the bad-input corpus (issue 7): every file is generated, never downloaded.

Each ``make_*`` function writes one file (or a few) under a folder it is given and returns
the path; :func:`build_corpus` writes all of them and returns a :class:`Corpus`. The
tests that use the corpus are ``test_bad_input_corpus.py`` (CLI, GUI, hashes of existing
files), ``test_fuzz.py`` (mutations of :func:`make_valid_tiff`, run by ``slide_fuzzer.py``) and
``test_interruption.py``.

Contents
--------
Slides: a 0-byte file, a text file named ``.svs``, a tiled JPEG pyramid truncated at 10 %,
50 % and 90 % of its bytes, one with a damaged JPEG tile, a TIFF with an unknown compression, a 4-D OME-TIFF (a
z-stack), a slide smaller than one patch (the test slides' ``small.svs``, real and read in
place or its stand-in, and a synthetic one), a slide with no tissue (all white), a slide without mpp, a
slide whose levels have non-integer downsamples (valid: must work).
Labels CSVs: an unknown slide, a missing label, duplicate rows, one class only, a
non-UTF-8 byte.
Checkpoints: one from another encoder (same name and dimension, other weights), one of
another dimension, a truncated one, and ``.pt`` files whose pickle would run code
(:data:`MARKER`: their ``__reduce__`` creates a marker file; no loader of ours may ever
create it).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Tiling used by the corpus's good slide and caches: 32 px patches at 0.5 um/px, regions of 4 x 4.
TILING_ARGS = ["--patch-size", "32", "--target-mpp", "0.5", "--region-size", "4"]


# --- hashes -------------------------------------------------------------------------------


def tree_hashes(*roots: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``roots`` (files or folders)."""
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# --- slides -------------------------------------------------------------------------------


def _he_pixels(width: int, height: int, *, seed: int = 0, tissue: bool = True) -> np.ndarray:
    """H&E-like RGB uint8 pixels (synthetic textures), tissue everywhere or nowhere."""
    from napari_regional_mil.synth.slides import render_patch_types

    cell = 32
    rows, cols = -(-height // cell), -(-width // cell)
    types = (
        (np.arange(rows * cols).reshape(rows, cols) % 3).astype(np.int16)
        if tissue
        else np.full((rows, cols), -1, np.int16)
    )
    return render_patch_types(types, (0, 0, width, height), patch_px=cell, mpp=0.5, seed=seed)


def make_valid_tiff(folder: Path, name: str = "valid.tiff") -> Path:
    """A small valid tiled JPEG pyramid (416 x 288 px, 0.5 um/px, 3 levels): the base of truncations and fuzzing."""
    from napari_regional_mil.synth.slides import write_synthetic_slide

    types = np.full((9, 13), -1, np.int16)
    types[1:8, 2:11] = np.arange(63).reshape(7, 9) % 3
    return write_synthetic_slide(Path(folder) / name, types, patch_px=32, mpp=0.5, seed=5, tile=64, min_level_size=64)


def make_empty(folder: Path) -> Path:
    """A 0-byte ``.svs``."""
    path = Path(folder) / "empty.svs"
    path.write_bytes(b"")
    return path


def make_text_svs(folder: Path) -> Path:
    """A text file named ``.svs``."""
    path = Path(folder) / "notes.svs"
    path.write_text("patient 12, H&E, scanned 2024-01-02\nthis is not a slide\n")
    return path


def make_truncated(folder: Path, fraction: float, *, base: Path | None = None) -> Path:
    """``base`` (default: :func:`make_valid_tiff`) cut after ``fraction`` of its bytes."""
    base = base or make_valid_tiff(folder, "truncation_base.tiff")
    data = base.read_bytes()
    path = Path(folder) / f"truncated_{round(fraction * 100)}.tiff"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_corrupt_tile(folder: Path) -> Path:
    """A valid pyramid whose last JPEG tile of every level is damaged (found by fuzzing).

    Opening checks one tile, so the file opens; reading the overview (thumbnail, tissue
    detection) or the bottom-right corner meets a damaged tile.
    """
    import tifffile

    path = make_valid_tiff(folder, "corrupt_tile.tiff")
    with tifffile.TiffFile(path) as tif:
        offsets = [int(level.keyframe.dataoffsets[-1]) for level in tif.series[0].levels]
    with open(path, "r+b") as fh:
        for offset in offsets:
            fh.seek(offset)
            fh.write(b"\xd9\xff")  # the tile no longer starts with a JPEG SOI marker
    return path


def make_unknown_compression(folder: Path) -> Path:
    """A tiled RGB TIFF whose Compression tag is 65000 (no codec knows it)."""
    import tifffile

    path = Path(folder) / "unknown_compression.tif"
    tifffile.imwrite(path, _he_pixels(96, 64), tile=(16, 16), photometric="rgb", metadata=None,
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(65000)
    return path


def make_ome_4d(folder: Path) -> Path:
    """A 4-D OME-TIFF: a z-stack of 3 RGB planes (ZYXS)."""
    import tifffile

    path = Path(folder) / "zstack.ome.tif"
    planes = np.stack([_he_pixels(64, 48, seed=i) for i in range(3)])
    tifffile.imwrite(path, planes, ome=True, photometric="rgb", metadata={"axes": "ZYXS"}, tile=(16, 16))
    return path


def make_tiny(folder: Path) -> Path:
    """A valid synthetic slide (40 x 24 px at 0.5 um/px) smaller than one default patch (256 px)."""
    import tifffile

    path = Path(folder) / "tiny.tif"
    tifffile.imwrite(path, _he_pixels(40, 24), tile=(16, 16), photometric="rgb", compression="jpeg",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=None)
    return path


def make_all_white(folder: Path) -> Path:
    """A valid 480 x 352 px slide at 0.5 um/px, all white (no tissue)."""
    import tifffile

    path = Path(folder) / "all_white.tif"
    rng = np.random.default_rng(0)
    white = np.clip(246 + rng.normal(0, 2, (352, 480, 3)), 0, 255).astype(np.uint8)
    tifffile.imwrite(path, white, tile=(64, 64), photometric="rgb", compression="jpeg",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=None)
    return path


def make_no_mpp(folder: Path) -> Path:
    """A valid tiled H&E-like slide (320 x 224 px) without any resolution information."""
    import tifffile

    path = Path(folder) / "no_mpp.tif"
    tifffile.imwrite(path, _he_pixels(320, 224), tile=(32, 32), photometric="rgb", compression="jpeg", metadata=None)
    return path


def make_non_integer_downsamples(folder: Path) -> Path:
    """A valid pyramid whose levels are 500 x 360 and 167 x 120 px (downsample 2.994 x 3), at 0.5 um/px."""
    import tifffile
    from PIL import Image

    path = Path(folder) / "odd_levels.tif"
    level0 = _he_pixels(500, 360, seed=2)
    sizes = [(167, 120)]
    common = {"tile": (32, 32), "photometric": "rgb", "compression": "jpeg", "metadata": None,
              "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(level0, subifds=len(sizes), resolution=(2e4, 2e4), **common)
        for w, h in sizes:
            img = np.asarray(Image.fromarray(level0).resize((w, h), Image.Resampling.BOX))
            tif.write(img, subfiletype=1, resolution=(2e4 * w / 500, 2e4 * h / 360), **common)
    return path


# --- labels CSVs --------------------------------------------------------------------------

#: What each bad CSV must be refused for (a regex of the message).
CSV_PROBLEMS = {
    "unknown_slide.csv": r"line 5: unknown slide 'ghost_slide'",
    "missing_label.csv": r"line 3: slide '\w+' has no label",
    "duplicate_rows.csv": r"line 5: slide '\w+' is already listed on line 2",
    "one_class.csv": r"only one class",
    "non_utf8.csv": r"line 4: not UTF-8 \(byte 0xe9\)",
}


def make_bad_csvs(folder: Path, slides: list[str], labels: list[str]) -> dict[str, Path]:
    """The bad labels CSVs for a cohort of ``slides`` (at least 4) with ``labels``; keys of :data:`CSV_PROBLEMS`."""
    folder = Path(folder)
    rows = [f"{s},{lab}" for s, lab in zip(slides, labels)]
    texts = {
        "unknown_slide.csv": ["slide,label", *rows[:3], "ghost_slide," + labels[0], *rows[3:]],
        "missing_label.csv": ["slide,label", rows[0], f"{slides[1]},", *rows[2:]],
        "duplicate_rows.csv": ["slide,label", *rows[:3], rows[0], *rows[3:]],
        "one_class.csv": ["slide,label", *[f"{s},{labels[0]}" for s in slides]],
    }
    out = {}
    for name, lines in texts.items():
        out[name] = folder / name
        out[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = ("slide,label\n" + "\n".join(rows[:2]) + "\n").encode() + f"{slides[2]},".encode() + b"caf\xe9\n"
    out["non_utf8.csv"] = folder / "non_utf8.csv"
    out["non_utf8.csv"].write_bytes(raw + ("\n".join(rows[3:]) + "\n").encode())
    return out


# --- checkpoints and pickles -----------------------------------------------------------------

#: File name of the marker a malicious pickle would create.
MARKER = "PWNED_by_pickle"


class _Evil:
    """Unpickling this creates ``self.marker`` (``open(path, "w")``): code run by a loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_malicious_pickles(folder: Path) -> tuple[dict[str, Path], Path]:
    """``.pt`` files whose unpickling would create ``folder/MARKER``; returns ``(files, marker)``.

    ``evil_raw.pt`` is a plain pickle (old ``torch.save`` style), ``evil_zip.pt`` a zip
    archive in the layout of ``torch.save`` (``archive/data.pkl``), ``evil.safetensors``
    a pickle renamed ``.safetensors``, ``evil.pth`` the zip again under another suffix.
    Writing them never unpickles anything.
    """
    folder = Path(folder)
    marker = folder / MARKER
    payload = pickle.dumps({"state_dict": _Evil(marker)}, protocol=2)
    files = {"evil_raw.pt": folder / "evil_raw.pt", "evil_zip.pt": folder / "evil_zip.pt",
             "evil.safetensors": folder / "evil.safetensors", "evil.pth": folder / "evil.pth"}
    files["evil_raw.pt"].write_bytes(payload)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
    files["evil_zip.pt"].write_bytes(buf.getvalue())
    files["evil.pth"].write_bytes(buf.getvalue())
    files["evil.safetensors"].write_bytes(payload)
    assert not marker.exists()
    return files, marker


def save_model_for(cache_store: Path, path: Path, *, encoder_changes: dict | None = None, seed: int = 0) -> Path:
    """A small untrained first-model checkpoint for the embeddings in ``cache_store`` (their encoder and tiling).

    ``encoder_changes`` overrides fields of the recorded encoder (``name``, ``weights_hash``,
    ``dim``: a different ``dim`` also changes the model's input dimension).
    """
    import torch

    from napari_regional_mil.embedding.store import load_slide_embeddings
    from napari_regional_mil.model.checkpoint import (
        Checkpoint,
        provenance,
        save_checkpoint,
    )
    from napari_regional_mil.model.config import ModelConfig
    from napari_regional_mil.model.first_model import FirstModel

    emb = load_slide_embeddings(cache_store)
    encoder, tiling = provenance(emb.meta)
    encoder.update(encoder_changes or {})
    torch.manual_seed(seed)
    model = FirstModel(ModelConfig(input_dim=int(encoder["dim"]), n_classes=2, hidden_dim=16, attention_dim=8)).eval()
    return save_checkpoint(Checkpoint(model, ("negative", "positive"), encoder=encoder, tiling=tiling), path)


def make_truncated_checkpoint(good: Path, folder: Path) -> Path:
    """``good`` cut in half."""
    data = Path(good).read_bytes()
    path = Path(folder) / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return path


# --- cohort caches ------------------------------------------------------------------------


def write_cohort_caches(cache_dir: Path, n_slides: int = 6, *, seed: int = 3) -> tuple[list[str], list[str]]:
    """Small synthetic embedding caches of a labelled cohort (no images); returns ``(slide names, labels)``."""
    from napari_regional_mil.embedding import write_slide_embeddings
    from napari_regional_mil.synth.cohort import layout_embeddings, make_cohort_layouts

    layouts = make_cohort_layouts(n_slides, seed=seed, task="context", region_grid=(3, 4), region_size=4)
    names, labels = [], []
    for i, lay in enumerate(layouts):
        emb = layout_embeddings(lay, dim=12, noise=0.4, seed=seed * 100 + i)
        write_slide_embeddings(cache_dir, emb, key=hashlib.sha256(lay.name.encode()).hexdigest())
        names.append(lay.name)
        labels.append(lay.label)
    return names, labels


# --- the whole corpus -----------------------------------------------------------------------


@dataclass
class Corpus:
    """Paths of the generated corpus (see :func:`build_corpus`)."""

    root: Path
    slides: dict[str, Path] = field(default_factory=dict)
    csvs: dict[str, Path] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    pickles: dict[str, Path] = field(default_factory=dict)
    marker: Path | None = None
    good_slide: Path | None = None
    cache: Path | None = None  # a complete builtin-he cache of good_slide
    model: Path | None = None  # a valid checkpoint for ``cache``
    cohort_cache: Path | None = None  # caches of the cohort of the CSVs
    good_csv: Path | None = None


def build_slides(folder: Path, *, small_svs: Path | None = None) -> dict[str, Path]:
    """Every bad (or odd but valid) slide, by a short name (``small_svs``: a 16 x 16 px Aperio slide)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = make_valid_tiff(folder, "truncation_base.tiff")
    slides = {
        "empty": make_empty(folder),
        "text_svs": make_text_svs(folder),
        **{f"truncated_{p}": make_truncated(folder, p / 100, base=base) for p in (10, 50, 90)},
        "unknown_compression": make_unknown_compression(folder),
        "corrupt_tile": make_corrupt_tile(folder),
        "ome_4d": make_ome_4d(folder),
        "tiny": make_tiny(folder),
        "all_white": make_all_white(folder),
        "no_mpp": make_no_mpp(folder),
        "odd_levels": make_non_integer_downsamples(folder),
    }
    if small_svs is not None:
        slides["small_svs"] = small_svs  # read in place, never copied
    base.unlink()
    return slides


def build_corpus(root: Path, good_slide: Path, *, small_svs: Path | None = None) -> Corpus:
    """Write the whole corpus under ``root``; ``good_slide`` is embedded into ``root/cache``.

    ``small_svs``: the test slides' ``small.svs`` (real or stand-in, see ``testslides_dir``).
    """
    from napari_regional_mil.embedding.pipeline import embed_slide
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.tiling import TilingParams

    root = Path(root)
    corpus = Corpus(root=root, good_slide=Path(good_slide))
    corpus.slides = build_slides(root / "slides", small_svs=small_svs)
    result = run_job(
        embed_slide(
            good_slide,
            cache_dir=root / "cache",
            tiling_params=TilingParams(patch_size=32, region_size=4),
            batch_size=128,
        )
    )
    corpus.cache = root / "cache"
    models = root / "models"
    models.mkdir()
    corpus.model = save_model_for(result.cache_path, models / "model.safetensors")
    corpus.checkpoints = {
        "other_encoder_weights": save_model_for(
            result.cache_path, models / "other_weights.safetensors", encoder_changes={"weights_hash": "0" * 64}
        ),
        "other_encoder_dim": save_model_for(
            result.cache_path,
            models / "resnet_model.safetensors",
            encoder_changes={"name": "resnet50-random", "weights_hash": "1" * 64, "dim": 1024},
        ),
        "truncated": make_truncated_checkpoint(corpus.model, models),
    }
    (root / "pickles").mkdir()
    corpus.pickles, corpus.marker = make_malicious_pickles(root / "pickles")
    corpus.cohort_cache = root / "cohort_cache"
    names, labels = write_cohort_caches(corpus.cohort_cache)
    csv_dir = root / "csv"
    csv_dir.mkdir()
    corpus.csvs = make_bad_csvs(csv_dir, names, labels)
    corpus.good_csv = csv_dir / "good.csv"
    corpus.good_csv.write_text("slide,label\n" + "".join(f"{s},{lab}\n" for s, lab in zip(names, labels)))
    return corpus
