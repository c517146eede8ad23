"""NNI's multi-trial strategies by name, configured for the number of trials asked for."""
from __future__ import annotations

from mpn_nas.errors import UserError

STRATEGY_NAMES = ("random", "grid", "evolution", "tpe")


def make_strategy(name: str, trials: int, seed: int = 0):
    """The NNI strategy ``name``; evolution's population is sized so that it mutates within ``trials``."""
    from nni.nas import strategy

    check_strategy_name(name)
    if name == "random":
        return strategy.Random(seed=seed, dedup=True)
    if name == "grid":
        return strategy.GridSearch(shuffle=True, seed=seed)
    if name == "evolution":
        population = max(2, min(100, trials // 2))
        return strategy.RegularizedEvolution(population_size=population, sample_size=max(1, population // 2),
                                             mutation_prob=0.2, seed=seed, dedup=True)
    return strategy.TPE(optimize_mode="maximize", seed=seed)  # NNI's TPE minimises by default


def check_strategy_name(name: str) -> None:
    if name not in STRATEGY_NAMES:
        raise UserError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}")
