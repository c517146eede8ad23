"""The two ends of a multi-path network: per-path stems that split one input into ``p`` parallel
tensors, and the classifier that merges the paths again.

Each is a plain module (``nn.Sequential``/``nn.Linear`` subclasses, so their state-dict keys are those
of the layers they hold) and a searchable primitive in :mod:`search_spaces`.
"""
from __future__ import annotations

import torch
from torch import nn


class MultiPathStem(nn.Sequential):
    """``path_count`` parallel 3x3 conv-BN-ReLU stems, run as one conv with ``path_count * width`` outputs.

    ``(B, in_channels, H, W)`` -> ``(B, path_count, width, H, W)``. One stem per path: were one stem
    copied to every path, the first router would mix identical tensors and get no gradient.
    """

    def __init__(self, in_channels: int, width: int, path_count: int) -> None:
        channels = path_count * width
        super().__init__(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))
        self.path_count = path_count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        # view with the traced batch size, not unflatten: ONNX's tracer would freeze unflatten's sizes.
        return x.view(x.shape[0], self.path_count, -1, *x.shape[2:])


class MultiPathDenseStem(nn.Sequential):
    """``path_count`` parallel dense stems on the flattened input, as one linear layer.

    ``(B, C, H, W)`` or ``(B, in_features)`` -> ``(B, path_count, width)``.
    """

    def __init__(self, in_features: int, width: int, path_count: int) -> None:
        features = path_count * width
        super().__init__(nn.Flatten(), nn.Linear(in_features, features), nn.BatchNorm1d(features),
                         nn.ReLU(inplace=True))
        self.path_count = path_count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x.view(x.shape[0], self.path_count, -1)  # not unflatten, for ONNX's tracer


class PathConcatClassifier(nn.Linear):
    """Merges the paths: global-average-pools each path (convolutional input), concatenates the
    ``path_count`` pooled tensors path-major and applies one linear classifier.

    ``(B, path_count, in_channels, H, W)`` or ``(B, path_count, in_channels)`` -> ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int, path_count: int, num_classes: int) -> None:
        super().__init__(path_count * in_channels, num_classes)
        self.path_count = path_count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.mean(dim=(3, 4))
        return super().forward(x.flatten(1))
