"""Differentiable expected complexity of a differentiable supernet, in the project's own counting.

NNI 3.0's ``ExpectationProfilerPenalty`` computes its cost from ``export_probs()`` as Python floats,
so no gradient reaches the architecture weights. Here the cost is a tensor function of them:

    E[cost] = sum over mixed operations o of  P(o runs) * sum over configurations c of o
              cost_o(c) * prod over labels l of o  softmax(alpha_l)[c_l]

Each operation's cost depends only on its own labels, so the sum over its configurations (all
combinations of its labels' values) is exact under independent per-label distributions, and by
linearity so is the total. ``cost_o(c)`` is the parameter count or the FLOPs (``FlopCounterMode`` at
batch 1) of the plain layer of ``c``: with one-hot probabilities the expectation equals
``mpn-nas profile`` of the sample's architecture. ``P(o runs)`` is ``P(blocks > k)`` for block ``k`` of
a stage.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Mapping, Optional

import torch
from torch import nn
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch.utils.flop_counter import FlopCounterMode

from .oneshot import MultiPathMixedOperation, frozen_arguments

METRICS = ("params", "flops")


class _Term:
    """One operation's configurations: ``index`` ``(n, labels)`` into each label's values, ``cost`` ``(n,)``."""

    def __init__(self, labels: list[str], index: torch.Tensor, cost: torch.Tensor, alphas: Mapping[str, nn.Parameter],
                 depth: Optional[tuple[str, nn.Parameter, list[int], int]]) -> None:
        self.labels, self.index, self.cost, self.alphas, self.depth = labels, index, cost, alphas, depth

    def expectation(self) -> torch.Tensor:
        device = self.cost.device
        probability = torch.ones(len(self.cost), device=device)
        for column, label in enumerate(self.labels):
            probability = probability * torch.softmax(self.alphas[label], -1)[self.index[:, column].to(device)]
        expected = (probability * self.cost.to(device)).sum()
        if self.depth is not None:  # block k of a stage runs when the stage has more than k blocks
            _, alpha, depths, k = self.depth
            runs = torch.tensor([d > k for d in depths], dtype=torch.float32, device=alpha.device)
            expected = expected * (torch.softmax(alpha, -1) * runs).sum()
        return expected


class ExpectedCost:
    """``E[metric]`` of a supernet made by DARTS, GumbelDARTS or Proxyless (see the module docstring).

    ``supernet``: the mutated space; ``example``: one input batch ``(B, C, H, W)``, used once to read
    the input size of each operation. Calling the object returns a differentiable scalar.
    """

    def __init__(self, supernet: nn.Module, metric: str, example: torch.Tensor) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.metric = metric
        shapes = _input_shapes(supernet, example)
        depth_of = _depth_labels(supernet)
        self.terms = [self._term(operation, shapes[operation], depth_of.get(operation))
                      for operation in supernet.modules() if isinstance(operation, MultiPathMixedOperation)]

    def __call__(self) -> torch.Tensor:
        return sum(term.expectation() for term in self.terms)

    def _term(self, operation: MultiPathMixedOperation, shape: torch.Size,
              depth: Optional[tuple[str, nn.Parameter, list[int], int]]) -> _Term:
        specs = operation.simplify()
        labels = list(specs)
        rows, costs, cache = [], [], {}
        for values in itertools.product(*(spec.values for spec in specs.values())):
            arguments = frozen_arguments(operation, dict(zip(labels, values)))
            key = tuple(sorted(arguments.items()))
            if key not in cache:
                cache[key] = _cost(operation, arguments, shape, self.metric)
            rows.append([list(specs[label].values).index(value) for label, value in zip(labels, values)])
            costs.append(cache[key])
        index = torch.tensor(rows, dtype=torch.long).view(len(rows), len(labels))
        return _Term(labels, index, torch.tensor(costs, dtype=torch.float32),
                     {label: operation._arch_alpha[label] for label in labels}, depth)


def _cost(operation: MultiPathMixedOperation, arguments: Mapping[str, Any], shape: torch.Size, metric: str) -> float:
    """Parameters or batch-1 FLOPs of the plain layer of ``arguments``, counted on the meta device."""
    if metric == "params":
        return float(operation.parameter_count(arguments))
    sizes = operation.sizes(arguments)
    paths_in = operation.input_sizes
    dims = [sizes[name] for name in paths_in] if paths_in else list(shape[1:2])
    return _flops(operation.bound_type.__wrapped__, tuple(sorted(arguments.items())),
                  (1, *dims, *shape[len(dims) + 1:]))


@functools.lru_cache(maxsize=None)
def _flops(plain_type: type, arguments: tuple, input_shape: tuple) -> float:
    """Batch-1 FLOPs of a plain layer, shared by every operation of the same configuration."""
    from .oneshot import _plain_template

    template = _plain_template(plain_type, arguments)
    with FlopCounterMode(display=False) as counter:
        template.eval()(torch.zeros(input_shape, device="meta"))
    return float(counter.get_total_flops())


def _input_shapes(supernet: nn.Module, example: torch.Tensor) -> dict[nn.Module, torch.Size]:
    """Input shape of every mixed operation, from one forward pass of ``example`` at the largest size."""
    shapes: dict[nn.Module, torch.Size] = {}

    def record(module: nn.Module, args: tuple) -> None:  # a pre-hook's return value would replace the input
        shapes.setdefault(module, args[0].shape)

    handles = [module.register_forward_pre_hook(record)
               for module in supernet.modules() if isinstance(module, MultiPathMixedOperation)]
    was_training = supernet.training
    from nni.nas.nn.pytorch import Repeat

    # Where the strategy samples (Proxyless): one consistent subnet, with every block of every stage.
    memo = {label: max(spec.values) for module in supernet.modules() if isinstance(module, Repeat)
            for label, spec in module.depth_choice.simplify().items()}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            memo.update(module.resample(memo))
    try:
        with torch.no_grad():
            supernet.eval()(example)
    finally:
        supernet.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def _depth_labels(supernet: nn.Module) -> dict[nn.Module, tuple[str, nn.Parameter, list[int], int]]:
    """For each block inside a ``Repeat`` with a searched depth: its label, weights, depths and index."""
    from nni.nas.nn.pytorch import Repeat

    found = {}
    for module in supernet.modules():
        if isinstance(module, Repeat) and hasattr(module, "_arch_alpha"):
            (label, spec), = module.depth_choice.simplify().items()
            for k, block in enumerate(module.blocks):
                found[block] = (label, module._arch_alpha[label], list(spec.values), k)
    return found
