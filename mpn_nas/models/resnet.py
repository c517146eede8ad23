"""Multi-path ResNet: a stem of ``p`` parallel convolutions on the image, stages of routed basic
blocks, per-path pooled features concatenated before the classifier."""
from __future__ import annotations

import torch
from torch import nn

from ..arch import Arch
from ..layers import BLOCK_KINDS, MultiPathStem, PathConcatClassifier


class MultiPathResNet(nn.Module):
    """``(B, in_channels, H, W)`` images -> ``(B, num_classes)`` logits."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.stem = MultiPathStem(arch.in_channels, arch.stem_width, arch.stages[0].paths)
        blocks, channels, paths = [], arch.stem_width, arch.stages[0].paths
        for stage in arch.stages:
            for index in range(stage.blocks):
                block = BLOCK_KINDS[stage.block]
                blocks.append(block(channels, stage.width, stage.paths, paths, stage.routing, stage.density,
                                    stage.stride if index == 0 else 1, stage.se))
                channels, paths = stage.width, stage.paths
        self.blocks = nn.Sequential(*blocks)
        self.head = PathConcatClassifier(channels, paths, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))  # (B, p, C, H, W) between stem and head
