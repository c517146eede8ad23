"""Exported models (ONNX, torch.export) compute what the PyTorch network computes."""
import pytest
import torch

from helpers import EXAMPLE_ARCHS
from mpn_nas import Arch, build_model
from mpn_nas.export import export_model, run_exported


@pytest.mark.parametrize("example", ["digits_routed.json", "digits_mlp_routed.json"])
def test_export_round_trip_gives_the_same_outputs(tmp_path, example):
    arch = Arch.from_json(EXAMPLE_ARCHS / example)
    model = build_model(arch).eval()
    with torch.no_grad():  # make batch norm statistics non-trivial
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(5, 1, 8, 8)
    expected = model(images).detach()
    for fmt in ("onnx", "pt2"):
        path = export_model(model, arch, fmt, tmp_path / f"model.{fmt}")
        torch.testing.assert_close(run_exported(path, images), expected, rtol=1e-4, atol=1e-5)
