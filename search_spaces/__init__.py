"""NNI search-space primitives and model spaces of multi-path networks.

The candidate lists, sample-to-architecture mapping and budgets need no nni; the primitives and
model spaces import nni when first used (``from search_spaces import ResNetSpace``), so the
command line stays fast and ``retrain`` works without nni.
"""
from importlib import import_module
from typing import Any

from .config import SpaceConfig, default_config, load_config, sample_to_arch

_LAZY = {
    "MutableMultiPathConv2d": "primitives", "MutableMultiPathLinear": "primitives",
    "MutableMultiPathBasicBlock": "primitives", "MutableMultiPathStem": "primitives",
    "MutableMultiPathDenseStem": "primitives", "MutablePathConcatClassifier": "primitives",
    "MultiPathModelSpace": "oneshot", "oneshot_hooks": "oneshot", "MultiPathSpace": "spaces", "ResNetSpace": "spaces",
    "MLPSpace": "spaces", "SPACES": "spaces", "make_space": "spaces", "arch_from_parameters": "spaces",
}

__all__ = ["SpaceConfig", "default_config", "load_config", "sample_to_arch", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
