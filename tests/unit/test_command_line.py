"""The command line as a new user meets it: --debug anywhere, unmet GPU requests answered before any
work, retrain following the training record of a search."""
import argparse

import pytest

from helpers import EXAMPLE_ARCHS, assert_refused, recorded_arch
from mpn_nas import Arch
from mpn_nas.cli import build_parser, main
from mpn_nas.errors import UserError
from mpn_nas.recipe import RECIPE_FIELDS, recorded_training, with_training_record
from mpn_nas.training import TrainConfig

SINGLE = str(EXAMPLE_ARCHS / "digits_single.json")


@pytest.mark.parametrize("argv, fragment", [
    (["profile", SINGLE, "--device", "cuda"], "--device cuda"),
    (["retrain", SINGLE, "--device", "cuda", "--out", "{tmp}/r"], "--device cuda"),
    (["search", "--device", "cuda", "--out", "{tmp}/s"], "--device cuda"),
    (["search", "--engine", "ts", "--gpus", "0", "--out", "{tmp}/s"], "--gpus 0"),
    (["trial", "--device", "cuda"], "--device cuda"),
])
def test_unmet_gpu_requests_are_one_line_before_any_work(cli, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.setattr("mpn_nas.devices.visible_gpu_count", lambda: 0)  # no GPU visible, on any machine
    assert_refused(cli(*argv), fragment, "no CUDA GPU is visible")
    assert not list(tmp_path.iterdir())  # nothing written, no NNI manager started


@pytest.mark.parametrize("argv, fragment", [
    (["search", "--strategy", "bayes"], "unknown strategy"),
    (["search", "--dataset", "mnist"], "unknown dataset"),
    (["search", "--max-params", "100"], "smallest"),
    (["search", "--engine", "cluster"], "unknown engine"),
])
def test_search_rejects_bad_input_before_work(cli, tmp_path, argv, fragment):
    assert_refused(cli(*argv, "--out", "{tmp}/s"), fragment)
    assert not (tmp_path / "s").exists()


def test_debug_is_accepted_after_the_subcommand(cli, capsys, tmp_path):
    assert main(["profile", SINGLE, "--debug"]) == 0 and "params" in capsys.readouterr().out
    # With --debug a bad input raises (its traceback is shown), after the subcommand as before it, and is no
    # parse error (argparse would exit with status 2).
    missing = str(tmp_path / "none.json")
    for argv in (["retrain", missing, "--out", "{tmp}/o", "--debug"], ["--debug", "retrain", missing, "--out", "{tmp}/o"]):
        with pytest.raises(UserError, match="not found"):
            cli(*argv)
    assert_refused(cli("retrain", missing, "--out", "{tmp}/o"), "not found")


def test_retrain_refuses_a_dataset_of_another_shape_than_the_recorded_one(cli, tmp_path):
    from PIL import Image

    path = tmp_path / "best_arch.json"
    recorded_arch().to_json(path)  # 1x8x8 inputs, 10 classes
    for label in ("a", "b"):  # a folder of 2 classes
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), index * 60).save(tmp_path / "images" / label / f"{index}.png")
    assert_refused(cli("retrain", str(path), "--dataset", "imagefolder:{tmp}/images", "--out", "{tmp}/o"),
                   "architecture expects 1x8x8 inputs and 10 classes", "has 1x8x8 and 2")
    assert not (tmp_path / "o").exists()


def _retrain_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["retrain", *argv])


def test_retrain_takes_dataset_and_recipe_from_the_record_unless_given(tmp_path):
    from mpn_nas.cli import apply_training_record
    from mpn_nas.recipe import training_config as train_config

    path = tmp_path / "best_arch.json"
    recorded_arch().to_json(path)
    args = _retrain_args(str(path), "--out", str(tmp_path / "o"))
    line = apply_training_record(args, Arch.from_json(path))
    config = train_config(args)
    assert args.dataset == "digits-contexts" and "on digits-contexts" in line and "best_arch.json" in line
    assert (config.lr, config.batch_size, config.seed, config.weight_decay) == (0.02, 32, 7, 1e-3)
    given = _retrain_args(str(path), "--out", "o", "--dataset", "digits", "--lr", "0.1")
    apply_training_record(given, Arch.from_json(path))
    assert given.dataset == "digits" and train_config(given).lr == 0.1 and train_config(given).batch_size == 32
    plain = _retrain_args(SINGLE, "--out", "o")
    line = apply_training_record(plain, Arch.from_json(SINGLE))
    assert plain.dataset == "digits" and train_config(plain) == TrainConfig() and "records no training" in line


def test_training_record_is_checked_against_the_architecture():
    arch = recorded_arch()
    record = recorded_training(arch, "a.json")
    assert record["dataset"] == "digits-contexts" and set(record["recipe"]) == set(RECIPE_FIELDS)
    assert record["shape"] == {"in_channels": 1, "input_size": 8, "num_classes": 10}
    wrong = with_training_record(arch, dict(record, shape={"in_channels": 3, "input_size": 32, "num_classes": 10}))
    with pytest.raises(UserError, match="does not match the architecture"):
        recorded_training(wrong, "a.json")
    assert Arch.from_json(arch.to_json()) == arch and recorded_training(Arch.from_json(arch.to_json()), "a") == record


def test_artifacts_get_the_modes_of_ordinary_files(tmp_path):
    import os

    from mpn_nas.files import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o002)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o664
