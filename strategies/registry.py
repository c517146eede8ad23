"""Search strategies by name: one table (:data:`STRATEGIES`) that ``mpn-nas search``, its help text,
the dispatch between multi-trial and one-shot searches, and the docs read. Adding a strategy: a
builder function here and a row in the table.

Multi-trial strategies are sized for the number of trials asked for; with a space config and a
budget, ``evolution`` is the budget-aware evolution and ``pareto`` the Pareto strategy. One-shot
strategies train one weight-sharing supernet (:mod:`strategies.oneshot`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from mpn_nas.errors import UserError

OBJECTIVES = ("flops", "params")  # what the pareto strategy minimises against accuracy
MULTI_TRIAL, ONE_SHOT = "multi-trial", "one-shot"
ARCHITECTURE_LR = 1e-2  # NNI's DARTS default (3e-4) barely moves the weights in the few epochs of a search


@dataclass(frozen=True)
class StrategyRequest:
    """What a builder of :data:`STRATEGIES` may use."""

    trials: int = 8
    seed: int = 0
    config: Any = None  # the space's SpaceConfig
    budget: Any = None  # the search's Budget
    objective: str = "flops"
    fits: Optional[Callable[[Mapping[str, Any]], bool]] = None  # within the budget (None: no limit)

    @property
    def population(self) -> int:
        """Populations are sized so that evolution mutates within ``trials``."""
        return max(2, min(100, self.trials // 2))


def _random(request: StrategyRequest):
    from nni.nas import strategy

    return strategy.Random(seed=request.seed, dedup=True)


def _grid(request: StrategyRequest):
    from nni.nas import strategy

    return strategy.GridSearch(shuffle=True, seed=request.seed)


def _evolution(request: StrategyRequest):
    from nni.nas import strategy

    population = request.population
    settings = dict(population_size=population, sample_size=max(1, population // 2), mutation_prob=0.2,
                    seed=request.seed, dedup=True)
    if request.fits is None:
        return strategy.RegularizedEvolution(**settings)
    from .evolution import FeasibleEvolution
    return FeasibleEvolution(request.fits, **settings)


def _tpe(request: StrategyRequest):
    from nni.nas import strategy

    return strategy.TPE(optimize_mode="maximize", seed=request.seed)  # NNI's TPE minimises by default


def _pareto(request: StrategyRequest):
    from .pareto import ParetoEvolution, SampleCost

    if request.config is None:
        raise ValueError("the pareto strategy needs the space config to count the objective of a sample")
    return ParetoEvolution(SampleCost(request.config, request.objective), population_size=request.population,
                           mutation_prob=0.2, fits=request.fits, seed=request.seed)


def _spos(request: StrategyRequest):
    from nni.nas import strategy

    return strategy.RandomOneShot(filter=request.fits)  # samples only subnets within the budget


def _differentiable(name: str) -> Callable[[StrategyRequest], Any]:
    def build(request: StrategyRequest):
        from nni.nas import strategy

        return getattr(strategy, name)(arc_learning_rate=ARCHITECTURE_LR)

    return build


@dataclass(frozen=True)
class StrategyKind:
    name: str
    kind: str  # MULTI_TRIAL or ONE_SHOT
    build: Callable[[StrategyRequest], Any]
    about: str
    differentiable: bool = False  # one-shot: learns architecture probabilities (DARTS-like)
    finds_front: bool = False  # multi-trial: searches the accuracy-cost front (pareto/ folder, marked in trials.csv)


# In the order help texts list them.
STRATEGIES: dict[str, StrategyKind] = {kind.name: kind for kind in (
    StrategyKind("random", MULTI_TRIAL, _random, "NNI's random sampling, no repeats"),
    StrategyKind("grid", MULTI_TRIAL, _grid, "NNI's grid search, shuffled"),
    StrategyKind("evolution", MULTI_TRIAL, _evolution, "regularised evolution; under a budget it only proposes "
                                                       "samples within it"),
    StrategyKind("tpe", MULTI_TRIAL, _tpe, "NNI's tree-structured Parzen estimator"),
    StrategyKind("pareto", MULTI_TRIAL, _pareto, "NSGA-II-style evolution of the accuracy-cost front",
                 finds_front=True),
    StrategyKind("darts", ONE_SHOT, _differentiable("DARTS"), "NNI's DARTS on the supernet", differentiable=True),
    StrategyKind("gumbel", ONE_SHOT, _differentiable("GumbelDARTS"), "NNI's Gumbel-softmax DARTS",
                 differentiable=True),
    StrategyKind("spos", ONE_SHOT, _spos, "single-path one-shot: uniform subnets, then evolution on the supernet"),
    StrategyKind("proxyless", ONE_SHOT, _differentiable("Proxyless"), "NNI's ProxylessNAS (binarised paths)",
                 differentiable=True),
)}
STRATEGY_NAMES = tuple(STRATEGIES)
MULTI_TRIAL_STRATEGIES = tuple(name for name, kind in STRATEGIES.items() if kind.kind == MULTI_TRIAL)
ONESHOT_STRATEGIES = tuple(name for name, kind in STRATEGIES.items() if kind.kind == ONE_SHOT)
STRATEGY_USAGE = (f"multi-trial: {' | '.join(MULTI_TRIAL_STRATEGIES)}; one-shot (one weight-sharing supernet): "
                  f"{' | '.join(ONESHOT_STRATEGIES)}")


def strategy_kind(name: str) -> StrategyKind:
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}")
    return STRATEGIES[name]


def make_strategy(name: str, trials: int, seed: int = 0, *, config=None, budget=None, objective: str = "flops"):
    """The multi-trial strategy ``name`` for ``trials`` trials.

    With ``config`` (a :class:`~search_spaces.config.SpaceConfig`) and a limiting ``budget``,
    ``evolution`` only ever proposes feasible individuals (:class:`~strategies.evolution.FeasibleEvolution`);
    ``pareto`` needs ``config`` to count the ``objective`` (``flops`` or ``params``) of a sample.
    Every strategy still needs the budget filter around it (:func:`strategies.budgeted.with_budget`).
    """
    kind = strategy_kind(name)
    check_objective(objective)
    if kind.kind != MULTI_TRIAL:
        raise ValueError(f"{name} is a one-shot strategy: see strategies.oneshot.make_oneshot_strategy")
    return kind.build(StrategyRequest(trials, seed, config, budget, objective, _fits(config, budget)))


def _fits(config, budget) -> Optional[Callable[[Mapping[str, Any]], bool]]:
    if config is None or budget is None or budget.unlimited:
        return None
    from .budgeted import SampleFits
    return SampleFits(config, budget)


def check_strategy_name(name: str) -> None:
    strategy_kind(name)


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
