"""The bad-input corpus (issue 7) through the CLI, the GUI and the Python loaders.

For every generated bad file (see ``badinputs.py``): the CLI exits non-zero with exactly
one ``error:`` line on stderr naming the file and the problem (progress lines aside, no
traceback); the GUI shows an error notification naming it; the existing cache,
checkpoint and cohort caches are byte-identical afterwards (sha256 of every file); and
the malicious pickles' marker file is never created by any loader.
"""

from __future__ import annotations

import re
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

from badinputs import (
    CSV_PROBLEMS,
    MARKER,
    TILING_ARGS,
    Corpus,
    build_corpus,
    tree_hashes,
)
from napari_regional_mil.cli import main

#: A progress line of ``cli._progress.drive`` (tqdm, non-tty):
#: ``<stage>:  30%|###   | 3/10 [...]`` or ``<stage>: 3it [...]``.
PROGRESS = re.compile(r"^\s*[\w-]+: +(\d+%\|[#0-9 ]*\| \d+/\d+|\d+it) \[")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embed_slide_path, testslides_dir) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"), embed_slide_path, small_svs=testslides_dir / "small.svs")


def _protected(corpus: Corpus) -> dict[str, str]:
    return tree_hashes(corpus.cache, corpus.model, corpus.cohort_cache, corpus.root / "models")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process; an exception escaping it fails the test with its traceback."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    except BaseException:
        pytest.fail(f"{argv[0]} raised instead of exiting:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, out: str, err: str, *, names: str, problem: str) -> str:
    """Non-zero status, one ``error:`` line (besides progress lines) naming ``names`` and matching ``problem``."""
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    assert names in line, line
    assert re.search(problem, line), line
    return line


# --- (a) the CLI, (c) hashes -----------------------------------------------------------------

SLIDE_CASES = [
    # (corpus key, commands, problem)
    ("empty", ("info", "embed"), r"empty file \(0 bytes\)"),
    ("text_svs", ("info", "embed"), r"not a supported slide format"),
    ("truncated_10", ("info", "embed"), r"truncated"),
    ("truncated_50", ("info", "embed"), r"truncated"),
    ("truncated_90", ("info", "embed"), r"truncated"),
    ("unknown_compression", ("info", "embed"), r"unsupported compression"),
    ("ome_4d", ("info", "embed"), r"4-D image 3 x 48 x 64 x 3 \(axes ZYXS\).*only 2-D RGB"),
    ("tiny", ("embed",), r"smaller than one patch"),
    ("small_svs", ("embed",), r"\(16 x 16 px\) is smaller than one patch"),
    ("all_white", ("embed",), r"no tissue"),
    ("no_mpp", ("embed",), r"no microns-per-pixel \(mpp\).*--mpp"),
]


@pytest.mark.parametrize(
    ("key", "command", "problem"),
    [(key, cmd, problem) for key, cmds, problem in SLIDE_CASES for cmd in cmds],
)
def test_cli_refuses_bad_slide(corpus, capsys, key, command, problem):
    path = corpus.slides[key]
    before = _protected(corpus)
    argv = [command, path] + (
        ["--out", corpus.cache, *(TILING_ARGS if key == "all_white" else [])] if command == "embed" else []
    )
    code, out, err = run_cli(argv, capsys)
    assert_one_error_line(code, out, err, names=str(path), problem=problem)
    assert _protected(corpus) == before  # the existing cache (and everything else) untouched
    assert not list(corpus.cache.glob("*.partial")) and not list(corpus.cache.glob(".write-probe-*"))


def test_damaged_tile_opens_but_reading_it_is_a_slide_error(corpus):
    """Damaged tiles are contained: the display (overview, thumbnail) shows them flat grey, patch reads refuse them."""
    from napari_regional_mil.errors import SlideError
    from napari_regional_mil.slide import damage, open_slide

    path = corpus.slides["corrupt_tile"]
    notices: list = []
    damage.add_listener(notices.append)
    try:
        with open_slide(path) as slide:
            slide.read_region((0, 0), 0, (64, 64))  # the rest of the slide reads
            thumb = slide.thumbnail(64)  # the damaged bottom-right tile of the overview is flat grey
            assert (thumb[-2:, -2:] == damage.GREY).all() and not (thumb[:8, :8] == damage.GREY).all()
            last = slide.info.level_count - 1
            assert slide.damage.counts == {last: 1}
            _w, _h = slide.info.level_dimensions[last]
            with pytest.raises(SlideError, match=r"cannot read region"):
                slide.read_region((slide.dimensions[0] - 8, slide.dimensions[1] - 8), last, (1, 1))
    finally:
        damage.remove_listener(notices.append)
    assert [n.level for n in notices] == [last]


def test_cli_embeds_a_slide_with_a_damaged_background_tile(corpus, capsys, tmp_path):
    """The damaged tiles lie in the background: embed succeeds and says once, on one line, what was damaged."""
    path = corpus.slides["corrupt_tile"]
    code, _out, err = run_cli(["embed", path, "--out", tmp_path / "cache"], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: damaged tiles at level "), err
    assert "flat grey" in lines[0] and "Traceback" not in err


def test_info_reports_untileable_slides_without_failing(corpus, capsys):
    """``info`` describes; slides it cannot tile say why on stdout (exit 0) and need --mpp when they lack it."""
    for key, why in (("tiny", "smaller than one patch"), ("all_white", "no tissue"), ("no_mpp", "mpp")):
        code, out, err = run_cli(["info", corpus.slides[key]], capsys)
        assert code == 0 and why in out and "Traceback" not in err


def test_non_integer_downsamples_work(corpus, capsys, tmp_path):
    """A level at x2.994 (x) and x3 (y): opened as it is, and embedded at 1.5 um/px from it."""
    from napari_regional_mil.embedding import find_slide_cache, load_slide_embeddings
    from napari_regional_mil.slide import open_slide

    path = corpus.slides["odd_levels"]
    with open_slide(path) as slide:
        assert slide.info.level_dimensions == ((500, 360), (167, 120))
        assert slide.info.level_downsamples[1] == pytest.approx((500 / 167 + 3) / 2)  # not an integer
        assert slide.level_for_mpp(1.5) == 1
        assert slide.thumbnail(64).shape[:2] == (46, 64)
    code, _out, err = run_cli(["embed", path, "--out", tmp_path, "--patch-size", "16", "--target-mpp", "1.5",
                              "--region-size", "4", "--tissue-threshold", "0.1"], capsys)
    assert code == 0, err
    emb = load_slide_embeddings(find_slide_cache(tmp_path, path))
    assert emb.meta["read_level"] == 1 and np.isfinite(emb.features).all()  # 16 px patches once gave NaN
    # 16 px at 1.5 um/px = 48 level-0 px: floor(500 / 48) x floor(360 / 48) = 10 columns x 7 rows
    assert tuple(emb.meta["grid_shape"]) == (7, 10) and 30 < emb.n_patches <= 70
    assert emb.coords_px.max(axis=0).tolist() <= [500 - 48, 360 - 48]


@pytest.mark.parametrize("command", ["train", "crossval"])
@pytest.mark.parametrize("name", sorted(CSV_PROBLEMS))
def test_cli_refuses_bad_labels_csv(corpus, capsys, name, command):
    before = _protected(corpus)
    out_arg = ["--out", corpus.model] if command == "train" else ["--folds", "2"]
    argv = [command, "--labels", corpus.csvs[name], "--cache", corpus.cohort_cache, *out_arg, "--epochs", "1"]
    code, out, err = run_cli(argv, capsys)
    assert_one_error_line(code, out, err, names=name, problem=CSV_PROBLEMS[name])
    assert _protected(corpus) == before  # the model given as --out is byte-identical


CHECKPOINT_CASES = [
    ("other_encoder_weights", r"trained on encoder weights hash '0{64}', but slide 'embed_slide' was embedded with"),
    ("other_encoder_dim", r"no embedding cache in .* of resnet_model\.safetensors's encoder 'resnet50-random'"),
    ("truncated", r"corrupt or truncated checkpoint"),
]


@pytest.mark.parametrize(("key", "problem"), CHECKPOINT_CASES)
def test_cli_predict_refuses_bad_checkpoint(corpus, capsys, key, problem):
    before = _protected(corpus)
    path = corpus.checkpoints[key]
    code, out, err = run_cli(["predict", "--model", path, "--cache", corpus.cache, corpus.good_slide.stem], capsys)
    assert_one_error_line(
        code, out, err, names=path.name, problem=problem.replace("embed_slide", corpus.good_slide.stem)
    )
    assert _protected(corpus) == before
    assert not list(corpus.cache.glob("*.attention.npz"))


def test_the_corpus_world_works(corpus, capsys, tmp_path):
    """The good cache, model and CSV of the corpus work: the refusals above are about the bad files."""
    code, out, err = run_cli(["predict", "--model", corpus.model, "--cache", corpus.cache, corpus.good_slide.stem,
                              "--no-attention"], capsys)
    assert code == 0 and out.startswith("slide,predicted,prob_negative,prob_positive\n"), err
    code, out, err = run_cli(["train", "--labels", corpus.good_csv, "--cache", corpus.cohort_cache,
                              "--out", tmp_path / "m.safetensors", "--epochs", "1", "--min-epochs", "1",
                              "--hidden-dim", "8", "--attention-dim", "4", "--min-patches", "8", "--max-patches", "16"],
                             capsys)
    assert code == 0 and (tmp_path / "m.safetensors").is_file(), err


# --- malicious pickles: no loader of ours ever runs them ----------------------------------------


@pytest.fixture
def no_marker(corpus):
    marker = corpus.marker
    assert marker.name == MARKER and not marker.exists()
    yield marker
    assert not marker.exists(), "a loader unpickled a user file and ran its code"


@pytest.mark.parametrize("name", ["evil_raw.pt", "evil_zip.pt", "evil.pth", "evil.safetensors"])
def test_pickles_are_never_run_by_any_loader(corpus, capsys, no_marker, name):
    from napari_regional_mil.encoders import load_encoder
    from napari_regional_mil.encoders.files import load_state_dict_file
    from napari_regional_mil.errors import CheckpointError, EncoderError
    from napari_regional_mil.model.checkpoint import load_checkpoint

    path = corpus.pickles[name]
    before = _protected(corpus)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(path)
    with pytest.raises(EncoderError, match=re.escape(str(path))):
        load_encoder(str(path))  # TorchScript / safetensors encoder by path
    with pytest.raises(EncoderError, match="cannot read weights"):
        load_state_dict_file(path)  # safetensors, or torch.load(weights_only=True)
    assert not no_marker.exists()

    code, out, err = run_cli(["predict", "--model", path, "--cache", corpus.cache, corpus.good_slide.stem], capsys)
    assert_one_error_line(code, out, err, names=str(path), problem="not a safetensors checkpoint")
    code, out, err = run_cli(["embed", corpus.good_slide, "--out", corpus.cache, "--encoder", path], capsys)
    assert_one_error_line(code, out, err, names=str(path), problem="TorchScript|architecture|encoder")
    code, out, err = run_cli(["embed", corpus.good_slide, "--out", corpus.cache, "--encoder", "resnet50",
                              "--encoder-weights", path], capsys)
    assert_one_error_line(code, out, err, names=str(path), problem="cannot read weights")
    assert _protected(corpus) == before


# --- the real console script (a few cases: the installed entry point, a fresh process) ----------


def test_console_script_one_line_errors(corpus, no_marker):
    cases = [
        (["info", corpus.slides["truncated_50"]], corpus.slides["truncated_50"].name, "truncated"),
        (["embed", corpus.slides["all_white"], "--out", corpus.cache, *TILING_ARGS], "all_white.tif", "no tissue"),
        (["train", "--labels", corpus.csvs["non_utf8.csv"], "--cache", corpus.cohort_cache, "--out", corpus.model],
         "non_utf8.csv", "not UTF-8"),
        (["predict", "--model", corpus.pickles["evil_zip.pt"], "--cache", corpus.cache, "x"], "evil_zip.pt",
         "not a safetensors checkpoint"),
    ]
    before = _protected(corpus)
    script = Path(sys.executable).with_name("napari-regional-mil")  # the installed console script
    script = [str(script)] if script.is_file() else [sys.executable, "-m", "napari_regional_mil.cli"]
    for argv, name, problem in cases:
        proc = subprocess.run([*script, *map(str, argv)], capture_output=True, text=True, timeout=120)
        assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, names=name, problem=problem)
    assert _protected(corpus) == before


# --- (b) the GUI: a notification, no traceback --------------------------------------------------


@pytest.fixture
def errors_shown(shown_notes):
    """The error notifications' texts (``shown_notes`` from conftest, errors only)."""

    class View:
        def __call__(self):
            return [m for kind, m in shown_notes if kind == "show_error"]

    return View()


@pytest.mark.parametrize("key", ["empty", "text_svs", "truncated_50", "unknown_compression", "ome_4d", "no_mpp_ok"])
def test_slide_widget_open_notifies(make_napari_viewer, corpus, errors_shown, key, qtbot):
    from napari_regional_mil._widgets.slide_widget import SlideWidget

    viewer = make_napari_viewer()
    widget = SlideWidget(viewer)

    def opened(path) -> bool:  # the Open button reads the slide in a worker
        job = widget.open_path(path)
        qtbot.waitUntil(lambda: job.status != "running", timeout=30000)
        return job.status == "done" and widget.slide is not None

    if key == "no_mpp_ok":  # a slide without mpp opens (the mpp is asked for), tiling it is refused
        assert opened(corpus.slides["no_mpp"])
        widget.tile()
        assert len(errors_shown()) == 1 and "no_mpp.tif" in errors_shown()[0] and "mpp" in errors_shown()[0]
        return
    path = corpus.slides[key]
    assert not opened(path)
    assert len(errors_shown()) == 1
    assert path.name in errors_shown()[0] and "\n" not in errors_shown()[0]
    assert len(viewer.layers) == 0 and widget.slide is None


@pytest.mark.parametrize("key", ["truncated", "evil_raw.pt", "evil_zip.pt"])
def test_predict_widget_load_notifies_and_never_unpickles(
    make_napari_viewer, corpus, errors_shown, no_marker, qtbot, key
):
    from napari_regional_mil._widgets.predict_widget import PredictWidget

    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    path = corpus.checkpoints.get(key) or corpus.pickles[key]
    widget.set_model(str(path))
    qtbot.waitUntil(lambda: bool(errors_shown()), timeout=20000)
    assert path.name in errors_shown()[0] and widget.model is None
    assert not no_marker.exists()


@pytest.mark.parametrize("name", sorted(set(CSV_PROBLEMS) - {"unknown_slide.csv"}))
def test_cohort_widget_import_notifies(make_napari_viewer, corpus, errors_shown, name):
    from napari_regional_mil._widgets.cohort_widget import CohortWidget

    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    assert widget.import_csv(corpus.good_csv)
    rows = len(widget.table.rows)
    assert not widget.import_csv(corpus.csvs[name])
    assert len(errors_shown()) == 1 and name in errors_shown()[0]
    assert re.search(CSV_PROBLEMS[name], errors_shown()[0])
    assert len(widget.table.rows) == rows  # the table is unchanged


def test_cohort_widget_lists_unknown_slides_as_not_embedded(make_napari_viewer, corpus, errors_shown):
    """The GUI imports a CSV naming a slide that is nowhere (it can be added later); training it is refused."""
    from napari_regional_mil._widgets.cohort_widget import CohortWidget

    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    assert widget.import_csv(corpus.csvs["unknown_slide.csv"])
    assert "ghost_slide" in [r.slide for r in widget.table.rows]
    assert not errors_shown()
