"""Benchmark of the embedding pipeline: encoder alone, reader alone, pipeline, naive loop.

For each encoder (by default the built-in ``builtin-he``, ``resnet50-random``, a ResNet-50
cut after layer 3, and ``uni_v1-random``, UNI's architecture (ViT-L/16, 224 px) with random
weights: weights do not change speed), with the same batch size and torch threads:

(a) the encoder alone: forward throughput on in-memory uint8 patches (normalisation included);
(b) the reader alone: patches read, decoded, resized and normalised per second by the
    pipeline's reading stage with all its threads;
(c) the full pipeline (``embed_slide``) on ``../shared/testslides/CMU-1-Small-Region.svs``
    (when present) and on a synthetic pyramid (20k x 20k by default);
(d) the naive loop users write: serial ``read_region`` per patch, then a forward pass.

(a), (b) and (c) are measured in interleaved rounds (medians reported) so that they see
the same machine load; (c) runs on the first patches of a slide (a user tissue mask) when
the slide has more. efficiency = c / min(a, b) per encoder (the lower over the slides),
speed-up = c / d. On a CPU-only machine the encoder and the readers share the same cores,
so c cannot reach min(a, b) for a fast encoder: the run also prints the shared-CPU bound
1 / (1/a + 1/b) and c against it; for a slow encoder (ViT-L) reading is a small part of
the work and c / min(a, b) is the figure (goal >= 0.9); on a GPU the two stages use
different hardware and c / min(a, b) is the figure that matters.

The built-in encoder, version 2 (the package's) against version 1 (``builtin_he_v1.py``
here, the implementation it replaced), side by side in the same run: encoder-alone
patches/s (interleaved rounds), the colour-controlled texture probe
(:mod:`napari_regional_mil.synth.probe`: every patch has the same per-channel colour
distribution; leave-one-texture-seed-out linear probe) with the mean/std-RGB baseline, and
the linear probe on a synthetic slide with 6 tissue types.

Peak RSS of a whole ``embed_slide`` run is measured in subprocesses. The last lines are
``builtin_speedup=<v2/v1>`` and ``pipeline_efficiency=<lowest c/min(a,b) over the slow
encoders>``.

Run: ``python benchmarks/embed.py`` (``--help`` for options). On a machine with an NVIDIA
GPU, UNI's architecture end to end with CUDA and autocast (bf16), reading included:
``python benchmarks/embed.py --device cuda --encoders uni_v1-random --readers 12
--batch-size 256 --vit-patches 4000 --vit-sample 256 --torch-threads 4 --skip-builtin-versions``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CMU = REPO.parent / "shared" / "testslides" / "CMU-1-Small-Region.svs"
WORK = Path(tempfile.gettempdir()) / "nrm-bench"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # builtin_he_v1 (benchmark-only)

CPU_MS: dict[str, float] = {}  # CPU milliseconds per patch (all threads): load-independent costs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(
    fn, n_per_call: int, *, min_s: float, min_calls: int = 2, cpu_key: str | None = None, device: str = "cpu"
) -> float:
    fn()  # warm-up
    _sync(device)
    calls, t0, c0 = 0, time.perf_counter(), time.process_time()
    while calls < min_calls or time.perf_counter() - t0 < min_s:
        fn()
        calls += 1
    _sync(device)
    if cpu_key:
        CPU_MS[cpu_key] = (time.process_time() - c0) * 1000 / (calls * n_per_call)
    return calls * n_per_call / (time.perf_counter() - t0)


def make_encoder(name: str, device: str):
    """A registered encoder, or ``<known>-random``: a known architecture (``uni_v1``) with random weights."""
    from napari_regional_mil.encoders import (
        KNOWN_ENCODERS,
        EncoderSpec,
        FrozenEncoder,
        load_encoder,
    )
    from napari_regional_mil.encoders.published import build_known

    base = name.removesuffix("-random")
    if name.endswith("-random") and base in KNOWN_ENCODERS:
        known = KNOWN_ENCODERS[base]
        torch.manual_seed(0)
        module = build_known(known)
        spec = EncoderSpec(
            name=name,
            embedding_dim=known.embedding_dim,
            input_size=known.input_size,
            mpp=known.mpp,
            mean=known.mean,
            std=known.std,
            weights_hash="random-" + base,
            kind=known.family,
            interpolation=known.interpolation,
        )
        return FrozenEncoder(module, spec, device=device)
    return load_encoder(name, device=device)


def large_slide(size: int) -> Path:
    """A synthetic ``size`` x ``size`` pyramid (256 px cells, 6 tissue types, ~45 % tissue), made once."""
    from napari_regional_mil.synth.slides import write_synthetic_slide
    from napari_regional_mil.synth.textures import make_tissue_layout

    path = WORK / f"synthetic_{size}.tiff"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        cells = -(-size // 256)
        layout = make_tissue_layout((cells, cells), np.random.default_rng(0))
        t0 = time.perf_counter()
        write_synthetic_slide(path, layout, patch_px=256, mpp=0.5, seed=0)
        print(f"wrote {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def tiling_of(path: Path, params):
    from napari_regional_mil.slide import open_slide
    from napari_regional_mil.tiling import tile_slide
    from napari_regional_mil.tissue import detect_tissue

    with open_slide(path) as slide:
        return tile_slide(slide, detect_tissue(slide), params)


def reader_rate(path: Path, tiling, enc, *, readers: int, batch: int, limit: int, min_s: float) -> float:
    """(b): the pipeline's reading stage alone (threads, decode, resize, normalise)."""
    from napari_regional_mil.embedding.reader import PatchReader, plan_reads
    from napari_regional_mil.slide import open_slide

    with open_slide(path) as slide:
        plan = plan_reads(
            slide_mpp=slide.mpp,
            level_downsamples=slide.info.level_downsamples,
            patch_size=tiling.params.patch_size,
            patch_size_level0=tiling.patch_size_level0,
            input_size=enc.spec.input_size,
            encoder_mpp=enc.spec.mpp,
        )
        coords = tiling.coords_px[:limit]

        def run():
            reader = PatchReader(slide, coords, plan, num_threads=readers, batch_size=batch)
            for _, patches in reader.batches():
                enc.preprocess(patches)

        return _rate(
            run, len(coords), min_s=min_s, min_calls=1, cpu_key=f"read {path.name}", device=str(enc.device)
        )


