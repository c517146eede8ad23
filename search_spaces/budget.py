"""Complexity budgets checked on a sample without training.

Parameters and FLOPs are counted on the meta device (shapes only, about 15-50 ms per sample on a
2-core CPU, cached per architecture); latency is measured only when a latency budget is set and the sample
already fits the other limits.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Optional

from mpn_nas import Arch
from mpn_nas.complexity import Complexity, count_params_and_flops, measure_latency_ms
from mpn_nas.errors import UserError
from mpn_nas.limits import check_value

from .config import SpaceConfig, sample_to_arch


@dataclass(frozen=True)
class Budget:
    """Upper limits; ``None`` means no limit."""

    max_params: Optional[int] = None
    max_flops: Optional[int] = None
    max_latency_ms: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("max_params", "max_flops", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None:
                check_value("--" + name.replace("_", "-"), value)

    @property
    def unlimited(self) -> bool:
        return self.max_params is None and self.max_flops is None and self.max_latency_ms is None

    def violations(self, cost: Complexity) -> list[str]:
        """What ``cost`` exceeds, as readable phrases (empty when within budget)."""
        found = []
        if self.max_params is not None and cost.params > self.max_params:
            found.append(f"params {cost.params:,} > {self.max_params:,}")
        if self.max_flops is not None and cost.flops > self.max_flops:
            found.append(f"flops {cost.flops:,} > {self.max_flops:,}")
        if self.max_latency_ms is not None and cost.latency_ms is not None and cost.latency_ms > self.max_latency_ms:
            found.append(f"latency {cost.latency_ms:.3f} ms > {self.max_latency_ms} ms")
        return found

    def to_dict(self) -> dict:
        return {"max_params": self.max_params, "max_flops": self.max_flops, "max_latency_ms": self.max_latency_ms}


@lru_cache(maxsize=65536)
def _params_and_flops(arch: Arch) -> tuple[int, int]:
    return count_params_and_flops(arch)


@lru_cache(maxsize=4096)
def _latency_ms(arch: Arch, device: str) -> float:
    return measure_latency_ms(arch, device)


def arch_cost(arch: Arch, with_latency: bool = False, device: str = "cpu") -> Complexity:
    """Parameters and FLOPs (as :func:`mpn_nas.profile` counts them), latency only when asked."""
    params, flops = _params_and_flops(arch)
    return Complexity(params, flops, _latency_ms(arch, device) if with_latency else None)


def check_arch(arch: Arch, budget: Budget, device: str = "cpu") -> tuple[bool, Complexity, list[str]]:
    """Whether ``arch`` fits ``budget``; latency is measured only if params and FLOPs already fit."""
    cost = arch_cost(arch)
    problems = budget.violations(cost)
    if not problems and budget.max_latency_ms is not None:
        cost = arch_cost(arch, with_latency=True, device=device)
        problems = budget.violations(cost)
    return not problems, cost, problems


def check_sample(config: SpaceConfig, sample: Mapping[str, Any], budget: Budget,
                 device: str = "cpu") -> tuple[bool, Complexity, list[str]]:
    """:func:`check_arch` for a sample of the space described by ``config``."""
    return check_arch(sample_to_arch(config, sample), budget, device)


def extreme_samples(config: SpaceConfig) -> tuple[list[dict], list[dict]]:
    """Candidates for the cheapest and for the most expensive sample.

    Every count grows with paths, width and blocks, and density does not change them, so the
    extremes have the smallest (largest) of those; which routing costs least (most) depends on the
    shapes, so every routing combination is a candidate.
    """
    labels = config.labels()
    routing_labels = [label for label in labels if label.endswith("routing")]
    combos = list(itertools.product(*(labels[label] for label in routing_labels)))

    def with_routings(pick) -> list[dict]:
        base = {label: pick(values) for label, values in labels.items() if label not in routing_labels}
        return [dict(base, **dict(zip(routing_labels, combo))) for combo in combos]

    return with_routings(min), with_routings(max)


def complexity_range(config: SpaceConfig, with_latency: bool = False, device: str = "cpu") -> dict[str, Complexity]:
    """``{"smallest": ..., "largest": ...}`` parameters and FLOPs of the space (and the latency of the
    smallest-parameter architecture when asked)."""
    low_archs, high_archs = ([sample_to_arch(config, s) for s in samples] for samples in extreme_samples(config))
    lows, highs = [arch_cost(a) for a in low_archs], [arch_cost(a) for a in high_archs]
    low = Complexity(min(c.params for c in lows), min(c.flops for c in lows))
    if with_latency:
        cheapest = min(low_archs, key=lambda arch: arch_cost(arch).params)
        low = Complexity(low.params, low.flops, arch_cost(cheapest, True, device).latency_ms)
    return {"smallest": low, "largest": Complexity(max(c.params for c in highs), max(c.flops for c in highs))}


def require_feasible(config: SpaceConfig, budget: Budget, device: str = "cpu") -> Complexity:
    """Fail at once, naming the smallest achievable value, when no sample can fit ``budget``."""
    low = complexity_range(config, with_latency=budget.max_latency_ms is not None, device=device)["smallest"]
    for name, limit, value, unit in (("max-params", budget.max_params, low.params, ""),
                                     ("max-flops", budget.max_flops, low.flops, ""),
                                     ("max-latency-ms", budget.max_latency_ms, low.latency_ms, " ms")):
        if limit is not None and value is not None and value > limit:
            shown = f"{value:,.3f}" if unit else f"{value:,}"
            raise UserError(f"budget --{name} {limit:,} is below the smallest architecture in this space "
                            f"({shown}{unit}); raise --{name} to at least {shown.replace(',', '')}")
    return low
