"""Search strategies at an equal number of trials under one parameter budget, on digits.

Compared side by side in one process, for every seed: NNI's plain ``Random`` (no budget: it trains
whatever it samples), and, under the budget (``strategies.budgeted.with_budget``), NNI's ``Random``,
the feasible regularized evolution, and the Pareto (NSGA-II, accuracy vs. parameters) strategy.
Every trial trains with the same data split and seed, so one architecture scores the same whichever
strategy picked it. Reported per strategy, median over seeds: the best validation accuracy among
trials within the budget, the trials trained over budget (wasted), the proposals the budget screened
out before training, and the search time.

    python benchmarks/strategy_comparison.py                       # 3 seeds, 8 trials of 2 epochs
    python benchmarks/strategy_comparison.py --seeds 3 --trials 8 --epochs 2 --max-params 8000 \\
        --out benchmarks/results/strategy_comparison

Writes ``OUT.md`` (the table) and ``OUT.json`` (every run) when ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from mpn_nas.errors import UserError, run_script

from search_spaces.budget import Budget, arch_cost, require_feasible
from search_spaces.config import SpaceConfig, load_config, sample_to_arch

STRATEGIES = ("nni-random", "budgeted-random", "budgeted-evolution", "pareto")
DESCRIPTIONS = {
    "nni-random": "NNI `Random`, no budget",
    "budgeted-random": "NNI `Random` + budget filter",
    "budgeted-evolution": "feasible regularized evolution + budget filter",
    "pareto": "Pareto NSGA-II (accuracy vs. params) + budget filter",
}


@dataclass
class Run:
    """One search: one strategy, one seed."""

    strategy: str
    seed: int
    trials: int
    best_within_budget: Optional[float]
    over_budget: int
    screened_out: int
    front_size: Optional[int]
    seconds: float


def make_strategy(name: str, config: SpaceConfig, budget: Budget, trials: int, seed: int):
    from nni.nas.strategy import Random

    from strategies.budgeted import with_budget
    from strategies.registry import make_strategy as registered

    if name == "nni-random":
        return Random(seed=seed, dedup=True)
    if name == "budgeted-random":
        inner = Random(seed=seed, dedup=True)
    else:
        inner = registered("evolution" if name == "budgeted-evolution" else "pareto", trials, seed, config=config,
                           budget=budget, objective="params")
    return with_budget(inner, config, budget)


def run_one(name: str, config: SpaceConfig, budget: Budget, trials: int, epochs: int, seed: int,
            work_dir: Path) -> Run:
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.space import ModelStatus

    from strategies.evaluation import make_evaluator
    from search_spaces.spaces import make_space

    strategy = make_strategy(name, config, budget, trials, seed)
    experiment_config = NasExperimentConfig("sequential", "simplified", "local")
    experiment_config.max_trial_number = trials
    experiment_config.experiment_working_directory = str(work_dir)
    experiment_config.execution_engine.continue_on_failure = True
    evaluator = make_evaluator(dataset="digits", recipe={"epochs": epochs, "seed": seed, "device": "cpu"})
    experiment = NasExperiment(make_space("resnet", config=config.to_dict()), evaluator, strategy, experiment_config)
    started = time.time()
    try:
        experiment.run()
    finally:
        experiment.stop()
    seconds = time.time() - started
    trained = [m for m in strategy.list_models(sort=False) if m.status == ModelStatus.Trained]
    within = [m.metric for m in trained if not budget.violations(arch_cost(sample_to_arch(config, m.sample)))]
    inner = strategy[0] if name != "nni-random" else strategy
    front = inner.front() if name == "pareto" else None
    return Run(name, seed, len(trained), max(within, default=None), len(trained) - len(within),
               getattr(strategy, "screened_out", 0), None if front is None else len(front), round(seconds, 1))


def feasible_share(config: SpaceConfig, budget: Budget, samples: int = 200, seed: int = 0) -> float:
    """Share of uniformly random samples of the space within ``budget`` (an estimate)."""
    rng = random.Random(seed)
    labels = config.labels()
    fits = [not budget.violations(arch_cost(sample_to_arch(config, {k: rng.choice(v) for k, v in labels.items()})))
            for _ in range(samples)]
    return sum(fits) / samples


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def table(runs: Sequence[Run]) -> str:
    lines = ["| strategy | best within-budget val accuracy, median (min–max) | trials over budget (wasted), "
             "median | proposals screened out, median | Pareto front size | minutes per search, median |",
             "|---|---|---|---|---|---|"]
    for name in (s for s in STRATEGIES if any(r.strategy == s for r in runs)):
        mine = [r for r in runs if r.strategy == name]
        best = [r.best_within_budget for r in mine]
        present = [b for b in best if b is not None]
        spread = f"{100 * _median(best):.1f}% ({100 * min(present):.1f}–{100 * max(present):.1f})" if present else "—"
        if len(present) < len(best):
            spread += f"; {len(best) - len(present)} seed(s) with none within budget"
        fronts = _median([r.front_size for r in mine])
        lines.append(f"| {DESCRIPTIONS[name]} | {spread} | {_median([r.over_budget for r in mine]):g} | "
                     f"{_median([r.screened_out for r in mine]):g} | {'—' if fronts is None else f'{fronts:g}'} | "
                     f"{_median([r.seconds for r in mine]) / 60:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (median over them)")
    parser.add_argument("--trials", type=int, default=8, help="trained trials per search")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per trial")
    parser.add_argument("--max-params", type=int, default=8000, help="parameter budget")
    parser.add_argument("--space-config", default=None, help="JSON file of candidate lists to change")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--share-samples", type=int, default=200,
                        help="random samples for estimating the share of the space within budget")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.trials < 2 or args.epochs < 1:
        raise UserError("--seeds and --epochs must be >= 1 and --trials >= 2")
    warnings.filterwarnings("ignore")
    logging.getLogger("nni").setLevel(logging.ERROR)
    config = load_config("resnet", args.space_config, in_channels=1, input_size=8, num_classes=10)
    budget = Budget(max_params=args.max_params)
    require_feasible(config, budget)
    share = feasible_share(config, budget, samples=max(1, args.share_samples))
    seeds = list(range(args.seeds))
    started = time.time()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:  # strategies interleaved per seed, so machine load drifts hit them alike
            for name in args.strategies:
                run = run_one(name, config, budget, args.trials, args.epochs, seed, Path(work) / f"{name}-{seed}")
                runs.append(run)
                print(f"seed {seed} {name}: {asdict(run)}", file=sys.stderr, flush=True)
    command = "python benchmarks/strategy_comparison.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (f"Measured with `{command.strip()}` ({len(runs)} searches, {(time.time() - started) / 60:.1f} min). "
              f"Digits, resnet space ({config.size():,} samples), budget {args.max_params:,} parameters "
              f"(~{100 * share:.0f}% of random samples fit), {args.trials} trials of {args.epochs} epochs per search, "
              f"seeds {', '.join(map(str, seeds))}; every trial of one seed trains with the same split and seed.")
    report = header + "\n\n" + table(runs) + "\n"
    print(report, flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(report)
        out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_script(main, "strategy_comparison")
