"""``napari-regional-mil pretrain autoencoder|mil|handover``: train the second model (a frozen encoder)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CohortError, EncoderError, TrainingError
from ._progress import drive

if TYPE_CHECKING:
    from ..pretrain import AutoencoderConfig, HandoverConfig, MilPretrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    parser = subparsers.add_parser(
        "pretrain",
        help="train the second model (a frozen encoder) on your slides: autoencoder or attention-MIL",
        description=(
            "Train a patch encoder on tissue patches sampled from slides and save it as a frozen encoder "
            "(one .safetensors file: weights and description) that embed/--encoder, the Embed widget "
            "and load_encoder accept. "
            "'autoencoder' needs only slides; 'mil' trains a small CNN with gated attention and a classifier "
            "on labelled slides (--labels) and keeps the CNN; 'handover' fine-tunes such an encoder (--encoder) "
            "inside the first model on the pixels of selected patches (costly: meant for a GPU). The encoder file "
            "is written once, at the end."
        ),
    )
    parser.add_argument("method", choices=("autoencoder", "mil", "handover"), help="how the encoder is trained")
    parser.add_argument("--slides", nargs="+", required=True, type=Path, metavar="SLIDE_OR_DIR",
                        help="slide files, or a folder of slides")
    parser.add_argument("--labels", type=Path, metavar="CSV", help="mil: labels CSV slide,label[,patient][,split]")
    parser.add_argument("--encoder", type=Path, metavar="ENCODER",
                        help="handover: the encoder to fine-tune (made by pretrain autoencoder or mil)")
    parser.add_argument("--out", required=True, type=Path, metavar="ENCODER",
                        help="encoder file to write (.safetensors)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: 8 autoencoder, 15 mil)")
    parser.add_argument("--patch-size", type=int, default=None, help="patch side in px (default: 64; 128 with --gpu)")
    parser.add_argument("--mpp", type=float, default=None,
                        help="um/px of the patches "
                             "(default: 2.0, the footprint of 256 px at 0.5 um/px; 1.0 with --gpu)")
    parser.add_argument("--patches", type=int, default=None, metavar="N",
                        help="autoencoder: patches sampled in all (default: 3072); mil: per slide (default: 256)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="autoencoder: patches per step; mil: patches per bag")
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    parser.add_argument("--embedding-dim", type=int, default=None,
                        help="dimension of the bottleneck / head (default: 128); "
                             "the saved embedding adds the mean of every stage")
    parser.add_argument("--slide-mpp", type=float, default=None, help="level-0 um/px for slides that lack it")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu; cuda with --gpu)")
    parser.add_argument("--gpu", action="store_true", help="larger settings for a GPU (see docs/pretraining.md)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AutoencoderConfig | MilPretrainConfig | HandoverConfig:
    """The :class:`AutoencoderConfig`, :class:`MilPretrainConfig` or :class:`HandoverConfig` of the parsed options."""
    from ..pretrain import AutoencoderConfig, HandoverConfig, MilPretrainConfig  # lazy: help (imports torch)

    if args.method == "handover":
        changes = {"epochs": args.epochs, "learning_rate": args.lr, "seed": args.seed,
                   "patches_per_slide": args.patches,
                   "bag_size": args.batch_size, "device": args.device or ("cuda" if args.gpu else None)}
        try:
            return HandoverConfig(**{k: v for k, v in changes.items() if v is not None})
        except ValueError as exc:
            raise TrainingError(f"invalid option: {exc}") from None
    cls = AutoencoderConfig if args.method == "autoencoder" else MilPretrainConfig
    changes = {
        "epochs": args.epochs, "patch_size": args.patch_size, "mpp": args.mpp, "learning_rate": args.lr,
        "embedding_dim": args.embedding_dim, "device": args.device, "seed": args.seed,
        ("max_patches" if args.method == "autoencoder" else "patches_per_slide"): args.patches,
        ("batch_size" if args.method == "autoencoder" else "bag_size"): args.batch_size,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    try:
        return cls.for_gpu(**changes) if args.gpu else cls(**changes)
    except ValueError as exc:
        raise TrainingError(f"invalid option: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``pretrain``."""
    from ..pretrain import (  # lazy: help (imports torch)
        AutoencoderConfig,
        HandoverConfig,
        fine_tune_handover,
        train_autoencoder,
        train_mil_encoder,
    )

    config = config_from_args(args)
    slides = args.slides[0] if len(args.slides) == 1 else args.slides
    if args.method != "autoencoder" and args.labels is None:
        raise CohortError(f"pretrain {args.method} needs --labels CSV (slide,label[,patient][,split])")
    if isinstance(config, AutoencoderConfig):  # --method autoencoder
        result = drive(train_autoencoder(slides, out=args.out, config=config, slide_mpp=args.slide_mpp, register=False))
    elif isinstance(config, HandoverConfig):  # --method handover
        if args.encoder is None:
            raise EncoderError(
                "pretrain handover needs --encoder (a .safetensors file made by pretrain autoencoder or mil)"
            )
        result = drive(fine_tune_handover(
            slides, labels=args.labels, encoder=args.encoder, out=args.out, config=config, slide_mpp=args.slide_mpp,
            register=False,
        )).encoder
    else:  # --method mil
        result = drive(
            train_mil_encoder(slides, labels=args.labels, out=args.out, config=config, slide_mpp=args.slide_mpp,
                              register=False)
        )
    last = result.history[-1]
    spec = result.spec
    metrics = " ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("epoch", "lr"))
    print(f"trained on {result.n_patches} patches in {result.seconds:.0f} s; last epoch: {metrics}")
    for name, why in result.extra.get("skipped", ()):
        print(f"  left out {name}: {why}")
    print(
        f"saved {result.path} ({spec.embedding_dim}-d, {spec.input_size} px at {spec.mpp:g} um/px, "
        f"weights {spec.weights_hash[:12]}); use it with: embed --encoder {result.path}"
    )
    return 0
