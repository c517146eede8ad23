"""Complexity budgets around NNI's multi-trial strategies (Chain + BudgetFilter), and the evolution
that only ever proposes feasible individuals."""
import json

import pytest

from mpn_nas.errors import UserError
from search_spaces.budget import Budget
from strategy_helpers import MAX_PARAMS, TIGHT_PARAMS, measured_params, run_experiment, tiny_space, trained_models

# About 30% of the tiny space's samples fit: every strategy meets over-budget samples within a few
# proposals, and NNI's TPE (which sleeps one second per proposal) stays quick.


def _nni_strategy(name: str, seed: int = 0):
    from nni.nas import strategy

    from strategies.registry import make_strategy

    if name == "evolution":  # NNI's own evolution: the filter alone keeps it within budget
        return strategy.RegularizedEvolution(population_size=2, sample_size=1, seed=seed)
    return make_strategy(name, trials=4, seed=seed)


@pytest.mark.parametrize("name", ["random", "grid", "evolution", "tpe"])
def test_wrapped_nni_strategy_never_trains_over_budget(tmp_path, name):
    from strategies.budgeted import with_budget

    space = tiny_space()
    strategy = with_budget(_nni_strategy(name), space.config, Budget(max_params=MAX_PARAMS))
    run_experiment(space, strategy, 4, tmp_path / "nni")
    trained = trained_models(strategy)
    assert len(trained) == 4 and all(measured_params(space.config, m) <= MAX_PARAMS for m in trained)
    assert strategy.screened_out > 0  # the budget really cut proposals of this strategy
    assert len(list(strategy.list_models(sort=False))) == 4 + strategy.screened_out  # rejected: listed, not trained


def test_feasible_evolution_mutates_toward_feasible_children(tmp_path):
    from strategies.budgeted import with_budget
    from strategies.evolution import FeasibleEvolution
    from strategies.registry import make_strategy

    space = tiny_space()
    budget = Budget(max_params=TIGHT_PARAMS)
    evolution = make_strategy("evolution", trials=16, seed=3, config=space.config, budget=budget)
    assert isinstance(evolution, FeasibleEvolution)
    strategy = with_budget(evolution, space.config, budget)
    run_experiment(space, strategy, 16, tmp_path / "nni")
    trained = trained_models(strategy)
    assert len(trained) == 16 and all(measured_params(space.config, m) <= TIGHT_PARAMS for m in trained)
    # Over-budget candidates were drawn again inside evolution: none reached the filter, every
    # population slot holds a trained feasible individual, and mutations did happen.
    assert strategy.budget_filter.screened_out == 0
    assert evolution.screened_out > 0 and strategy.screened_out == evolution.screened_out
    assert len(evolution.state_dict()["population"]) == evolution.population_size
    assert evolution.state_dict()["individual_counter"] == 16  # rejected candidates are not individuals


def test_plain_evolution_wastes_proposals_on_the_filter_where_feasible_evolution_does_not(tmp_path):
    from nni.nas.strategy import RegularizedEvolution

    from strategies.budgeted import with_budget

    space = tiny_space()
    budget = Budget(max_params=TIGHT_PARAMS)
    plain = with_budget(RegularizedEvolution(population_size=8, sample_size=4, mutation_prob=0.2, seed=3),
                        space.config, budget)
    run_experiment(space, plain, 16, tmp_path / "nni")
    assert len(trained_models(plain)) == 16
    assert plain.budget_filter.screened_out > 0  # NNI's evolution hands over-budget models to the filter


