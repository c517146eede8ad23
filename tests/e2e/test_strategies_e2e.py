"""Complexity budgets around NNI's multi-trial strategies (Chain + BudgetFilter), and the evolution
that only ever proposes feasible individuals."""
import json
import sys

import pytest

from search_spaces.budget import Budget
from strategy_helpers import TIGHT_PARAMS, measured_params, run_experiment, tiny_space, trained_models, training_evaluator

# About 30% of the tiny space's samples fit: every strategy meets over-budget samples within a few
# proposals, and NNI's TPE (which sleeps one second per proposal) stays quick.


@pytest.mark.slow
def test_budgeted_evolution_trains_real_trials_within_budget(tmp_path):
    from strategies.budgeted import with_budget
    from strategies.registry import make_strategy

    space = tiny_space()
    budget = Budget(max_params=TIGHT_PARAMS)
    strategy = with_budget(make_strategy("evolution", trials=4, seed=0, config=space.config, budget=budget),
                           space.config, budget)
    run_experiment(space, strategy, 3, tmp_path / "nni", evaluator=training_evaluator())
    trained = trained_models(strategy)
    assert len(trained) == 3 and all(0.0 <= m.metric <= 1.0 for m in trained)
    assert all(measured_params(space.config, m) <= TIGHT_PARAMS for m in trained)
    assert strategy.screened_out > 0


@pytest.mark.slow
def test_strategy_comparison_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    """A tiny configuration (a smoke test of the code path, not of the figures)."""
    import importlib.util

    from helpers import REPO, tiny_space_config

    spec = importlib.util.spec_from_file_location("strategy_comparison", REPO / "benchmarks" / "strategy_comparison.py")
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, benchmark)  # dataclasses look their module up there
    spec.loader.exec_module(benchmark)
    out = tmp_path / "comparison"
    assert benchmark.main(["--seeds", "1", "--trials", "2", "--epochs", "1", "--max-params", str(TIGHT_PARAMS),
                           "--space-config", str(tiny_space_config(tmp_path / "space.json")),
                           "--strategies", "nni-random", "pareto", "--share-samples", "20", "--out", str(out)]) == 0
    runs = {run["strategy"]: run for run in json.loads(out.with_suffix(".json").read_text())}
    assert runs["nni-random"]["screened_out"] == 0 and runs["pareto"]["over_budget"] == 0
    assert runs["pareto"]["trials"] == 2 and runs["pareto"]["screened_out"] > 0
    assert runs["pareto"]["best_within_budget"] is not None
    table = out.with_suffix(".md").read_text()
    assert "| Pareto NSGA-II" in table and "median" in table
