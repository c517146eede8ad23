"""The limits table: closed-form cost of a document, refusals before anything is built, flag ranges."""
import argparse
import json

import pytest
import torch
from torch import nn

from helpers import EXAMPLE_ARCHS, REPO, arch_doc
from mpn_nas import Arch, ArchError, build_model
from mpn_nas.complexity import count_params_and_flops
from mpn_nas.limits import (LIMITS, MAX_MEMORY_ENV, check_training, estimate, flag_type, gpu_list,
                            limits_table_markdown, max_memory, max_memory_set, parse_size)

EXAMPLES = sorted(EXAMPLE_ARCHS.glob("*.json"))


def _saved_for_backward(model: nn.Module, x: torch.Tensor) -> int:
    """Values a training forward pass keeps for the backward pass (parameters excluded)."""
    params = {p.data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        if tensor.data_ptr() not in params:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(storages.values())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_estimate_matches_the_built_model(path):
    arch = Arch.from_json(path)
    cost = estimate(arch)
    model = build_model(arch).train()
    measured_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert measured_bytes / 2 <= cost.memory_bytes() - 4 * cost.activations <= 2 * measured_bytes
    assert cost.params == sum(p.numel() for p in model.parameters())  # exact, not just within 2x
    assert cost.flops == count_params_and_flops(arch)[1]
    batch = 4
    saved = _saved_for_backward(model, torch.randn(batch, arch.in_channels, arch.input_size, arch.input_size))
    assert saved / 2 <= cost.activations * batch <= 2 * saved


def test_readme_holds_the_limits_table():
    assert limits_table_markdown() in (REPO / "README.md").read_text()


def _stage(**changes):
    return [dict(arch_doc()["stages"][0], **changes)]


OVER_THE_LIMIT = [
    (dict(stages=_stage(paths=100_000)), "stages[0].paths"),
    (dict(stages=_stage(blocks=10_000_000)), "stages[0].blocks"),
    (dict(stages=_stage(width=10 ** 9)), "stages[0].width"),
    (dict(stem_width=5000), "stem_width"),
    (dict(in_channels=65), "in_channels"),
    (dict(input_size=2048), "input_size"),
    (dict(num_classes=10 ** 6), "num_classes"),
    (dict(family="ensemble", ensemble_size=33), "ensemble_size"),
    (dict(stages=_stage() * 33), "stages"),
    (dict(stages=_stage(width=4096, paths=64)), "FLOPs"),
]


@pytest.mark.parametrize("changes,field", OVER_THE_LIMIT, ids=[field for _, field in OVER_THE_LIMIT])
def test_documents_over_the_limits_are_refused_before_any_module_is_built(changes, field, monkeypatch):
    def no_modules(*args, **kwargs):
        raise AssertionError("a module was built before the document was refused")

    monkeypatch.setattr(nn.Module, "__init__", no_modules)
    with pytest.raises(ArchError, match=field.replace("[", r"\[").replace("]", r"\]")) as refused:
        Arch.from_dict(arch_doc(**changes))
    assert "\n" not in str(refused.value)


def test_memory_limit_is_the_machines_by_default_and_max_memory_changes_it(monkeypatch):
    monkeypatch.delenv(MAX_MEMORY_ENV, raising=False)
    cifar = json.loads((EXAMPLE_ARCHS / "cifar10_routed.json").read_text())
    needed = estimate(Arch.from_dict(cifar)).memory_bytes()
    with max_memory_set(needed - 1):
        with pytest.raises(ArchError, match="raise --max-memory"):
            Arch.from_dict(cifar)
    assert MAX_MEMORY_ENV not in __import__("os").environ  # restored
    assert Arch.from_dict(cifar) and max_memory() > needed


def test_training_memory_counts_the_batch():
    arch = Arch.from_json(EXAMPLE_ARCHS / "cifar10_routed.json")
    check_training(arch, 64)
    with pytest.raises(Exception, match="batch size 65536.*--batch-size"):
        check_training(arch, 65536)


@pytest.mark.parametrize("space,fragment", [
    ({"widths": [[4, 8], [8, 100_000]]}, "'widths[1]'"),
    ({"path_counts": [1, 65]}, "'path_counts'"),
    ({"blocks": [1, 10 ** 7]}, "'blocks'"),
    ({"widths": [[4, 8], [8, 4096]], "path_counts": [1, 64], "blocks": [1, 64]}, "largest architecture"),
])
def test_space_configs_with_enormous_candidates_are_refused(space, fragment):
    from mpn_nas.errors import UserError
    from search_spaces.config import load_config

    with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_config("resnet", space)


@pytest.mark.parametrize("flag,bad,good", [
    ("--port", ["0", "70000", "http"], ("8080", 8080)),
    ("--lr", ["-1", "0", "nan", "inf", "11"], ("0.1", 0.1)),
    ("--weight-decay", ["-1e-4", "2"], ("0", 0.0)),
    ("--batch-size", ["0", "1.5", "100000"], ("32", 32)),
    ("--epochs", ["0", "-3"], ("5", 5)),
    ("--trials", ["0", "10000000"], ("8", 8)),
    ("--concurrency", ["0", "5000"], ("2", 2)),
    ("--seed", ["-1", str(2 ** 32)], ("7", 7)),
    ("--max-params", ["0", "-5"], ("30000", 30000)),
    ("--max-latency-ms", ["0", "nan"], ("2.5", 2.5)),
])
def test_numeric_flags_are_range_checked(flag, bad, good):
    check = flag_type(flag)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            check(text)
    assert check(good[0]) == good[1]
    assert LIMITS[flag].describe() in str(pytest.raises(argparse.ArgumentTypeError, check, bad[0]).value)


def test_gpu_indices_and_sizes():
    assert gpu_list("0") == [0] or torch.cuda.device_count() == 0
    for text in ("-1", "0,0", "x", "", "2000"):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu_list(text)
    assert parse_size("8G") == 8 * 2 ** 30 and parse_size("512MiB") == 512 * 2 ** 20 and parse_size("1000") == 1000
    for text in ("0", "-1G", "lots", "1.5X"):
        with pytest.raises(ValueError):
            parse_size(text)


def test_corrupt_image_error_from_a_loader_worker_keeps_one_line():
    from mpn_nas.data import CorruptImageError

    worker_text = ("Caught CorruptImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                   "last):\n  File \"x.py\", line 1\nmpn_nas.data.CorruptImageError: image /d/a/1.png cannot be read "
                   "(truncated); remove or replace it\n")
    assert str(CorruptImageError(worker_text)) == "image /d/a/1.png cannot be read (truncated); remove or replace it"


def test_help_shows_each_flags_range_from_the_table(capsys):
    from mpn_nas.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--port", "--lr", "--trials", "--concurrency"):
        assert f"(allowed: {LIMITS[flag].describe()})" in help_text, flag
    assert "--max-memory SIZE" in help_text


def test_gpu_indices_beyond_the_visible_gpus_are_refused(monkeypatch):
    import mpn_nas.limits as limits

    monkeypatch.setattr(limits, "_visible_gpus", lambda: 2)
    assert gpu_list("0,1") == [0, 1]
    with pytest.raises(argparse.ArgumentTypeError, match="GPU 2 does not exist; this machine shows 2"):
        gpu_list("1,2")
