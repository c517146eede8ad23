"""Multi-trial strategies by name, configured for the number of trials asked for: NNI's own, and
with a space config and budget, the budget-aware evolution and the Pareto strategy."""
from __future__ import annotations

from typing import Optional

from mpn_nas.errors import UserError

MULTI_TRIAL_STRATEGIES = ("random", "grid", "evolution", "tpe", "pareto")
ONESHOT_STRATEGIES = ("darts", "gumbel", "spos", "proxyless")  # one weight-sharing supernet: strategies.oneshot
STRATEGY_NAMES = MULTI_TRIAL_STRATEGIES + ONESHOT_STRATEGIES
OBJECTIVES = ("flops", "params")  # what the pareto strategy minimises against accuracy


def make_strategy(name: str, trials: int, seed: int = 0, *, config=None, budget=None, objective: str = "flops"):
    """The strategy ``name``; populations are sized so that evolution mutates within ``trials``.

    With ``config`` (a :class:`~search_spaces.config.SpaceConfig`) and a limiting ``budget``,
    ``evolution`` only ever proposes feasible individuals (:class:`~strategies.evolution.FeasibleEvolution`);
    ``pareto`` needs ``config`` to count the ``objective`` (``flops`` or ``params``) of a sample.
    Every strategy still needs the budget filter around it (:func:`strategies.budgeted.with_budget`).
    """
    from nni.nas import strategy

    check_strategy_name(name)
    check_objective(objective)
    if name in ONESHOT_STRATEGIES:
        raise ValueError(f"{name} is a one-shot strategy: see strategies.oneshot.make_oneshot_strategy")
    fits = _fits(config, budget)
    population = max(2, min(100, trials // 2))
    if name == "random":
        return strategy.Random(seed=seed, dedup=True)
    if name == "grid":
        return strategy.GridSearch(shuffle=True, seed=seed)
    if name == "evolution":
        settings = dict(population_size=population, sample_size=max(1, population // 2), mutation_prob=0.2,
                        seed=seed, dedup=True)
        if fits is None:
            return strategy.RegularizedEvolution(**settings)
        from .evolution import FeasibleEvolution
        return FeasibleEvolution(fits, **settings)
    if name == "pareto":
        from .pareto import ParetoEvolution, SampleCost
        if config is None:
            raise ValueError("the pareto strategy needs the space config to count the objective of a sample")
        return ParetoEvolution(SampleCost(config, objective), population_size=population, mutation_prob=0.2,
                               fits=fits, seed=seed)
    return strategy.TPE(optimize_mode="maximize", seed=seed)  # NNI's TPE minimises by default


def _fits(config, budget) -> Optional[object]:
    if config is None or budget is None or budget.unlimited:
        return None
    from .budgeted import SampleFits
    return SampleFits(config, budget)


def check_strategy_name(name: str) -> None:
    if name not in STRATEGY_NAMES:
        raise UserError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}")


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
