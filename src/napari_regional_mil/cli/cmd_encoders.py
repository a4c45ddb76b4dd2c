"""``napari-regional-mil encoders``: the encoders this installation knows, and where their weights are."""

from __future__ import annotations

import argparse
import json
import sys

from ..encoders.known import ALIASES, IMAGENET_MEAN, IMAGENET_STD, KNOWN_ENCODERS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``encoders`` subcommand."""
    parser = subparsers.add_parser(
        "encoders",
        help="list the frozen encoders (second model): dimension, input, mpp, normalisation, weights",
        description=(
            "List the built-in and the published pathology encoders under TRIDENT's names: output dimension, "
            "input size, microns per pixel, input normalisation, where the weights come from (hub repository "
            "and file, gated or not, licence) and whether they are already in the local hub cache. "
            "Nothing is "
            "downloaded. Use one with: embed --encoder NAME --weights FILE, or --from-hub."
        ),
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per encoder instead of a table"
    )
    parser.set_defaults(func=run)


def _normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        return "imagenet"
    if all(m == 0.0 for m in mean) and all(s == 1.0 for s in std):
        return "none"
    return "mean " + ",".join(f"{m:.3f}" for m in mean) + " std " + ",".join(f"{s:.3f}" for s in std)


def rows() -> list[dict[str, object]]:
    """One record per encoder: built-ins, then the known published encoders (no network)."""
    from ..encoders.hub import cached_file  # lazy: help (imports huggingface_hub)

    out: list[dict[str, object]] = [
        {
            "name": "builtin-he",
            "dim": 185,
            "input": "any",
            "mpp": "tiling's",
            "normalisation": "none",
            "weights": "built in (no download)",
            "gated": False,
            "licence": "BSD-3-Clause (this package)",
            "local": True,
            "loadable": True,
            "aliases": [],
            "note": "hand-crafted H&E colour, stain and texture features",
        },
        {
            "name": "resnet50-random",
            "dim": 1024,
            "input": 224,
            "mpp": 0.5,
            "normalisation": "imagenet",
            "weights": "random (speed benchmarks only)",
            "gated": False,
            "licence": "BSD-3-Clause (this package)",
            "local": True,
            "loadable": True,
            "aliases": [],
            "note": "",
        },
    ]
    for known in KNOWN_ENCODERS.values():
        local = cached_file(known)
        dataset = "dataset, " if known.repo_type == "dataset" else ""
        out.append(
            {
                "name": known.name,
                "dim": known.embedding_dim,
                "input": known.input_size,
                "mpp": known.mpp,
                "normalisation": _normalisation(known.mean, known.std),
                "weights": f"{known.hub_repo} ({dataset}{known.weights_file})",
                "gated": known.gated,
                "licence": known.licence,
                "local": local is not None,
                "local_path": str(local) if local else "",
                "loadable": known.loadable,
                "aliases": sorted(a for a, n in ALIASES.items() if n == known.name),
                "note": known.needs or known.note,
                "title": known.title,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``encoders``."""
    from ..encoders.hub import hub_cache_dir  # lazy: help (imports huggingface_hub)

    records = rows()
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    header = (
        "name",
        "dim",
        "input",
        "mpp",
        "normalisation",
        "weights (hub repository, file)",
        "gated",
        "licence",
        "local",
    )
    table = [header] + [
        (
            str(r["name"]) + ("" if r["loadable"] else " *"),
            str(r["dim"]),
            str(r["input"]),
            str(r["mpp"]),
            str(r["normalisation"]),
            str(r["weights"]),
            "yes" if r["gated"] else "no",
            str(r["licence"]),
            "yes" if r["local"] else "no",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"\nlocal: the weights file is in the hub cache {hub_cache_dir()} (HF_HUB_CACHE)")
    print("use: embed SLIDE --out CACHE --encoder NAME --weights FILE   (a file you downloaded)")
    print(
        "     embed SLIDE --out CACHE --encoder NAME --from-hub       (downloads; gated repositories need "
        "a login: "
        "hf auth login, or HF_TOKEN)"
    )
    aliases = [f"{alias} -> {name}" for alias, name in ALIASES.items()]
    if aliases:
        print("aliases (earlier names): " + ", ".join(aliases))
    for r in records:
        if not r["loadable"]:
            print(
                f"* {r['name']}: {r['note']}: give its TorchScript export as --encoder FILE.pt, or import "
                f"TRIDENT's {r['name']} features with import-h5"
            )
    sys.stdout.flush()
    return 0
