"""Any NNI multi-trial strategy under a complexity budget, built from NNI's own middleware.

``with_budget(Random(), config, budget)`` is ``Chain(Random(), BudgetFilter(config, budget))``: an
NNI ``Strategy`` that never submits an over-budget sample for training and counts those it screened
out. Strategies that sample through NNI's ``RetrySamplingHelper`` (evolution, the Pareto strategy)
can go further with :class:`FeasibleSampling`: an over-budget candidate raises
:class:`OverBudget`, a ``SampleValidationError``, so NNI retries sampling (or mutation) until a
feasible one appears instead of spending a population slot on a rejected model.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from nni.mutable import SampleValidationError
from nni.nas.strategy import Strategy
from nni.nas.strategy.middleware import Chain, StrategyMiddleware

from search_spaces.budget import Budget, require_feasible
from search_spaces.config import SpaceConfig

from .middleware import BudgetFilter, SampleFits


class OverBudget(SampleValidationError):
    """A sample over the complexity budget (NNI's samplers retry on it)."""


class FeasibleSampling:
    """Mixin for strategies: ``require_fits(sample)`` raises :class:`OverBudget` (and counts it in
    ``screened_out``) when ``self.fits`` says no. ``fits=None`` accepts everything."""

    fits: Optional[SampleFits] = None
    screened_out: int = 0

    def require_fits(self, sample: Mapping[str, Any]) -> None:
        if self.fits is not None and not self.fits(sample):
            self.screened_out += 1
            raise OverBudget(f"over budget: {dict(sample)}")


class BudgetedStrategy(Chain):
    """``Chain(strategy, *middlewares, BudgetFilter(config, budget))``; fails at once (``UserError``)
    when no sample of the space fits ``budget``.

    ``middlewares`` go between the strategy and the filter, so they only see what the strategy
    submits (a trial recorder placed there records trained trials only: the filter marks rejected
    models invalid without training them).
    """

    def __init__(self, strategy: Strategy, config: SpaceConfig, budget: Budget, *middlewares: StrategyMiddleware,
                 device: str = "cpu", patience: int = 2000) -> None:
        require_feasible(config, budget, device)
        self.budget_filter = BudgetFilter(config, budget, device=device, patience=patience)
        super().__init__(strategy, *middlewares, self.budget_filter)

    @property
    def strategy(self) -> Strategy:
        return self[0]

    @property
    def screened_out(self) -> int:
        """Over-budget samples never trained: those the filter blocked plus those a
        :class:`FeasibleSampling` strategy rejected before submitting."""
        return self.budget_filter.screened_out + getattr(self.strategy, "screened_out", 0)


def with_budget(strategy: Strategy, config: SpaceConfig, budget: Budget, *middlewares: StrategyMiddleware,
                device: str = "cpu", patience: int = 2000) -> BudgetedStrategy:
    """``strategy`` (any NNI multi-trial strategy) under ``budget``; see :class:`BudgetedStrategy`."""
    return BudgetedStrategy(strategy, config, budget, *middlewares, device=device, patience=patience)
