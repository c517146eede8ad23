"""Multi-path MLP: a stem of ``p`` parallel dense layers on the flattened input, stages of routed
multi-path dense layers, per-path features concatenated before the classifier."""
from __future__ import annotations

import torch
from torch import nn

from ..arch import Arch
from ..layers import MultiPathDenseStem, MultiPathLinear, PathConcatClassifier


class MultiPathMLP(nn.Module):
    """``(B, in_channels, H, W)`` (flattened inside) -> ``(B, num_classes)`` logits."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        in_features = arch.in_channels * arch.input_size ** 2
        self.stem = MultiPathDenseStem(in_features, arch.stem_width, arch.stages[0].paths)
        layers, features, paths = [], arch.stem_width, arch.stages[0].paths
        for stage in arch.stages:
            for _ in range(stage.blocks):
                layers.append(MultiPathLinear(features, stage.width, stage.paths, stage.routing, stage.density,
                                              in_paths=paths))
                features, paths = stage.width, stage.paths
        self.blocks = nn.Sequential(*layers)
        self.head = PathConcatClassifier(features, paths, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))  # (B, p, C) between stem and head
