"""``napari-regional-mil predict``: classify slides with a trained first model."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import write_text_atomic
from ..errors import CacheError, TrainingError
from ..jobs import Progress
from ._progress import drive

if TYPE_CHECKING:
    from collections.abc import Generator

    from ..clinical import ClinicalRecord
    from ..model.checkpoint import Checkpoint
    from ..training.prediction import SlidePrediction


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="classify slides with a trained model; store patch and region attention for heatmaps",
        description=(
            "Run a trained first model on every patch of each slide. Writes slide,predicted,prob_<class>... "
            "(CSV, to --out or stdout) and, per slide, <cache>.attention.npz beside its cache. A model with "
            "clinical variables takes their values from --clinical-table; the CSV then also has each "
            "variable's and the slide's contribution (change in the explained class's probability when it "
            "is set to its reference: training mean / most frequent level / an average training slide)."
        ),
    )
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide names or paths")
    parser.add_argument("--model", required=True, type=Path, metavar="MODEL", help="checkpoint (.safetensors)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", type=Path, metavar="DIR", help="embedding cache folder")
    source.add_argument("--features", type=Path, metavar="DIR",
                        help="feature files of another tool (CLAM/TRIDENT/STAMP .h5, CLAM .pt, .npz)")
    parser.add_argument("--out", type=Path, metavar="CSV", help="write the predictions here (default: stdout)")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the model's)")
    parser.add_argument("--no-attention", action="store_true", help="do not write attention files")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N (mixed precision) or mps")
    parser.add_argument(
        "--clinical-table",
        type=Path,
        metavar="CSV",
        help="clinical values for a model that takes them: a table (CSV, TSV, XLSX) with a slide column "
        "(slide or slide_id) and the model's clinical variables",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``predict``."""
    from ..model.checkpoint import load_checkpoint  # lazy: help (imports torch)
    from ..training.cohort import CohortRow  # lazy: help (imports torch)
    from ..training.datasets import find_cache, find_feature_bag  # lazy: help (imports torch)
    from ..training.feature_files import read_feature_file  # lazy: help (imports torch)
    from ..training.predict import attention_path, predict_slide, write_attention  # lazy: help (imports torch)

    if args.out is not None and not args.out.parent.is_dir():  # before any work

        raise TrainingError(f"{args.out}: folder {args.out.parent} does not exist")
    from ..training.device import resolve_device  # lazy: help (imports torch)

    resolve_device(args.device)
    checkpoint = load_checkpoint(args.model)
    rows = [CohortRow(i + 1, slide, "", slide) for i, slide in enumerate(args.slides)]
    clinical = _clinical_values(args, checkpoint, [row.name for row in rows])  # checked before any work
    sources = []
    for row in rows:
        if args.cache is not None:
            found = find_cache(args.cache, row, encoder=checkpoint.encoder.get("name"))
            encoder = checkpoint.encoder.get("name")
            where = f"no embedding cache in {args.cache}" + (
                f" of {args.model.name}'s encoder {encoder!r}" if encoder else "")
        else:
            found = find_feature_bag(args.features, row)
            where = f"no feature file (.h5/.npz/.pt) in {args.features}"
        if found is None:
            if args.cache is not None and checkpoint.encoder.get("name"):
                # embed_hint says what the encoder needs; it never loads it
                from ..encoders.policy import embed_hint  # lazy: help (only on a failed prediction)

                hint = embed_hint(checkpoint.encoder)
                raise CacheError(
                    f"slide {row.name!r}: {where}; embed it first: embed SLIDE --out {args.cache} {hint}"
                )
            raise CacheError(f"slide {row.name!r}: {where}; embed it first")
        sources.append(found)

    def job() -> Generator[Progress, None, list[SlidePrediction]]:
        out = []
        for i, (row, source) in enumerate(zip(rows, sources)):
            yield Progress("predict", i, len(rows), row.name)
            if args.cache is not None:
                from ..embedding.store import load_slide_embeddings  # lazy: help (imports zarr)

                embeddings = load_slide_embeddings(source)
            else:
                embeddings = read_feature_file(source, slide_name=row.name)
            prediction = predict_slide(
                checkpoint, embeddings, threshold=args.threshold, device=args.device,
                clinical=clinical.get(row.name),
            )
            if not args.no_attention:
                write_attention(prediction, attention_path(source), embeddings=embeddings)
            out.append(prediction)
        yield Progress("predict", len(rows), len(rows), "done")
        return out

    predictions = drive(job())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    encoding = checkpoint.config.clinical
    parts = ["slide", *encoding.names] if encoding is not None else []
    extra = ["explained"] + [f"contribution_{s}" for s in parts] if encoding is not None else []
    writer.writerow(["slide", "predicted"] + [f"prob_{c}" for c in checkpoint.class_names] + extra)
    for p in predictions:
        line = [p.slide_name, p.predicted] + [f"{x:.6f}" for x in p.probabilities]
        if p.contributions is not None:
            values = p.contributions.as_row()
            line += [p.class_names[p.contributions.class_index]]
            line += [f"{values[f'contribution_{s}']:+.6f}" for s in parts]
        writer.writerow(line)
    if args.out is None:
        sys.stdout.write(buffer.getvalue())
    else:
        write_text_atomic(args.out, buffer.getvalue())
        print(f"wrote {args.out} ({len(predictions)} slides)")
    return 0


def _clinical_values(
    args: argparse.Namespace, checkpoint: Checkpoint, slides: list[str]
) -> dict[str, ClinicalRecord]:
    """Every slide's clinical values for a model that takes them (checked: a bad one raises)."""
    from ..training.clinical_values import (
        read_clinical_table,
        records_for,
        require_clinical,
    )  # lazy: help (imports torch)

    encoding = checkpoint.config.clinical
    require_clinical(encoding, args.model.name, args.clinical_table)
    if encoding is None:
        if args.clinical_table is not None:
            print(
                f"warning: {args.model.name} takes no clinical variables; --clinical-table is not used",
                file=sys.stderr,
            )
        return {}
    table = read_clinical_table(args.clinical_table)
    return records_for(encoding, table, slides, source=args.clinical_table.name)
