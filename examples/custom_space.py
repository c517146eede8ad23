"""Drop the mutable multi-path primitives into your own NNI ModelSpace.

    python examples/custom_space.py

Every argument of the primitives may be an ``nni.choice``; freezing the space yields the plain
``mpn_nas.layers`` classes, which train and export without nni.
"""
import nni
import torch
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from mpn_nas.layers import MultiPathConv2d
from search_spaces import MutableMultiPathConv2d


class TinyRoutedSpace(ModelSpace, label_prefix="tiny"):
    """A stem, one searchable routed multi-path convolution, a classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.paths = 4
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.routed = MutableMultiPathConv2d(
            8, nni.choice("width", [8, 16]), self.paths,
            routing=nni.choice("routing", ["none", "static", "cross_prediction", "feature_dependent"]),
            density=nni.choice("density", [0.5, 1.0]))
        self.head = nn.LazyLinear(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).unsqueeze(1).expand(-1, self.paths, -1, -1, -1)  # (B, p, C, H, W)
        return self.head(self.routed(x).mean(dim=(3, 4)).flatten(1))


if __name__ == "__main__":
    space = TinyRoutedSpace()
    print("choices:", {label: m.values for label, m in space.simplify().items()})
    model = space.freeze({"tiny/width": 16, "tiny/routing": "feature_dependent", "tiny/density": 0.5})
    assert type(model.routed) is MultiPathConv2d  # the plain layer, no NNI left
    print(model.routed.mix.router, model(torch.randn(2, 1, 8, 8)).shape)
