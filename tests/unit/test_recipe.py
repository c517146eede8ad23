"""The one training recipe: retrain, search and trial read the same options and train alike."""
import logging
import warnings
from dataclasses import fields

import pytest
import torch

from helpers import EXAMPLE_ARCHS
from mpn_nas import Arch
from mpn_nas.checkpoint import load_model
from mpn_nas.cli import build_parser, main
from mpn_nas.recipe import RECIPE_FIELDS, SETTINGS, TrainConfig, flag_of, training_config

RECIPE = ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.001", "--router-lr-scale", "3",
          "--label-smoothing", "0.05", "--batch-size", "96", "--seed", "5", "--device", "cpu"]


def test_every_training_command_takes_every_setting_of_the_recipe():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    distributed = {spec.name for spec in fields(TrainConfig) if spec.metadata["distributed"]}
    for name in ("retrain", "search", "trial"):
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        takes = set(SETTINGS) if name == "retrain" else set(SETTINGS) - distributed  # trials run on one device
        assert {flag_of(setting) for setting in takes} <= flags, name
    args = parser.parse_args(["trial", "--epochs", "1", *RECIPE])
    assert training_config(args) == TrainConfig(epochs=1, optimizer="adamw", lr=0.01, weight_decay=0.001,
                                                router_lr_scale=3.0, label_smoothing=0.05, batch_size=96, seed=5,
                                                device="cpu")
    assert distributed == {"devices", "distributed", "num_nodes", "sync_batchnorm"}
    assert set(RECIPE_FIELDS) == set(SETTINGS) - {"epochs", "device"} - distributed


def test_a_trial_and_a_retrain_of_one_architecture_reach_the_same_weights(tmp_path):
    from strategies.evaluation import train_trial

    arch_file = EXAMPLE_ARCHS / "digits_routed.json"
    out = tmp_path / "retrain"
    assert main(["retrain", str(arch_file), "--epochs", "1", *RECIPE, "--out", str(out), "--quiet"]) == 0
    _, retrained = load_model(out / "model.pt")
    config = training_config(build_parser().parse_args(["trial", "--epochs", "1", *RECIPE]))
    trial_model, _ = train_trial(Arch.from_json(arch_file), config, dataset="digits")
    expected, got = retrained.state_dict(), trial_model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    # and a different recipe really trains differently (the comparison above can fail)
    other, _ = train_trial(Arch.from_json(arch_file), TrainConfig(**{**config.__dict__, "lr": 0.02}), dataset="digits")
    assert not all(torch.equal(expected[name], other.state_dict()[name]) for name in expected)


def test_train_leaves_the_process_as_it_found_it(monkeypatch):
    import mpn_nas.cpu_allocator as cpu_allocator
    import mpn_nas.process as process
    from mpn_nas.data import make_data
    from mpn_nas.training import train

    allocator_calls = []
    monkeypatch.setattr(cpu_allocator, "keep_freed_memory", lambda: allocator_calls.append(1))
    monkeypatch.setattr(process, "keep_freed_memory", lambda: allocator_calls.append(1))
    arch = Arch.from_json(EXAMPLE_ARCHS / "digits_single.json")
    data = make_data("digits", batch_size=256)
    loggers = process.LIGHTNING_LOGGERS
    with warnings.catch_warnings():
        filters = list(warnings.filters)
        levels = [logging.getLogger(name).level for name in loggers]
        train(arch, data, TrainConfig(epochs=1, batch_size=256, device="cpu"), progress=False)
        assert warnings.filters == filters
    assert [logging.getLogger(name).level for name in loggers] == levels
    assert allocator_calls == []
    process.configure_process()  # the entry points' call does change them: the checks above can fail
    assert allocator_calls == [1]


@pytest.mark.parametrize("bad, message", [
    (dict(optimizer="rmsprop"), "unknown optimizer"), (dict(lr=0.0), "--lr"), (dict(label_smoothing=1.0),
                                                                                "--label-smoothing"),
    (dict(device="tpu"), "unknown device"), (dict(batch_size=0), "--batch-size"),
])
def test_bad_settings_are_refused_in_one_line_naming_them(bad, message):
    from mpn_nas.errors import UserError

    with pytest.raises(UserError, match=message):
        TrainConfig(**bad)
