"""The ``napari-regional-mil`` command line.

Each subcommand lives in its own module ``cli/cmd_<name>.py`` with two functions:
``register(subparsers)`` (argparse only: cheap, so ``--help`` is fast) and
``run(args) -> int`` (imports the heavy core lazily). A :class:`RegionalMilError`
becomes one line ``error: <message>`` on stderr and exit status 2; so does an ``OSError``
(full disk, read-only folder: ``error: <file>: <reason>``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import JobCancelled, RegionalMilError
from ..slide import damage
from ..slide.damage import SlideWarning
from ._config import CONFIG_COMMANDS, apply_config

__all__ = ["build_parser", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = (
    "info",
    "tile",
    "encoders",
    "embed",
    "export_h5",
    "import_h5",
    "synth",
    "train",
    "crossval",
    "predict",
    "evaluate",
    "export",
    "pretrain",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="napari-regional-mil",
        description="Multiple-instance learning on regional embeddings for whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"napari_regional_mil.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"napari_regional_mil.cli.cmd_{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The subcommand ``name``'s own parser."""
    for action in parser._actions:  # argparse offers no public accessor of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config F`` or ``--config=F``), or ``None``."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse the command line; with ``--config FILE`` the file's values are the command's defaults."""
    config = _config_path(argv)
    if config is None or not argv or argv[0] not in CONFIG_COMMANDS:
        return parser.parse_args(argv)
    args = apply_config(_command_parser(parser, argv[0]), argv[0], argv[1:], Path(config))
    args.command = argv[0]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(parser, argv)
    except RegionalMilError as exc:  # a --config file that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 1

    try:
        with _one_line_warnings():
            return int(args.func(args) or 0)
    except JobCancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("cancelled: interrupted by the user", file=sys.stderr)
        return 130
    except RegionalMilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or vanished folder: the user's environment, not a bug
        where = exc.filename2 or exc.filename  # os.replace(tmp, target): name the target
        text = " ".join(str(exc.strerror or exc).split())
        print(f"error: {where}: {text}" if where else f"error: {text}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show the project's slide warnings (damaged tiles...) as ``warning: <message>`` lines on stderr."""
    previous = warnings.showwarning

    def damaged(notice: damage.DamageNotice) -> None:
        print(f"warning: {notice.message}", file=sys.stderr)

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, SlideWarning):
            print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            previous(message, category, *args, **kwargs)

    warnings.showwarning = show
    damage.add_listener(damaged)
    try:
        yield
    finally:
        damage.remove_listener(damaged)
        warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
