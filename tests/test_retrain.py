import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import EXAMPLE_ARCHS, arch_doc, assert_clean_error, run_cli
from mpn_nas import Arch, build_model
from mpn_nas.checkpoint import load_model, save_model
from mpn_nas.data import make_data
from mpn_nas.errors import UserError


def _block_nni(tmp_path):
    """A PYTHONPATH entry whose ``nni`` package fails to import, as if nni were not installed."""
    fake = tmp_path / "no_nni" / "nni"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('nni is not installed here')\n")
    return {"PYTHONPATH": str(fake.parent)}


@pytest.mark.slow
def test_retrain_reaches_95_percent_on_digits_without_nni(tmp_path):
    out = tmp_path / "run"
    result = run_cli("retrain", str(EXAMPLE_ARCHS / "digits_routed.json"), "--dataset", "digits", "--epochs", "15",
                     "--out", str(out), "--device", "cpu", "--quiet", env=_block_nni(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95, metrics
    assert {"test_accuracy", "val_accuracy", "params", "flops", "epochs"} <= set(metrics)
    arch, model = load_model(out / "model.pt")
    assert arch == Arch.from_json(EXAMPLE_ARCHS / "digits_routed.json")
    assert metrics["params"] == sum(p.numel() for p in model.parameters())


def test_nni_is_really_blocked(tmp_path):
    env = _block_nni(tmp_path)
    result = run_cli("profile", str(EXAMPLE_ARCHS / "digits_single.json"), env=env)
    assert result.returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import nni"], env={**os.environ, **env},
                           capture_output=True)
    assert probe.returncode != 0


def test_import_mpn_nas_does_not_import_nni():
    code = "import sys, mpn_nas, mpn_nas.cli, mpn_nas.training; assert 'nni' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_model_file_round_trip_and_foreign_files(tmp_path):
    arch = Arch.from_dict(arch_doc())
    model = build_model(arch).eval()
    save_model(tmp_path / "model.pt", arch, model)
    loaded_arch, loaded = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 1, 8, 8)
    assert loaded_arch == arch
    torch.testing.assert_close(loaded(x), model(x))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an mpn-nas model"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="not an mpn-nas model"):
        load_model(tmp_path / "text.pt")


def test_digits_split_is_seeded_and_disjoint():
    a, b = make_data("digits", seed=3), make_data("digits", seed=3)
    assert a.train_set.indices == b.train_set.indices
    splits = [set(a.train_set.indices), set(a.val_set.indices), set(a.test_set.indices)]
    assert sum(map(len, splits)) == 1797 and len(set.union(*splits)) == 1797
    assert make_data("digits", seed=4).train_set.indices != a.train_set.indices


def test_retrain_rejects_mismatched_data_and_unknown_dataset(tmp_path):
    cifar_arch = str(EXAMPLE_ARCHS / "cifar10_routed.json")
    assert_clean_error(run_cli("retrain", cifar_arch, "--dataset", "digits", "--out", str(tmp_path / "a")), 2,
                       "architecture expects")
    assert_clean_error(run_cli("retrain", cifar_arch, "--dataset", "mnist", "--out", str(tmp_path / "b")), 2,
                       "unknown dataset")
    assert_clean_error(run_cli("retrain", cifar_arch, "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"),
                               "--out", str(tmp_path / "c")), 2, "--download")


def test_routers_train_in_their_own_group_without_weight_decay():
    from mpn_nas.training import TrainConfig, parameter_groups

    model = build_model(Arch.from_dict(arch_doc()))
    config = TrainConfig(lr=0.1, weight_decay=1e-3, router_lr_scale=5.0)
    others, routers = parameter_groups(model, config)
    router_params = {id(p) for name, p in model.named_parameters() if ".router." in name}
    assert {id(p) for p in routers["params"]} == router_params and router_params
    assert routers["weight_decay"] == 0.0 and routers["lr"] == pytest.approx(0.5)
    assert others["weight_decay"] == 1e-3 and not router_params & {id(p) for p in others["params"]}
    assert len(routers["params"]) + len(others["params"]) == len(list(model.parameters()))
    with pytest.raises(UserError, match="router-lr-scale"):
        TrainConfig(router_lr_scale=0)


def test_glibc_accepts_the_cpu_allocator_settings():
    import platform

    from mpn_nas import cpu_allocator

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    # mallopt rejects (returns 0 for) a threshold above glibc's maximum: the settings must be accepted.
    assert cpu_allocator.keep_freed_memory() is expected
    assert cpu_allocator.keep_freed_memory() is expected  # idempotent
