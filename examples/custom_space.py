"""Build your own NNI model space from the mutable multi-path primitives, then search it one-shot.

    python examples/custom_space.py            # DARTS (also: spos, gumbel, proxyless)
    python examples/custom_space.py spos

Every searchable argument of the primitives may be an ``nni.choice`` (or an expression of choices);
subclassing ``MultiPathModelSpace`` (an NNI ``ModelSpace``) hands the primitives' weight-sharing
versions to NNI's one-shot strategies. Freezing the space yields the plain ``mpn_nas.layers``
classes, with the supernet's weights, which train and export without nni.
"""
import sys

import nni
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment
from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot
from torch.utils.data import TensorDataset

from mpn_nas.data import digits_tensors
from mpn_nas.layers import MultiPathConv2d
from search_spaces import MultiPathModelSpace
from search_spaces.primitives import MutableMultiPathConv2d, MutableMultiPathStem, MutablePathConcatClassifier

STRATEGIES = {"darts": DARTS, "spos": RandomOneShot, "gumbel": GumbelDARTS, "proxyless": Proxyless}


class TinyRoutedSpace(MultiPathModelSpace, label_prefix="tiny"):
    """A per-path stem, one searchable routed multi-path convolution, the path-concatenating classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        paths = nni.choice("paths", [2, 4])
        width = nni.choice("width", [8, 16])
        # One stem per path: a router fed p copies of one tensor would mix equal inputs and learn nothing.
        self.stem = MutableMultiPathStem(in_channels=1, width=8, path_count=paths)
        self.routed = MutableMultiPathConv2d(
            in_channels=8, out_channels=width, path_count=paths,
            routing=nni.choice("routing", ["static", "cross_prediction", "feature_dependent"]),
            density=nni.choice("density", [0.5, 1.0]))
        self.head = MutablePathConcatClassifier(in_channels=width, path_count=paths, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.routed(self.stem(x)))  # (B, 1, 8, 8) -> (B, p, C, 8, 8) -> (B, classes)


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "darts"
    images, labels = digits_tensors()
    train = nni.trace(TensorDataset)(images[:1400], labels[:1400])
    val = nni.trace(TensorDataset)(images[1400:], labels[1400:])
    evaluator = Classification(train_dataloaders=DataLoader(train, batch_size=64, shuffle=True),
                               val_dataloaders=DataLoader(val, batch_size=256), max_epochs=3, num_classes=10,
                               enable_progress_bar=False, enable_model_summary=False, logger=False)
    space = TinyRoutedSpace()
    print("choices:", {label: m.values for label, m in space.simplify().items()})
    experiment = NasExperiment(space, evaluator, STRATEGIES[name]())
    experiment.run()
    sample = experiment.export_top_models(formatter="dict")[0]
    model = space.freeze(sample)  # plain layers with the supernet's weights
    assert type(model.routed) is MultiPathConv2d or isinstance(model.routed, MultiPathConv2d)
    print(f"{name} chose {sample}")
    print(model.routed.mix.router, model(images[:2]).shape)
