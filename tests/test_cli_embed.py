"""``napari-regional-mil embed``, ``export-h5`` and ``import-h5`` on small synthetic slides."""

from __future__ import annotations

import numpy as np

from napari_regional_mil.cli import main
from napari_regional_mil.embedding import find_slide_cache, load_slide_embeddings

_SMALL = ["--patch-size", "32", "--region-size", "4", "--batch-size", "16"]


def test_embed_reports_each_slide_and_fails_for_the_bad_one(embed_slide_path, empty_slide_path, tmp_path, capsys):
    missing = tmp_path / "missing.svs"
    code = main(
        ["embed", str(embed_slide_path), str(empty_slide_path), str(missing), "--out", str(tmp_path / "c"), *_SMALL]
    )
    out, err = capsys.readouterr()
    assert code == 1
    name = embed_slide_path.stem
    assert f"{name}: " in out and "regions, builtin-he (185-d)" in out and "patches/s" in out
    assert "2 of 3 slides failed:" in err
    assert f"  {empty_slide_path.stem}: " in err and "tissue" in err and "  missing: " in err
    listed = err.split("2 of 3 slides failed:\n", 1)[1].splitlines()
    assert len(listed) == 2 and all(line.startswith("  ") for line in listed)  # one line each
    assert load_slide_embeddings(find_slide_cache(tmp_path / "c", name)).n_patches > 100  # the good one is done

    code = main(["embed", str(embed_slide_path), "--out", str(tmp_path / "c"), *_SMALL])
    out, _ = capsys.readouterr()
    assert code == 0 and "already cached" in out


def test_bad_encoder_and_bad_cache_dir_exit_2(embed_slide_path, tmp_path, capsys):
    assert (
        main(["embed", str(embed_slide_path), "--out", str(tmp_path), "--encoder", str(tmp_path / "x.pt"), *_SMALL])
        == 2
    )
    assert "error: " in capsys.readouterr().err
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["embed", str(embed_slide_path), "--out", str(blocker / "c"), *_SMALL]) == 2
    assert "not writable" in capsys.readouterr().err


def test_export_then_import_h5(embed_slide_path, tmp_path, capsys):
    assert main(["embed", str(embed_slide_path), "--out", str(tmp_path / "c"), *_SMALL]) == 0
    assert (
        main(["export-h5", embed_slide_path.name, "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "h5")]) == 0
    )
    h5 = tmp_path / "h5" / f"{embed_slide_path.stem}.h5"
    assert h5.exists()
    assert main(["import-h5", str(h5), str(tmp_path / "nope.h5"), "--out", str(tmp_path / "c2")]) == 1
    out, err = capsys.readouterr()
    assert "regions ->" in out and "nope.h5" in err
    a = load_slide_embeddings(find_slide_cache(tmp_path / "c", embed_slide_path.stem))
    b = load_slide_embeddings(find_slide_cache(tmp_path / "c2", embed_slide_path.stem))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.region_xy, b.region_xy)
    np.testing.assert_array_equal(a.regional_embeddings["max"], b.regional_embeddings["max"])


def test_embed_dtype_float16_is_a_separate_half_size_cache(embed_slide_path, tmp_path, capsys):
    from napari_regional_mil.embedding.store import list_caches, resolve_dtype

    cache = tmp_path / "c"
    assert main(["embed", str(embed_slide_path), "--out", str(cache), *_SMALL]) == 0  # builtin-he: 185-d, float32
    assert main(["embed", str(embed_slide_path), "--out", str(cache), "--dtype", "float16", *_SMALL]) == 0
    out = capsys.readouterr().out
    assert "already cached" not in out.splitlines()[-1]  # the dtype is in the key: a new store
    infos = {i.dtype: i for i in list_caches(cache)}
    assert set(infos) == {"float16", "float32"} and infos["float16"].path != infos["float32"].path
    half, full = (load_slide_embeddings(infos[d].path) for d in ("float16", "float32"))
    assert half.features.dtype == np.float16 and full.features.dtype == np.float32
    # computed in float32, stored rounded: the float16 store holds the float32 values to float16 precision
    np.testing.assert_array_equal(half.features, full.features.astype(np.float16))
    assert half.regional_embeddings["mean"].dtype == np.float32
    np.testing.assert_allclose(half.regional_embeddings["mean"], full.regional_embeddings["mean"], atol=2e-3, rtol=2e-3)
    sizes = [sum(f.stat().st_size for f in (infos[d].path / "features" / "c").rglob("*") if f.is_file())
             for d in ("float16", "float32")]
    assert sizes[0] * 2 == sizes[1]
    assert resolve_dtype("auto", 185) == "float32" and resolve_dtype("auto", 1024) == "float16"
    assert resolve_dtype("auto", 512) == "float32" and resolve_dtype("float16", 185) == "float16"
