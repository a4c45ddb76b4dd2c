"""``napari-regional-mil embed``: patch and regional embeddings of slides, into a cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..encoders.known import KNOWN_ENCODERS, canonical_name
from ..errors import EncoderError, TilingError
from ..jobs import Progress
from ..runrecord import run_record, write_run_record
from ..tiling import TilingParams
from ._config import add_config_option
from ._progress import drive
from ._tissue_options import add_tissue_arguments, tissue_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` subcommand."""
    parser = subparsers.add_parser(
        "embed",
        help="embed slides with a frozen encoder (the second model) into an embedding cache",
        description=(
            "Detect tissue, cut each slide into patches, embed every tissue patch with a frozen encoder "
            "and pool regional embeddings (mean, max) into a resumable zarr cache per slide. A complete "
            "cache is reused; an interrupted one is resumed. Exit status 1 when any slide failed."
        ),
    )
    parser.add_argument("slides", nargs="+", type=Path, metavar="SLIDE",
                        help="slide files (.svs, .tif, .ndpi, .mrxs, .bif, ...) or DICOM WSI folders")
    parser.add_argument("--out", type=Path, required=True, metavar="CACHE_DIR", help="cache directory")
    parser.add_argument(
        "--encoder", default="builtin-he", metavar="NAME_OR_PATH",
        help="builtin-he, a published encoder under TRIDENT's name (uni_v1, virchow2, ...: see the "
        "'encoders' command), timm:<name>, or an encoder file (.safetensors, or TorchScript .pt/.ts: runs "
        "its code, only files you trust) (default: builtin-he)",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights", "--encoder-weights", dest="weights", type=Path, default=None, metavar="FILE",
        help="the weights file of a published encoder or timm:<name> (e.g. the pytorch_model.bin you "
        "downloaded); read as data, never unpickled",
    )
    weights.add_argument(
        "--from-hub", action="store_true",
        help="download the published encoder's weights from the Hugging Face hub (or use the copy in the hub "
        "cache); gated repositories need their terms accepted and a login (hf auth login, or HF_TOKEN). "
        "Never done without this flag",
    )
    parser.add_argument("--mpp", type=float, default=None,
                        help="level-0 um/px when the slide lacks it (or to override)")
    parser.add_argument("--patch-size", type=int, default=256, help="patch side in px at --target-mpp (default: 256)")
    parser.add_argument("--target-mpp", type=float, default=0.5, help="um/px of the patch grid (default: 0.5)")
    parser.add_argument("--region-size", type=int, default=8, help="k: regions of k x k patches (default: 8)")
    parser.add_argument("--tissue-threshold", type=float, default=0.5,
                        help="min tissue fraction of a patch (default: 0.5)")
    parser.add_argument("--batch-size", type=int, default=64, help="patches per forward pass (default: 64)")
    parser.add_argument(
        "--device", default="auto",
        help="auto (the first NVIDIA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N (default: auto)",
    )
    parser.add_argument("--readers", type=int, default=2, help="reader threads per slide (default: 2)")
    parser.add_argument("--dtype", choices=("auto", "float16", "float32"), default="auto",
                        help="how the patch embeddings are stored: float16 halves the cache (computed in float32, "
                        "regional embeddings pooled in float32); auto (default): float16 for encoders wider than "
                        "512 dimensions, else float32. Part of the cache key")
    parser.add_argument("--scheduler", default=None, metavar="local|ADDRESS",
                        help="run one slide per task on dask.distributed: 'local' or tcp://host:port")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default: 2)")
    parser.add_argument("--context-encoder", action="append", default=[], metavar="NAME_OR_PATH",
                        help="several scales: a further encoder embedding one larger patch centred on each region "
                        "(repeatable; stored in the same cache, picked up by train)")
    parser.add_argument("--context-scale", action="append", type=float, default=[], metavar="S",
                        help="um/px of the context patch as a multiple of --target-mpp, one per --context-encoder "
                        "(default: 2)")
    add_tissue_arguments(parser)
    add_config_option(parser)
    parser.set_defaults(func=run)


def _write_run_record(args: argparse.Namespace, summaries: list) -> None:
    """``<cache>/run.json``: this run's options, versions and the stores it wrote or reused (the latest run)."""
    stores = {s.slide: Path(s.cache_path).name for s in summaries if s.ok and s.cache_path}
    options = {k: v for k, v in vars(args).items() if k not in ("func", "config_values", "command")}
    record = run_record("embed", options, config_file=getattr(args, "config", None), outputs=[*stores.values()])
    record["inputs"]["slides"] = {str(s.slide): {"ok": s.ok, "store": stores.get(s.slide)} for s in summaries}
    if stores and Path(args.out).is_dir():  # nothing cached, nothing to record (a refusal leaves the folder as it was)
        write_run_record(Path(args.out) / "run.json", record)


def run(args: argparse.Namespace) -> int:
    """Run ``embed``; 0 when every slide is cached, 1 when some failed."""
    from ..embedding.workflow import ContextRequest, embed_slides  # lazy: help (imports zarr)
    from ..encoders.spec import resolve_device  # lazy: help (imports torch)

    if args.patch_size < 8 or args.region_size < 1 or not args.target_mpp > 0 or args.batch_size < 1:
        raise TilingError("--patch-size must be >= 8, --region-size >= 1, --target-mpp > 0, --batch-size >= 1")
    options = _encoder_options(args)
    tissue = tissue_source(args)
    params = TilingParams(
        patch_size=args.patch_size, target_mpp=args.target_mpp, region_size=args.region_size,
        tissue_threshold=args.tissue_threshold,
    )
    scales = list(args.context_scale) or [2.0]
    contexts = [ContextRequest(enc, scales[min(i, len(scales) - 1)]) for i, enc in enumerate(args.context_encoder)]

    def report(event: Progress) -> str | None:  # each slide's line as soon as it is cached
        if (event.stage == "embedded" and event.metrics.get("ok")) or "context" in event.metrics:
            return event.message
        return None

    summaries = drive(embed_slides(
        args.slides, cache_dir=args.out, encoder=str(args.encoder),
        encoder_options=options,
        tiling_params=params, batch_size=args.batch_size, device=resolve_device(args.device),
        num_readers=args.readers,
        mpp=args.mpp, contexts=contexts, scheduler=args.scheduler, workers=args.workers, dtype=args.dtype,
        tissue=None if tissue.is_default else tissue,
    ), report=report)
    failed = [s for s in summaries if not s.ok]
    _write_run_record(args, summaries)
    if len(summaries) == 1 and failed:  # one slide: one line, like every other command's error
        print(f"error: {failed[0].message}", file=sys.stderr)
        return 1
    if failed:
        print(f"{len(failed)} of {len(summaries)} slides failed:", file=sys.stderr)
        for summary in failed:
            print(f"  {summary.slide}: {summary.message}", file=sys.stderr)
        return 1
    return 0


def _encoder_options(args: argparse.Namespace) -> dict[str, object] | None:
    """``--weights`` / ``--from-hub`` as encoder options; ``--from-hub`` only for a published encoder."""
    if args.from_hub:
        if canonical_name(str(args.encoder)) not in KNOWN_ENCODERS:
            raise EncoderError(
                f"--from-hub downloads a published encoder's weights; {args.encoder} is not one "
                "(see the 'encoders' command)"
            )
        return {"from_hub": True}
    return {"weights": str(args.weights)} if args.weights else None
