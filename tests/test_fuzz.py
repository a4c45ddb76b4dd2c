"""Property-based fuzzing (issue 7) of slide opening and of cohort-CSV parsing, bounded for CI.

Slides: bytes of a small valid tiled JPEG pyramid and of ``small.svs`` (an Aperio file: real, or its stand-in)
are mutated (byte flips, overwritten runs, truncation), biased towards the TIFF header and
the IFDs where a flip changes structure rather than pixels. Each mutated file is opened,
two regions and a thumbnail are read, in a separate worker process (a hang or a crash
is reported, not suffered): every case ends in success or a ``RegionalMilError`` with a
one-line message naming the file, never another exception type.

Cohort CSVs: generated text and bytes go through ``read_cohort``: success or a
``CohortError`` naming the file, nothing else.

``derandomize=True``: the same cases on every run, so CI is reproducible.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from badinputs import make_valid_tiff
from slide_fuzzer import SlideFuzzer

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _structure_offsets(path) -> list[int]:
    """Byte offsets of the TIFF header and of every IFD (tag entries and the values they point to)."""
    import tifffile

    offsets = list(range(16))
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        for page in tif.pages:
            pages.extend(getattr(page, "pages", None) or [])
        for page in pages:
            start = getattr(page, "offset", None)
            if start is None:
                continue
            offsets.extend(range(start, start + 20 * 25))
            for tag in page.tags.values():
                if tag.valueoffset and tag.valueoffset != tag.offset:
                    offsets.extend(range(tag.valueoffset, tag.valueoffset + 16))
    return sorted(set(offsets))


@pytest.fixture(scope="module")
def bases(tmp_path_factory, testslides_dir):
    """``{suffix: (bytes, structure offsets)}`` of the valid files that are mutated."""
    root = tmp_path_factory.mktemp("fuzz_bases")
    valid = make_valid_tiff(root)
    small_svs = testslides_dir / "small.svs"
    return {".tiff": (valid.read_bytes(), _structure_offsets(valid)),
            ".svs": (small_svs.read_bytes(), _structure_offsets(small_svs))}


@pytest.fixture(scope="module")
def fuzzer():
    worker = SlideFuzzer(timeout_s=30)
    yield worker
    worker.close()


@st.composite
def mutated(draw, bases):
    suffix = draw(st.sampled_from(sorted(bases)))
    data, hot = bases[suffix]
    data = bytearray(data)
    position = st.one_of(st.sampled_from(hot), st.integers(0, len(data) - 1))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "byte", "truncate"]))
        if not data:
            break
        at = min(draw(position), len(data) - 1)
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif kind == "overwrite":
            run = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(run)] = run
        else:
            data = data[: draw(st.integers(0, len(data) - 1))]
    return suffix, bytes(data)


def test_mutated_slides_open_or_fail_with_a_slide_error(bases, fuzzer, tmp_path_factory):
    from napari_regional_mil import errors

    folder = tmp_path_factory.mktemp("fuzzed")
    own = set(errors.__all__)
    seen = {"ok": 0, "error": 0}

    @FUZZ
    @given(case=mutated(bases))
    def check(case):
        suffix, data = case
        path = folder / f"fuzzed{suffix}"
        path.write_bytes(data)
        outcome, kind, message = fuzzer.check(str(path))
        assert outcome in ("ok", "error"), f"{outcome} {kind}: {message}"
        seen[outcome] += 1
        if outcome == "error":
            assert kind in own, kind
            assert message and "\n" not in message
            assert str(path) in message, message

    check()
    assert seen["error"] > 0  # the fuzzer really did break files (the check can fail)


def test_known_valid_files_still_open_in_the_worker(bases, fuzzer, tmp_path):
    for suffix, (data, _) in bases.items():
        path = tmp_path / f"valid{suffix}"
        path.write_bytes(data)
        assert fuzzer.check(str(path)) == ("ok", "", "")


# --- cohort CSVs -----------------------------------------------------------------------------------

_CELLS = st.one_of(
    st.sampled_from(["slide", "label", "patient", "split", "a", "b", "s1", "s2", "s1.svs", "train", "val", "test",
                     "", " ", '"', '"x,y"', "\ufeff", "é", "A", "0"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
_LINES = st.lists(st.lists(_CELLS, min_size=0, max_size=5).map(",".join), min_size=0, max_size=8)


_ROWS = st.lists(
    st.tuples(st.sampled_from(["s1", "s2", "s3", "s4.svs", "dir/s5.tif", "s6.ome.tiff", "S1", " s3 "]),
              st.sampled_from(["a", "b", "c", "", " a"]), st.sampled_from(["", "p1", "p2"]),
              st.sampled_from(["", "train", "val", "TEST", "x"])).map(",".join),
    min_size=1, max_size=7)


@st.composite
def csv_bytes(draw):
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind <= 2:  # near-valid cohorts: some pass, some break one rule
        noise = draw(st.lists(st.lists(_CELLS, max_size=4).map(",".join), max_size=1))
        text = "\n".join(["slide,label,patient,split", *draw(_ROWS), *noise])
    else:
        header = draw(
            st.sampled_from(["slide,label", "slide,label,patient,split", "label,slide", "slide", "Slide, Label"])
        )
        text = "\n".join([header, *draw(_LINES)])
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    data = text.replace("\n", newline).encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])),
                                               errors="replace")
    return data


def test_read_cohort_gives_a_cohort_or_a_cohort_error(tmp_path_factory):
    from napari_regional_mil.errors import CohortError
    from napari_regional_mil.training.cohort import read_cohort

    path = tmp_path_factory.mktemp("fuzz_csv") / "labels.csv"
    seen = {"ok": 0, "error": 0}

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=csv_bytes(), classes=st.sampled_from([None, ("a", "b"), ("b", "a", "c")]),
           exists=st.sampled_from([None, lambda row: row.name != "s2"]))
    # Hypothesis also draws constants found in the package's source, so its draws change as the code
    # does: one valid cohort is always tried, whatever the draws.
    @example(data=b"slide,label,patient,split\ns1,a,p1,train\ns3,b,,val\n", classes=None, exists=None)
    def check(data, classes, exists):
        path.write_bytes(data)
        try:
            cohort = read_cohort(path, class_names=classes, slide_exists=exists)
        except CohortError as exc:
            message = str(exc)
            assert message.startswith("labels.csv") and "\n" not in message and "\r" not in message, repr(message)
            seen["error"] += 1
            return
        seen["ok"] += 1
        assert len(cohort.rows) >= 1 and len({r.label for r in cohort.rows}) >= 2
        assert len({r.name for r in cohort.rows}) == len(cohort.rows)
        assert {r.label for r in cohort.rows} <= set(cohort.class_names)
        assert cohort.labels.shape == (len(cohort.rows),)

    check()
    assert seen["error"] > 0 and seen["ok"] > 0
