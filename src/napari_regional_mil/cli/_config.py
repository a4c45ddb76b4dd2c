"""``--config FILE.toml``: a command's options from a file, the command line overriding it.

The file's top-level keys are the command's options, named as their long flag without
the dashes (``lr``, ``hidden-dim``) or as Python names (``learning_rate``,
``hidden_dim``); a table named after the command (``[train]``, ``[crossval]``...)
overrides the top-level keys for that command only, so one file can serve several
commands (tables of other commands are ignored). ``crossval --tune`` reads its grid
from a ``[tune]`` table (:class:`~napari_regional_mil.training.tuning.TuneGrid`'s
fields). Relative paths are relative to the file's folder.

Every problem is one :class:`~napari_regional_mil.errors.ConfigError` line naming the
file and the key: a key the command does not have, a value of the wrong type, a value
outside the choices, a file that is not TOML. Options given on the command line win.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["CONFIG_COMMANDS", "add_config_option", "apply_config", "config_table", "read_config"]

#: Commands that take ``--config`` (also the names of the tables a file may hold).
CONFIG_COMMANDS = ("embed", "train", "crossval", "evaluate")
#: Tables that are not a command's options.
_OTHER_TABLES = ("tune",)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.toml`` to a command's parser."""
    parser.add_argument(
        "--config", type=Path, metavar="FILE.toml",
        help="read options from a TOML file (keys as the long flags without dashes, e.g. lr = 0.001; a [COMMAND] "
        "table for one command only); flags on the command line override it",
    )


def read_config(path: Path) -> dict[str, Any]:
    """The TOML file as a dict.

    Raises
    ------
    ConfigError
        Unreadable, or not TOML (with the line the parser names).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML ({exc})") from None


def config_table(path: Path, data: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``[name]`` table of a config file (empty when absent).

    Raises
    ------
    ConfigError
        ``name`` is not a table.
    """
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path.name}: key {name!r} must be a table ([{name}])")
    return table


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by every name a config key may use."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse keeps its actions here; there is no public accessor
        if action.dest in ("help", "config", "func") or action.dest is argparse.SUPPRESS:
            continue
        out[action.dest] = action
        for flag in action.option_strings:
            if flag.startswith("--"):
                out[flag[2:].replace("-", "_")] = action
    return out


def _convert(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    """The value as the command line would give it to the option (or a ConfigError naming the key)."""
    where = f"{path.name}: key {key!r}"
    flag_kind = type(action).__name__
    if flag_kind in ("_StoreTrueAction", "_StoreFalseAction", "BooleanOptionalAction"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value  # a store_false flag (--no-x) stores into x: the key names x itself
    if isinstance(action, argparse._AppendAction):
        values = value if isinstance(value, list) else [value]
        return [_convert_one(path, where, action, v) for v in values]
    if action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [_convert_one(path, where, action, v) for v in values]
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where}: expected one value, got {type(value).__name__}")
    return _convert_one(path, where, action, value)


def _call(convert: Callable[[Any], Any], value: Any) -> Any:
    """``convert(value)``: an option's ``type`` (int, float, a parser function...) applied to a value."""
    return convert(value)


def _convert_one(path: Path, where: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(value, (dict, list)) or (isinstance(value, bool) and action.type is not None):
        raise ConfigError(f"{where}: expected {_expected(action)}, got {value!r}")
    convert = action.type
    if convert is None:
        result: Any = value if isinstance(value, str) else str(value)
    elif convert is Path or (isinstance(convert, type) and issubclass(convert, Path)):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path (text), got {value!r}")
        result = Path(value).expanduser()
        if not result.is_absolute():
            result = path.parent / result
    else:
        if convert is int and isinstance(value, float):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if not callable(convert):  # an argparse type registered by name: no command uses one
            raise ConfigError(f"{where}: expected {_expected(action)}, got {value!r}")
        try:
            result = _call(convert, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ConfigError(f"{where}: expected {_expected(action)}, got {value!r}") from None
    if action.choices is not None and result not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return result


def _names(arg: str, action: argparse.Action) -> bool:
    """Whether the command-line word ``arg`` sets the option ``action``."""
    return any(arg == flag or arg.startswith(flag + "=") for flag in action.option_strings)


def _expected(action: argparse.Action) -> str:
    convert = action.type
    if convert is int:
        return "an integer"
    if convert is float:
        return "a number"
    return "text" if convert in (None, str) else f"a value for {action.option_strings[-1]}"


def apply_config(
    parser: argparse.ArgumentParser, command: str, argv: Sequence[str], path: Path
) -> argparse.Namespace:
    """Parse ``argv`` with the config file's values as the command's defaults.

    Parameters
    ----------
    parser
        The command's own (sub)parser.
    command
        The command's name (its table in the file).
    argv
        The command's arguments (after the command name).
    path
        The TOML file.

    Raises
    ------
    ConfigError
        Naming the file and the key (see the module docstring).
    """
    data = read_config(path)
    values = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in data.items():
        if isinstance(value, dict) and key not in CONFIG_COMMANDS + _OTHER_TABLES:
            raise ConfigError(
                f"{path.name}: unknown table [{key}] (tables: {', '.join(CONFIG_COMMANDS + _OTHER_TABLES)})"
            )
    values.update({k: v for k, v in config_table(path, data, command).items() if not isinstance(v, dict)})
    actions = _actions(parser)
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            raise ConfigError(
                f"{path.name}: unknown key {key!r} for {command} (see napari-regional-mil {command} --help)"
            )
        defaults[action.dest] = _convert(path, key, action, value)
    given = {a.dest for a in parser._actions if any(_names(arg, a) for arg in argv)}
    for group in parser._mutually_exclusive_groups:  # --features on the command line beats cache = in the file
        if any(a.dest in given for a in group._group_actions):
            for a in group._group_actions:
                if a.dest not in given:
                    defaults.pop(a.dest, None)
        if any(a.dest in defaults for a in group._group_actions):
            group.required = False
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
            if not action.option_strings and action.nargs == "+":  # a positional the file gives
                action.nargs = "*"
    parser.set_defaults(**defaults)
    args = parser.parse_args(list(argv))
    args.config = path
    args.config_values = defaults
    return args
