"""Networks assembled from the blocks in :mod:`mpn_nas.layers`, built from one architecture document."""
from __future__ import annotations

from torch import nn

from ..arch import Arch
from .ensemble import Ensemble
from .mlp import MultiPathMLP
from .resnet import MultiPathResNet

_FAMILIES = {"resnet": MultiPathResNet, "mlp": MultiPathMLP}


def build_model(arch: Arch) -> nn.Module:
    """The plain PyTorch network an architecture document describes."""
    if arch.family == "ensemble":
        return Ensemble([_FAMILIES[arch.member_family](arch.member) for _ in range(arch.ensemble_size)])
    return _FAMILIES[arch.family](arch)


__all__ = ["build_model", "MultiPathResNet", "MultiPathMLP", "Ensemble"]
