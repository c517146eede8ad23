"""Multi-path MLP: a stem of ``p`` parallel dense layers on the flattened input, stages of routed
multi-path dense layers, per-path features concatenated before the classifier."""
from __future__ import annotations

import torch
from torch import nn

from ..arch import Arch
from ..layers import MultiPathLinear


class MultiPathMLP(nn.Module):
    """``(B, in_channels, H, W)`` (flattened inside) -> ``(B, num_classes)`` logits."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        in_features = arch.in_channels * arch.input_size ** 2
        # Per-path stem, as in the ResNet: a shared stem would give the first router identical inputs.
        self.stem_paths = arch.stages[0].paths
        stem_features = self.stem_paths * arch.stem_width
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_features, stem_features),
                                  nn.BatchNorm1d(stem_features), nn.ReLU(inplace=True))
        layers, features, paths = [], arch.stem_width, self.stem_paths
        for stage in arch.stages:
            for _ in range(stage.blocks):
                layers.append(MultiPathLinear(features, stage.width, stage.paths, stage.routing, stage.density,
                                              in_paths=paths))
                features, paths = stage.width, stage.paths
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(paths * features, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x.view(x.shape[0], self.stem_paths, -1)  # (B, p, C); not unflatten, for ONNX's tracer
        return self.head(self.blocks(x).flatten(1))