def test_feasible_evolution_resumes_from_nni_checkpoint(tmp_path):
    from strategies.registry import make_strategy

    space = tiny_space()
    budget = Budget(max_params=TIGHT_PARAMS)
    first = make_strategy("evolution", trials=8, seed=4, config=space.config, budget=budget)
    experiment = run_experiment(space, first, 8, tmp_path / "nni")
    saved = first.state_dict()
    second = make_strategy("evolution", trials=8, seed=4, config=space.config, budget=budget)
    # NNI restores the strategy from the experiment's checkpoint; the larger trial limit lets it go on.
    run_experiment(space, second, 12, tmp_path / "nni", resume_id=experiment.id)
    state = second.state_dict()
    assert state["individual_counter"] == 12 and state["screened_out"] >= saved["screened_out"] > 0
    before = {json.dumps(m.sample, sort_keys=True) for m in trained_models(first)}
    after = {json.dumps(m.sample, sort_keys=True) for m in trained_models(second)}
    assert len(before) == 8 and len(after) == 4 and not before & after  # dedup history restored
    assert all(measured_params(space.config, m) <= TIGHT_PARAMS for m in trained_models(second))


def test_with_budget_fails_at_once_when_nothing_fits():
    from nni.nas.strategy import Random

    from strategies.budgeted import with_budget

    with pytest.raises(UserError, match="smallest"):
        with_budget(Random(seed=0), tiny_space().config, Budget(max_params=100))


def test_make_strategy_names_and_budget_paths():
    from nni.nas.strategy import GridSearch, Random, RegularizedEvolution, TPE

    from strategies.evolution import FeasibleEvolution
    from strategies.pareto import ParetoEvolution
    from strategies.registry import STRATEGY_NAMES, make_strategy

    config = tiny_space().config
    assert isinstance(make_strategy("random", 4), Random) and isinstance(make_strategy("grid", 4), GridSearch)
    assert isinstance(make_strategy("tpe", 4), TPE)
    plain = make_strategy("evolution", 4)
    assert isinstance(plain, RegularizedEvolution) and not isinstance(plain, FeasibleEvolution)
    assert not isinstance(make_strategy("evolution", 4, config=config, budget=Budget()), FeasibleEvolution)
    assert isinstance(make_strategy("evolution", 4, config=config, budget=Budget(max_params=5000)), FeasibleEvolution)
    pareto = make_strategy("pareto", 8, config=config, objective="params")
    assert isinstance(pareto, ParetoEvolution) and pareto.population_size == 4 and pareto.fits is None
    assert "pareto" in STRATEGY_NAMES
    with pytest.raises(UserError, match="unknown objective"):
        make_strategy("pareto", 8, config=config, objective="latency")
    with pytest.raises(UserError, match="unknown strategy"):
        make_strategy("bayes", 8)


class _FakeModel:
    """What the recorder reads of an engine's model: a sample, a status and a metric."""

    def __init__(self, sample: dict, status=None, metric=None) -> None:
        self.sample, self.status, self.metric = sample, status, metric


def test_recorder_waits_for_a_final_metric_that_arrives_after_the_trial_end():
    from nni.nas.space import ModelStatus

    from strategies.middleware import AWAITING_METRIC, TrialRecord, TrialRecorder, _Event

    ended = []
    recorder = TrialRecorder(on_end=ended.append)
    late, lost, never = _FakeModel({"a": 1}), _FakeModel({"a": 2}), _FakeModel({"a": 3})
    for model in (late, lost, never):
        recorder.records[id(model)] = TrialRecord(0, dict(model.sample), model=model)
        recorder._on_training_end(_Event(model, status=ModelStatus.Trained))  # the end comes first
    assert not ended and all(r.status == AWAITING_METRIC for r in recorder.records.values())
    recorder._on_final_metric(_Event(late, metric=0.75))
    assert [(r.sample, r.status, r.val_accuracy) for r in ended] == [({"a": 1}, "succeeded", 0.75)]
    # At the end of the search, the engine's database completes or fails what is still waiting.
    recorder.reconcile([_FakeModel({"a": 2}, ModelStatus.Trained, 0.5), _FakeModel({"a": 3}, ModelStatus.Trained)])
    assert [(r.sample, r.status, r.val_accuracy) for r in ended[1:]] == [
        ({"a": 2}, "succeeded", 0.5), ({"a": 3}, "failed", None)]
    assert "without reporting a metric" in ended[2].reason
    assert sorted(r.index for r in ended) == [1, 2, 3]
