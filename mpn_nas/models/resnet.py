"""Multi-path ResNet: a stem of ``p`` parallel convolutions on the image, stages of routed basic
blocks, per-path pooled features concatenated before the classifier."""
from __future__ import annotations

import torch
from torch import nn

from ..arch import Arch
from ..layers import MultiPathBasicBlock


class MultiPathResNet(nn.Module):
    """``(B, in_channels, H, W)`` images -> ``(B, num_classes)`` logits."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        # One stem convolution per path (a single conv with p * stem_width outputs): were the stem
        # shared and copied to every path, the first router would mix identical tensors and learn nothing.
        self.stem_paths = arch.stages[0].paths
        stem_channels = self.stem_paths * arch.stem_width
        self.stem = nn.Sequential(nn.Conv2d(arch.in_channels, stem_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True))
        blocks, channels, paths = [], arch.stem_width, self.stem_paths
        for stage in arch.stages:
            for index in range(stage.blocks):
                blocks.append(MultiPathBasicBlock(channels, stage.width, stage.paths, paths, stage.routing,
                                                  stage.density, stage.stride if index == 0 else 1, stage.se))
                channels, paths = stage.width, stage.paths
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(paths * channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        # view with the traced batch size, not unflatten: ONNX's tracer would freeze unflatten's sizes.
        x = x.view(x.shape[0], self.stem_paths, -1, *x.shape[2:])  # (B, p, C, H, W)
        x = self.blocks(x)
        return self.head(x.mean(dim=(3, 4)).flatten(1))
