"""Residual blocks built from multi-path layers."""
from __future__ import annotations

import torch
from torch import nn

from .multipath import MultiPathConv2d, MultiPathSqueezeExcitation


class MultiPathBasicBlock(nn.Module):
    """ResNet basic block on ``p`` paths: router at the block input, two 3x3 grouped convs, optional
    per-path squeeze-excitation, and a per-path residual from the routed input.

    ``(B, in_paths, in_channels, H, W)`` -> ``(B, path_count, width, H/stride, W/stride)``.
    Subclasses swap the first convolution (``first_conv``: anything with ``mix`` and ``parallel_forward``,
    see :mod:`mpn_nas.layers.adaptive`); ``channel_divisor`` is what ``in_channels`` must divide by.
    """

    first_conv: type[nn.Module] = MultiPathConv2d
    channel_divisor = 1
    about = "two 3x3 convolutions per path (the default)"

    def __init__(self, in_channels: int, width: int, path_count: int, in_paths: int, routing: str,
                 density: float = 1.0, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.conv1 = self.first_conv(in_channels, width, path_count, routing, density, stride=stride,
                                     in_paths=in_paths)
        self.conv2 = MultiPathConv2d(width, width, path_count, "none", activation=False)
        self.se = MultiPathSqueezeExcitation(width, path_count) if se else nn.Identity()
        if stride != 1 or in_channels != width:
            self.shortcut = MultiPathConv2d(in_channels, width, path_count, "none", kernel_size=1, stride=stride,
                                            activation=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routed = self.conv1.mix(x)
        out = self.se(self.conv2(self.conv1.parallel_forward(routed)))
        return torch.relu(out + self.shortcut(routed))

