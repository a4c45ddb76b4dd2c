"""The one table of options: the CLI flags and the Train widget's form come from the settings' fields."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from napari_regional_mil.cli import build_parser
from napari_regional_mil.cli._train_options import (
    model_config_from_args,
    train_config_from_args,
)
from napari_regional_mil.errors import TrainingError
from napari_regional_mil.options import (
    add_options,
    make,
    option,
    option_values,
    options_of,
)
from napari_regional_mil.settings import ModelConfig, SelectionConfig, TrainConfig
from napari_regional_mil.training.workflow import ModelOptions

_REQUIRED = ["--labels", "x.csv", "--cache", "c", "--out", "m.safetensors"]


def _train_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *_REQUIRED, *extra])


def test_every_option_is_a_flag_of_train_and_crossval_with_the_settings_default():
    parser = build_parser()
    for command, extra in (("train", ["--out", "m.safetensors"]), ("crossval", [])):
        args = parser.parse_args([command, "--labels", "x.csv", "--cache", "c", *extra])
        for cls in (ModelConfig, SelectionConfig, TrainConfig):
            for opt in options_of(cls):
                assert getattr(args, opt.name) == opt.default, (command, opt.name)
    # the defaults build the library's settings (threads: the front ends' 1, not torch's own)
    args = _train_args()
    assert train_config_from_args(args) == TrainConfig(threads=1)
    assert model_config_from_args(args, input_dim=7, n_classes=3) == ModelConfig(input_dim=7, n_classes=3)


def test_flags_set_the_fields_they_name():
    args = _train_args("--model", "abmil", "--lr", "0.01", "--no-all-regions", "--neighbours", "3",
                       "--selection", "random", "--class-weights", "balanced", "--threads", "4")
    config = model_config_from_args(args, input_dim=5, n_classes=2)
    assert (config.model_type, config.all_regions, config.selection.n_neighbours) == ("abmil", False, 3)
    assert config.selection.strategy == "random"
    train = train_config_from_args(args)
    assert (train.learning_rate, train.class_weights, train.threads) == (0.01, "balanced", 4)
    with pytest.raises(SystemExit):  # argparse refuses a value outside the choices
        _train_args("--schedule", "linear")


def test_a_refused_combination_is_one_training_error():
    with pytest.raises(TrainingError, match=r"invalid option: .*min_patches <= max_patches"):
        model_config_from_args(_train_args("--min-patches", "50", "--max-patches", "10"), input_dim=4, n_classes=2)
    with pytest.raises(TrainingError, match=r"invalid option: .*val_fraction"):
        train_config_from_args(_train_args("--val-fraction", "1.5"))


def test_model_options_hold_only_model_config_options():
    options = ModelOptions.from_values({"model_type": "mean", "hidden_dim": 32, "min_patches": 2, "max_patches": 9,
                                        "epochs": 3})
    assert options.model == {"model_type": "mean", "hidden_dim": 32} and options.model_type == "mean"
    assert (options.selection.min_patches, options.selection.max_patches) == (2, 9)
    assert ModelOptions().model_type == "regional"
    with pytest.raises(ValueError, match="unknown model options \\['input_dim'\\]"):
        ModelOptions(model={"input_dim": 3})


@dataclass(frozen=True)
class _Demo:
    """A settings class with one option of each kind, as a future option would be added."""

    not_an_option: int = 3
    depth: int = field(default=2, metadata=option("layers", low=1, high=9, gui=True))
    rate: float = field(default=0.25, metadata=option("a rate", flag="--the-rate", decimals=2, gui=True))
    mode: Literal["a", "b"] = field(default="b", metadata=option("a mode", gui=True))
    flag_on: bool = field(default=True, metadata=option("on by default", negated_flag="--no-flag-on", gui=True))
    flag_off: bool = field(default=False, metadata=option("off by default", gui=True))


def test_adding_a_field_adds_the_flag():
    parser = argparse.ArgumentParser()
    add_options(parser, _Demo, title="demo")
    assert [o.name for o in options_of(_Demo)] == ["depth", "rate", "mode", "flag_on", "flag_off"]
    args = parser.parse_args([])
    assert make(_Demo, option_values(_Demo, args)) == _Demo()
    args = parser.parse_args(["--depth", "5", "--the-rate", "0.5", "--mode", "a", "--no-flag-on", "--flag-off"])
    assert make(_Demo, option_values(_Demo, args)) == _Demo(depth=5, rate=0.5, mode="a", flag_on=False, flag_off=True)
    with pytest.raises(ValueError, match="unexpected keyword"):
        make(_Demo, {"nope": 1})


def test_adding_a_field_adds_the_widget(qtbot):
    from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

    from napari_regional_mil._widgets._train_fields import OptionForm

    form = OptionForm("demo", _Demo)
    qtbot.addWidget(form)
    assert isinstance(form.depth, QSpinBox) and (form.depth.minimum(), form.depth.maximum()) == (1, 9)
    assert isinstance(form.rate, QDoubleSpinBox) and form.rate.decimals() == 2
    assert isinstance(form.mode, QComboBox) and [form.mode.itemText(i) for i in range(2)] == ["a", "b"]
    assert isinstance(form.flag_on, QCheckBox) and form.flag_on.isChecked() and not form.flag_off.isChecked()
    assert form.depth.toolTip() == "Layers."
    assert make(_Demo, form.values()) == _Demo()
    form.depth.setValue(7)
    form.mode.setCurrentText("a")
    assert make(_Demo, form.values()) == _Demo(depth=7, mode="a")


def test_the_train_widget_form_and_the_cli_build_the_same_settings(qtbot):
    from napari_regional_mil._widgets._train_fields import ModelFields, OptimFields

    model, optim = ModelFields(), OptimFields()
    qtbot.addWidget(model)
    qtbot.addWidget(optim)
    args = _train_args()
    assert optim.train_config() == train_config_from_args(args)
    cli = model_config_from_args(args, input_dim=6, n_classes=2)
    gui = model.options()
    assert make(ModelConfig, gui.model, input_dim=6, n_classes=2, selection=gui.selection) == cli
    shown = {o.name for cls in (ModelConfig, SelectionConfig, TrainConfig) for o in options_of(cls) if o.spec.gui}
    assert shown == {*model.values(), *optim.values()}  # every gui=True option, and only those
    optim.epochs.setValue(3)
    model.hidden_dim.setValue(48)
    assert optim.train_config().epochs == 3 and model.options().model["hidden_dim"] == 48