def naive_rate(path: Path, tiling, enc, *, batch: int, limit: int) -> float:
    """(d): serial tiffslide ``read_region`` per patch, then a forward pass per batch."""
    import tiffslide

    slide = tiffslide.TiffSlide(path)
    side = round(tiling.patch_size_level0)
    coords = tiling.coords_px[:limit]
    t0 = time.perf_counter()
    for start in range(0, len(coords), batch):
        patches = [
            np.asarray(slide.read_region((int(x), int(y)), 0, (side, side)).convert("RGB"))
            for x, y in coords[start : start + batch]
        ]
        enc.embed(np.stack(patches)).cpu()
    return len(coords) / (time.perf_counter() - t0)


def pipeline_rate(
    path: Path, params, encoder, *, readers: int, batch: int, repeats: int, mask=None
) -> tuple[float, int]:
    """(c): ``embed_slide`` into a fresh cache; rate of the embedding stage, best of ``repeats``."""
    from napari_regional_mil.embedding import embed_slide
    from napari_regional_mil.jobs import run_job

    best, n = 0.0, 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=WORK) as cache:
            result = run_job(
                embed_slide(
                    path,
                    cache_dir=cache,
                    tiling_params=params,
                    encoder=encoder,
                    batch_size=batch,
                    num_readers=readers,
                    tissue_mask=mask,
                )
            )
        best, n = max(best, result.rate), result.n_patches
    return best, n


