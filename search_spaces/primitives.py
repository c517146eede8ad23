"""Mutable multi-path layers: NNI's own pattern, ``class MutableX(ParametrizedModule, X, wraps=X)``.

Any argument (``path_count``, ``routing``, ``density``, widths, ...) may be an ``nni.choice``;
freezing yields the plain :mod:`mpn_nas.layers` class.
"""
from nni.nas.nn.pytorch import ParametrizedModule

from mpn_nas.layers import MultiPathBasicBlock, MultiPathConv2d, MultiPathLinear


class MutableMultiPathConv2d(ParametrizedModule, MultiPathConv2d, wraps=MultiPathConv2d):
    """:class:`mpn_nas.layers.MultiPathConv2d` whose arguments may be ``nni.choice`` values."""


class MutableMultiPathLinear(ParametrizedModule, MultiPathLinear, wraps=MultiPathLinear):
    """:class:`mpn_nas.layers.MultiPathLinear` whose arguments may be ``nni.choice`` values."""


class MutableMultiPathBasicBlock(ParametrizedModule, MultiPathBasicBlock, wraps=MultiPathBasicBlock):
    """:class:`mpn_nas.layers.MultiPathBasicBlock` whose arguments may be ``nni.choice`` values."""
