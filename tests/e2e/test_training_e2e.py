import json
import os
import subprocess
import sys

import pytest

from helpers import EXAMPLE_ARCHS, block_nni, run_cli
from mpn_nas import Arch
from mpn_nas.checkpoint import load_model


@pytest.mark.slow
def test_retrain_reaches_95_percent_on_digits_without_nni(tmp_path):
    out = tmp_path / "run"
    result = run_cli("retrain", str(EXAMPLE_ARCHS / "digits_routed.json"), "--dataset", "digits", "--epochs", "15",
                     "--out", str(out), "--device", "cpu", "--quiet", env=block_nni(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95, metrics
    assert {"test_accuracy", "val_accuracy", "params", "flops", "epochs"} <= set(metrics)
    arch, model = load_model(out / "model.pt")
    assert arch == Arch.from_json(EXAMPLE_ARCHS / "digits_routed.json")
    assert metrics["params"] == sum(p.numel() for p in model.parameters())


def test_nni_is_really_blocked(tmp_path):
    env = block_nni(tmp_path)
    result = run_cli("profile", str(EXAMPLE_ARCHS / "digits_single.json"), env=env)
    assert result.returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import nni"], env={**os.environ, **env},
                           capture_output=True)
    assert probe.returncode != 0


def test_import_mpn_nas_does_not_import_nni():
    code = "import sys, mpn_nas, mpn_nas.cli, mpn_nas.training; assert 'nni' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
