"""What the one-shot tests (unit and end-to-end) share: a small space config, a user's own space of
primitives, a batch of digits."""
import csv

import nni

from search_spaces.oneshot import MultiPathModelSpace
from search_spaces.primitives import MutableMultiPathConv2d, MutableMultiPathStem, MutablePathConcatClassifier

ROUTINGS = ["none", "static", "cross_prediction", "feature_dependent"]
SMALL = {"widths": [[4, 8], [4, 8]], "blocks": [1, 2], "path_counts": [1, 2, 4]}


class UserSpace(MultiPathModelSpace, label_prefix="user"):
    """A user's own space where path count, width, routing and density are all choices."""

    def __init__(self) -> None:
        super().__init__()
        paths = nni.choice("paths", [2, 4])
        width = nni.choice("width", [4, 8])
        self.stem = MutableMultiPathStem(in_channels=1, width=4, path_count=paths)
        self.routed = MutableMultiPathConv2d(in_channels=4, out_channels=width, path_count=nni.choice("p2", [1, 2, 4]),
                                             in_paths=paths, routing=nni.choice("routing", ROUTINGS[1:]),
                                             density=nni.choice("density", [0.5, 1.0]))
        self.head = MutablePathConcatClassifier(in_channels=width, path_count=nni.choice("p2", [1, 2, 4]),
                                                num_classes=10)

    def forward(self, x):
        return self.head(self.routed(self.stem(x)))


def digits_batch(count=8):
    from mpn_nas.data import digits_tensors

    images, labels = digits_tensors()
    return images[:count], labels[:count]


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
