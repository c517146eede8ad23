"""Networks assembled from the blocks in :mod:`mpn_nas.layers`, built from one architecture document."""
from __future__ import annotations

from torch import nn

from ..arch import Arch
from .ensemble import Ensemble
from .mlp import MultiPathMLP
from .resnet import MultiPathResNet

FAMILY_SKELETONS = {"resnet": MultiPathResNet, "mlp": MultiPathMLP}  # by MEMBER_FAMILIES of mpn_nas.arch


def build_model(arch: Arch) -> nn.Module:
    """The plain PyTorch network an architecture document describes."""
    if arch.family == "ensemble":
        return Ensemble([FAMILY_SKELETONS[arch.member_family](arch.member) for _ in range(arch.ensemble_size)])
    return FAMILY_SKELETONS[arch.family](arch)


__all__ = ["build_model", "MultiPathResNet", "MultiPathMLP", "Ensemble"]