_RSS_CHILD = """
import json, resource, sys, tempfile, torch
from napari_regional_mil.embedding import embed_slide
from napari_regional_mil.jobs import run_job
from napari_regional_mil.tiling import TilingParams
torch.set_num_threads(int(sys.argv[3]))
with tempfile.TemporaryDirectory(dir=sys.argv[2]) as cache:
    r = run_job(embed_slide(sys.argv[1], cache_dir=cache,
                            tiling_params=TilingParams(patch_size=224, region_size=8),
                            batch_size=int(sys.argv[4]), num_readers=int(sys.argv[5])))
# VmHWM (not ru_maxrss, which keeps the forking parent's high-water mark across exec)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
rss = hwm[0] / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_mib": rss, "n": r.n_patches, "rate": r.rate}))
"""


def peak_rss(path: Path, args) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_CHILD,
            str(path),
            str(WORK),
            str(args.torch_threads),
            str(args.batch_size),
            str(args.readers),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def slide_probe(encoder) -> float:
    """Linear probe of an encoder's embeddings of a synthetic 6-tissue-type slide (half train, half test)."""
    sys.path.insert(0, str(REPO / "tests"))
    from napari_regional_mil.embedding import embed_slide, load_slide_embeddings
    from napari_regional_mil.jobs import run_job
    from napari_regional_mil.synth.slides import write_synthetic_slide
    from napari_regional_mil.tiling import TilingParams
    from test_encoders import linear_probe_accuracy

    types = np.full((14, 19), -1, np.int16)
    types[1:13, 1:18] = (np.arange(17)[None, :] // 3 + np.arange(12)[:, None] // 4) % 6
    path = WORK / "probe6.tiff"
    if not path.exists():
        write_synthetic_slide(path, types, patch_px=64, mpp=0.5, seed=5, tile=256)
    with tempfile.TemporaryDirectory(dir=WORK) as cache:
        r = run_job(
            embed_slide(
                path,
                cache_dir=cache,
                tiling_params=TilingParams(patch_size=64, region_size=4),
                encoder=encoder,
            )
        )
        emb = load_slide_embeddings(r.cache_path)
    labels = types[emb.grid_xy[:, 1], emb.grid_xy[:, 0]]
    keep = labels >= 0
    return linear_probe_accuracy(emb.features[keep], labels[keep].astype(np.int64))


def builtin_versions(args) -> float:
    """builtin-he version 2 (the package's) against version 1, side by side: speed and probes."""
    from builtin_he_v1 import builtin_he_v1
    from napari_regional_mil.encoders import load_encoder
    from napari_regional_mil.synth.probe import (
        colour_baseline,
        colour_matched_patches,
        linear_probe,
    )

    v1, v2 = builtin_he_v1(), load_encoder("builtin-he")
    patches, labels, groups = colour_matched_patches(
        n_per_type=args.probe_patches, seeds=(0, 1, 2, 3), rng_seed=1
    )
    sample = patches[: args.batch_size]
    rounds = []
    for _ in range(args.rounds):  # interleaved, so both see the same machine load
        a1 = _rate(lambda: v1.embed(sample), len(sample), min_s=args.min_s, cpu_key="encode builtin-he v1")
        a2 = _rate(lambda: v2.embed(sample), len(sample), min_s=args.min_s, cpu_key="encode builtin-he v2")
        rounds.append((a1, a2, a2 / a1))
    a1, a2, ratio = (float(np.median([r[i] for r in rounds])) for i in range(3))

    def features(enc):
        return torch.cat([enc.embed(patches[i : i + 64]) for i in range(0, len(patches), 64)]).numpy()

    n_types = int(labels.max()) + 1
    print(
        f"\nbuiltin-he encoder alone, 224 px, batch {len(sample)}: version 1 {a1:.1f} patches/s, version 2 "
        f"{a2:.1f} patches/s: {ratio:.2f} x (median of {args.rounds} interleaved rounds: "
        + ", ".join(f"{r[2]:.2f}" for r in rounds)
        + f"); CPU ms per patch v1 {CPU_MS['encode builtin-he v1']:.2f}, "
        f"v2 {CPU_MS['encode builtin-he v2']:.2f}"
    )
    baseline = linear_probe(colour_baseline(patches), labels, groups)
    p1, p2 = linear_probe(features(v1), labels, groups), linear_probe(features(v2), labels, groups)
    print(
        f"colour-controlled texture probe ({len(patches)} patches of {n_types} tissue types, the same "
        "per-channel colour distribution in every patch; leave-one-texture-seed-out accuracy, chance "
        f"{1 / n_types:.3f}): mean/std-RGB baseline {baseline:.3f} | builtin-he v1 {p1:.3f} | "
        f"builtin-he v2 {p2:.3f}"
    )
    print(
        f"6-tissue-type synthetic slide probe: builtin-he v1 {slide_probe(v1):.3f} | builtin-he v2 "
        f"{slide_probe(v2):.3f}",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--large-size", type=int, default=20000, help="side of the synthetic slide (default 20000)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--readers", type=int, default=2, help="reader threads (default 2)")
    parser.add_argument("--torch-threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (autocast bf16/fp16 on CUDA)")
    parser.add_argument("--min-s", type=float, default=2.0, help="seconds per (a)/(b) measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved (a, b, c) rounds; medians reported"
    )
    parser.add_argument("--builtin-patches", type=int, default=768, help="patches per (c) run, builtin-he")
    parser.add_argument("--resnet-patches", type=int, default=96, help="patches per (c) run, ResNet-50")
    parser.add_argument("--vit-patches", type=int, default=24, help="patches per (c) run, ViT encoders")
    parser.add_argument("--vit-sample", type=int, default=4, help="patches per (a) call, ViT encoders (CPU)")
    parser.add_argument(
        "--probe-patches", type=int, default=24, help="patches per type and seed, texture probe"
    )
    parser.add_argument("--encoders", nargs="+", default=["builtin-he", "resnet50-random", "uni_v1-random"])
    parser.add_argument(
        "--skip-builtin-versions", action="store_true", help="no builtin-he v1 vs v2 comparison"
    )
    parser.add_argument("--no-throughput", action="store_true", help="no (a)-(d) measurements")
    parser.add_argument("--no-rss", action="store_true", help="no peak-RSS subprocesses")
    args = parser.parse_args()

    from napari_regional_mil.tiling import TilingParams

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"error: --device {args.device} asked but CUDA is not available (torch {torch.__version__})")
    torch.set_num_threads(args.torch_threads)
    WORK.mkdir(parents=True, exist_ok=True)
    params = TilingParams(patch_size=224, target_mpp=0.5, region_size=8)
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(
        f"torch {torch.__version__}, device {args.device}{gpu}, {torch.get_num_threads()} torch threads, "
        f"{args.readers} readers, batch {args.batch_size}",
        flush=True,
    )
    big = large_slide(args.large_size)
    slides = {f"synthetic-{args.large_size}": (big, tiling_of(big, params))}
    if CMU.exists():
        slides = {"CMU-1-Small-Region": (CMU, tiling_of(CMU, params)), **slides}
    for name, (_, tiling) in slides.items():
        print(
            f"{name}: {tiling.slide_dimensions[0]} x {tiling.slide_dimensions[1]} px, "
            f"{tiling.n_patches} tissue patches of 224 px"
        )
    first_path, first_tiling = next(iter(slides.values()))
    sample = np.stack(_first_patches(first_path, first_tiling, args.batch_size))

    efficiencies, slow = {}, set()
    for enc_name in [] if args.no_throughput else args.encoders:
        enc = make_encoder(enc_name, args.device)
        vit = enc.spec.kind in ("timm", "transformers")
        if vit or enc.spec.embedding_dim > 512:
            slow.add(enc_name)
        n_max = args.vit_patches if vit else args.resnet_patches if enc_name in slow else args.builtin_patches
        enc_sample = (
            sample[: max(1, args.vit_sample)] if vit else sample
        )  # 32 ViT-L patches: minutes on a CPU
        effs = []
        for name, (path, tiling) in slides.items():
            n_c = min(tiling.n_patches, n_max)
            mask = _first_patches_mask(path, tiling, n_c) if n_c < tiling.n_patches else None
            rounds = []
            for _ in range(args.rounds):  # interleaved, so a, b and c see the same machine load
                a = _rate(
                    lambda enc=enc, x=enc_sample: enc.embed(x),
                    len(enc_sample),
                    min_s=args.min_s,
                    min_calls=1 if vit else 2,
                    cpu_key=f"encode {enc_name}",
                    device=args.device,
                )
                b = reader_rate(
                    path,
                    tiling,
                    enc,
                    readers=args.readers,
                    batch=args.batch_size,
                    limit=max(n_c, 256),
                    min_s=args.min_s,
                )
                c, n = pipeline_rate(
                    path, params, enc, readers=args.readers, batch=args.batch_size, repeats=1, mask=mask
                )
                rounds.append((a, b, c, c / min(a, b), c * (1 / a + 1 / b)))
            a, b, c, eff, eff_shared = (float(np.median([r[i] for r in rounds])) for i in range(5))
            naive_n = min(n, 2 * len(enc_sample) if vit else 2 * args.batch_size if enc_name in slow else 256)
            d = naive_rate(
                path, tiling, enc, batch=len(enc_sample) if vit else args.batch_size, limit=naive_n
            )
            effs.append(eff)
            print(
                f"[{enc_name}] {name}: (a) encoder alone {a:.1f} | (b) reader alone {b:.1f} | "
                f"(c) pipeline {c:.1f} over {n} patches | (d) naive {d:.1f} patches/s | "
                f"efficiency c/min(a,b) = {eff:.2f} | "
                f"speed-up c/d = {c / d:.2f} | shared-CPU bound {1 / (1 / a + 1 / b):.1f}, c/bound = "
                f"{eff_shared:.2f}  (medians of {args.rounds} interleaved rounds: "
                + ", ".join(f"{r[3]:.2f}" for r in rounds)
                + ")",
                flush=True,
            )
        print(
            f"[{enc_name}] CPU ms per patch (all threads): "
            + ", ".join(f"{k} {v:.2f}" for k, v in CPU_MS.items() if enc_name in k or k.startswith("read"))
        )
        efficiencies[enc_name] = min(effs)
        print(f"[{enc_name}] efficiency = {efficiencies[enc_name]:.2f}", flush=True)

    if args.device == "cpu" and not args.no_rss:
        rss = [(name, peak_rss(path, args)) for name, (path, _) in slides.items()]
        print(
            "\npeak RSS builtin-he embed_slide: "
            + ", ".join(
                f"{name} {r['rss_mib']:.0f} MiB ({r['n']} patches, {r['rate']:.0f} patches/s)"
                for name, r in rss
            )
        )
    ratio = None if args.skip_builtin_versions else builtin_versions(args)
    if ratio is not None:
        print(f"builtin_speedup={ratio:.2f}")
    if efficiencies:
        goal = [e for n, e in efficiencies.items() if n in slow] or list(efficiencies.values())
        print(f"pipeline_efficiency={min(goal):.2f}")


def _first_patches(path: Path, tiling, n: int):
    from napari_regional_mil.slide import open_slide

    side = round(tiling.patch_size_level0)
    with open_slide(path) as slide:
        return [slide.read_region(tuple(int(v) for v in xy), 0, (side, side)) for xy in tiling.coords_px[:n]]


def _first_patches_mask(path: Path, tiling, n: int) -> np.ndarray:
    """A level-0-shaped tissue mask (downsampled 32x, a TissueMask) keeping the first ``n`` tissue patches."""
    from napari_regional_mil.tissue import TissueMask

    w, h = tiling.slide_dimensions
    f = 32
    mask = np.zeros((-(-h // f), -(-w // f)), bool)
    side = tiling.patch_size_level0
    for x, y in tiling.coords_px[:n]:
        mask[int(y) // f : int(np.ceil((y + side) / f)), int(x) // f : int(np.ceil((x + side) / f))] = True
    return TissueMask(mask=mask, downsample=(w / mask.shape[1], h / mask.shape[0]))


if __name__ == "__main__":
    main()
