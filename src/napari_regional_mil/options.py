"""The one table of user options: dataclass fields that carry their CLI flag, GUI label and help.

A settings dataclass (:class:`~napari_regional_mil.model.config.ModelConfig`,
:class:`~napari_regional_mil.model.config.SelectionConfig`,
:class:`~napari_regional_mil.training.train.TrainConfig`) marks each field a user may set
with :func:`option`::

    hidden_dim: int = field(default=128, metadata=option(
        "width of the patch unit and of the projected vectors", low=4, high=2048, step=16))

From those fields, and nothing else, the CLI's flags (:func:`add_options`,
:func:`option_values`) and the Train widget's form (``_widgets/_train_fields.py``) are
generated, with the field's default, its type, its choices (from a ``Literal``
annotation) and the help text. Adding an option is adding one field with ``option(...)``
metadata (see ``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar, Union, get_args, get_origin

__all__ = ["Option", "OptionSpec", "OptionValue", "add_options", "make", "option", "option_values", "options_of"]

#: The value of one option.
OptionValue = int | float | str | bool

T = TypeVar("T")

_KEY = "napari_regional_mil.option"
_NOT_SET = object()


@dataclass(frozen=True)
class OptionSpec:
    """How one dataclass field is offered to the user (the metadata :func:`option` makes).

    Parameters
    ----------
    help
        One help text: the CLI's ``--help`` and the widget's tooltip.
    flag
        The CLI flag (default ``--<field-name>`` with ``-`` for ``_``).
    label
        The widget's label (default: the field name, capitalised, ``_`` as spaces).
    choices
        Allowed values of a text option (default: a ``Literal`` annotation's values).
    low, high, step, decimals
        The widget's range, step and decimals (numbers).
    gui
        Whether the Train widget's form shows it (the CLI always offers it).
    front_default
        The default of the CLI and the widget when it differs from the library's (e.g.
        ``threads``: the library leaves torch's setting, the front ends use 1).
    negated_flag
        For a boolean that is on by default: the CLI flag that switches it off
        (``--no-all-regions``) instead of ``--flag {true,false}``.
    """

    help: str
    flag: str | None = None
    label: str | None = None
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    decimals: int | None = None
    gui: bool = False
    front_default: object = _NOT_SET
    negated_flag: str | None = None


def option(
    help: str,
    *,
    flag: str | None = None,
    label: str | None = None,
    choices: tuple[str, ...] = (),
    low: float | None = None,
    high: float | None = None,
    step: float | None = None,
    decimals: int | None = None,
    gui: bool = False,
    front_default: object = _NOT_SET,
    negated_flag: str | None = None,
) -> dict[str, OptionSpec]:
    """Field metadata that makes a dataclass field a user option (the parameters of :class:`OptionSpec`)."""
    return {_KEY: OptionSpec(
        help, flag=flag, label=label, choices=choices, low=low, high=high, step=step, decimals=decimals, gui=gui,
        front_default=front_default, negated_flag=negated_flag,
    )}


@dataclass(frozen=True)
class Option:
    """One user option, resolved from its dataclass field.

    Parameters
    ----------
    name
        The field name (also the ``argparse`` destination).
    owner
        The dataclass the option belongs to.
    kind
        ``int``, ``float``, ``str`` or ``bool``.
    default
        The front ends' default (the field's, or ``front_default``).
    spec
        The field's :class:`OptionSpec`.
    """

    name: str
    owner: type
    kind: type
    default: OptionValue
    spec: OptionSpec

    @property
    def flag(self) -> str:
        """The CLI flag."""
        return self.spec.flag or "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """The widget's label."""
        return self.spec.label or self.name.replace("_", " ").capitalize()

    @property
    def choices(self) -> tuple[str, ...]:
        """Allowed values of a text option (empty: any)."""
        return self.spec.choices


def _kind_and_choices(annotation: object) -> tuple[type, tuple[str, ...]]:
    """``(int | float | str | bool, choices)`` of a field's annotation."""
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        return type(values[0]), tuple(str(v) for v in values)
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return _kind_and_choices(kinds[0])
    if annotation in (int, float, str, bool):
        return typing.cast(type, annotation), ()
    return str, ()


def _annotation(cls: type, f: dataclasses.Field[object]) -> object:
    """The evaluated annotation of one field.

    Only option fields are evaluated: others may name types their module imports for type
    checkers only.
    """
    holder = type("_Field", (), {"__annotations__": {f.name: f.type}, "__module__": cls.__module__})
    return typing.get_type_hints(holder)[f.name]


def options_of(cls: type) -> tuple[Option, ...]:
    """The user options of a settings dataclass, in field order.

    Raises
    ------
    TypeError
        ``cls`` is not a dataclass, or an option field has no default.
    """
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if not isinstance(spec, OptionSpec):
            continue
        kind, choices = _kind_and_choices(_annotation(cls, f))
        if spec.front_default is not _NOT_SET:
            default = spec.front_default
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: an option needs a default")
        if not isinstance(default, (int, float, str, bool)):
            raise TypeError(f"{cls.__name__}.{f.name}: default {default!r} is not a number, text or boolean")
        if kind is not bool and isinstance(default, bool):
            kind = bool
        if spec.choices:
            choices = spec.choices
        out.append(Option(f.name, cls, kind, default, dataclasses.replace(spec, choices=choices)))
    return tuple(out)


def _number(kind: type) -> Callable[[str], OptionValue]:
    return typing.cast(Callable[[str], OptionValue], kind)


def add_options(parser: argparse.ArgumentParser, cls: type, *, title: str) -> None:
    """Add the flags of ``cls``'s options to ``parser`` as one argument group.

    Parameters
    ----------
    parser
        The (sub)command's parser.
    cls
        A settings dataclass.
    title
        The group's title in ``--help``.
    """
    group = parser.add_argument_group(title)
    for opt in options_of(cls):
        shown = "on" if opt.default is True else "off" if opt.default is False else opt.default
        shown = "none" if shown == "" else shown
        text = f"{opt.spec.help} (default: {shown})"
        if opt.kind is bool:
            if opt.spec.negated_flag:
                group.add_argument(opt.spec.negated_flag, dest=opt.name, action="store_false", default=opt.default,
                                   help=f"switch off: {opt.spec.help}")
            else:
                group.add_argument(opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction,
                                   default=opt.default, help=text)
        elif opt.choices:
            group.add_argument(opt.flag, dest=opt.name, choices=opt.choices, default=opt.default, help=text)
        else:
            metavar = opt.flag.lstrip("-").replace("-", "_").upper()
            group.add_argument(opt.flag, dest=opt.name, type=_number(opt.kind), default=opt.default, help=text,
                               metavar=metavar)


def option_values(cls: type, values: argparse.Namespace | Mapping[str, object]) -> dict[str, object]:
    """``{field: value}`` of ``cls``'s options read from parsed arguments (or a mapping).

    Options missing from ``values`` are left out (the dataclass's defaults then apply).
    """
    source = vars(values) if isinstance(values, argparse.Namespace) else values
    return {opt.name: source[opt.name] for opt in options_of(cls) if opt.name in source}


def make(cls: Callable[..., T], values: Mapping[str, object], **fixed: object) -> T:
    """``cls(**values, **fixed)``: a settings object from option values (the dataclass checks them).

    Raises
    ------
    ValueError
        A value the dataclass refuses, or a name it does not have.
    """
    try:
        return cls(**{**values, **fixed})
    except TypeError as exc:  # an unknown keyword
        raise ValueError(str(exc)) from None
