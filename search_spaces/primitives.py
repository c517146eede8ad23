"""Mutable multi-path layers: NNI's own pattern, ``class MutableX(ParametrizedModule, X, wraps=X)``.

Any searchable argument (``path_count``, ``in_paths``, widths, ``routing``, ``density``) may be an
``nni.choice`` or an expression of choices; freezing yields the plain :mod:`mpn_nas.layers` class.
Pass arguments by keyword (NNI's one-shot strategies rebuild the layer from them). Each primitive has
a weight-sharing version in :mod:`search_spaces.oneshot`, so the one-shot strategies run on any space
made of them (see :class:`search_spaces.oneshot.MultiPathModelSpace`).
"""
from nni.nas.nn.pytorch import ParametrizedModule

from mpn_nas.layers import (
    MultiPathBasicBlock,
    MultiPathConv2d,
    MultiPathDenseStem,
    MultiPathLinear,
    MultiPathStem,
    PathConcatClassifier,
)


class MutableMultiPathConv2d(ParametrizedModule, MultiPathConv2d, wraps=MultiPathConv2d):
    """:class:`mpn_nas.layers.MultiPathConv2d` whose arguments may be ``nni.choice`` values."""


class MutableMultiPathLinear(ParametrizedModule, MultiPathLinear, wraps=MultiPathLinear):
    """:class:`mpn_nas.layers.MultiPathLinear` whose arguments may be ``nni.choice`` values."""


class MutableMultiPathBasicBlock(ParametrizedModule, MultiPathBasicBlock, wraps=MultiPathBasicBlock):
    """:class:`mpn_nas.layers.MultiPathBasicBlock` whose arguments may be ``nni.choice`` values."""


class MutableMultiPathStem(ParametrizedModule, MultiPathStem, wraps=MultiPathStem):
    """:class:`mpn_nas.layers.MultiPathStem` whose ``width`` and ``path_count`` may be ``nni.choice`` values."""


class MutableMultiPathDenseStem(ParametrizedModule, MultiPathDenseStem, wraps=MultiPathDenseStem):
    """:class:`mpn_nas.layers.MultiPathDenseStem` whose ``width`` and ``path_count`` may be ``nni.choice`` values."""


class MutablePathConcatClassifier(ParametrizedModule, PathConcatClassifier, wraps=PathConcatClassifier):
    """:class:`mpn_nas.layers.PathConcatClassifier` whose ``in_channels`` and ``path_count`` may be choices."""
