"""Multi-objective search: dominance functions, the NSGA-II strategy, and the front's artifacts."""
import json
import math
import random

import pytest

from mpn_nas import Arch, profile
from mpn_nas.errors import UserError
from search_spaces.budget import Budget
from search_spaces.config import sample_to_arch
from helpers import figure_pixels, png_size
from strategy_helpers import run_experiment, tiny_space, trained_models
from strategies.dominance import (crowding_distance, dominates, non_dominated_sort, nsga2_survivors,
                                  pareto_front)


def _random_points(seed: int, count: int = 40) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    # Coarse values, so that ties in one or both objectives occur.
    return [(rng.randint(0, 10) / 10, float(rng.randint(1, 12))) for _ in range(count)]


# (a, b, a dominates b): points are (accuracy, cost); accuracy is maximised, cost minimised.
DOMINANCE_CASES = [
    ((0.9, 10.0), (0.8, 20.0), True),  # better in both
    ((0.9, 10.0), (0.8, 10.0), True),  # same cost, more accurate
    ((0.9, 10.0), (0.9, 20.0), True),  # same accuracy, cheaper
    ((0.9, 10.0), (0.9, 10.0), False),  # a tie in both: neither dominates
    ((0.8, 20.0), (0.9, 10.0), False),  # worse in both
    ((0.8, 10.0), (0.9, 10.0), False),  # same cost, less accurate
    ((0.9, 20.0), (0.9, 10.0), False),  # same accuracy, dearer
    ((0.9, 20.0), (0.8, 10.0), False),  # a trade-off: more accurate but dearer
    ((0.8, 10.0), (0.9, 20.0), False),  # the other side of the trade-off
]


@pytest.mark.parametrize("a, b, expected", DOMINANCE_CASES)
def test_dominates_by_hand(a, b, expected):
    assert dominates(a, b) is expected


def test_front_and_fronts_by_hand_with_ties():
    points = [(0.9, 10.0), (0.9, 10.0), (0.8, 5.0), (0.9, 12.0), (0.7, 5.0), (0.5, 20.0), (0.95, 30.0)]
    # Equal points (0, 1) both stay on the front; 3 and 5 lose to 0, 4 to 2; 6 is the most accurate.
    assert pareto_front(points) == [0, 1, 2, 6]
    assert non_dominated_sort(points) == [[0, 1, 2, 6], [3, 4], [5]]
    assert pareto_front([]) == [] and pareto_front([(0.5, 1.0)]) == [0]


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_sort_matches_the_definition(seed):
    points = _random_points(seed)
    fronts = non_dominated_sort(points)
    assert sorted(i for front in fronts for i in front) == list(range(len(points)))
    assert fronts[0] == [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    rank = {i: k for k, front in enumerate(fronts) for i in front}
    for i, p in enumerate(points):
        dominators = [j for j, q in enumerate(points) if dominates(q, p)]
        assert all(rank[j] < rank[i] for j in dominators)  # only earlier fronts dominate a point
        if rank[i] > 0:  # and the front just before holds one of its dominators
            assert any(rank[j] == rank[i] - 1 for j in dominators)


def test_crowding_distance_by_hand():
    points = [(0.9, 10.0), (0.8, 6.0), (0.6, 4.0), (0.2, 1.0)]  # one front, sorted by both objectives
    distance = crowding_distance(points, [0, 1, 2, 3])
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    # point 1: accuracy neighbours 0.6..0.9 over range 0.7; cost neighbours 4..10 over range 9
    assert distance[1] == pytest.approx(0.3 / 0.7 + 6 / 9)
    assert distance[2] == pytest.approx(0.6 / 0.7 + 5 / 9)
    assert all(math.isinf(d) for d in crowding_distance(points, [1, 2]).values())
    three = crowding_distance(points, [0, 1, 3])  # the smallest front with a middle point
    assert math.isinf(three[0]) and math.isinf(three[3]) and three[1] == pytest.approx(0.7 / 0.7 + 9 / 9)
    # The same front listed in another order: neighbours are found by value, not by position.
    shuffled = [points[2], points[0], points[3], points[1]]
    distance = crowding_distance(shuffled, [0, 1, 2, 3])
    assert distance[0] == pytest.approx(0.6 / 0.7 + 5 / 9) and distance[3] == pytest.approx(0.3 / 0.7 + 6 / 9)
    assert math.isinf(distance[1]) and math.isinf(distance[2])
    # One objective without spread adds nothing; the other still counts.
    flat = crowding_distance([(0.5, 1.0), (0.5, 2.0), (0.5, 4.0)], [0, 1, 2])
    assert flat[1] == pytest.approx(3 / 3) and math.isinf(flat[0]) and math.isinf(flat[2])


def test_nsga2_survivors_keep_whole_fronts_then_the_least_crowded():
    first = [(0.9, 10.0), (0.8, 6.0), (0.79, 5.9), (0.2, 1.0)]  # (0.79, 5.9) sits next to (0.8, 6.0)
    second = [(0.5, 8.0), (0.1, 3.0)]
    points = first + second
    assert [sorted(f) for f in non_dominated_sort(points)][0] == [0, 1, 2, 3]
    assert nsga2_survivors(points, 4) == [0, 1, 2, 3]
    kept = nsga2_survivors(points, 3)
    assert 0 in kept and 3 in kept and len(kept) == 3  # the extremes always survive
    assert nsga2_survivors(points, 6) == list(range(6))


def _pareto(space, seed: int, budget: Budget = Budget(), objective: str = "flops"):
    from strategies.registry import make_strategy

    return make_strategy("pareto", trials=16, seed=seed, config=space.config, budget=budget, objective=objective)


def test_pareto_strategy_front_is_non_dominated_and_holds_both_extremes(tmp_path):
    space = tiny_space()
    strategy = _pareto(space, seed=0, objective="params")
    run_experiment(space, strategy, 24, tmp_path / "nni")
    trained = trained_models(strategy)
    assert len(trained) == len(strategy.history) == 24
    measured = [(m.metric, profile(sample_to_arch(space.config, m.sample), latency=False).params) for m in trained]
    front = strategy.front()
    assert all(e.cost == profile(sample_to_arch(space.config, e.sample), latency=False).params for e in front)
    for member in front:
        assert not any(dominates(point, member.point) for point in measured)
    best = max(measured, key=lambda p: (p[0], -p[1]))
    cheapest = min(measured, key=lambda p: (p[1], -p[0]))
    points = [e.point for e in front]
    assert best in points and cheapest in points
    assert len(strategy.population) == strategy.population_size


def test_pareto_strategy_same_seed_same_front(tmp_path):
    space = tiny_space()
    fronts = []
    for run in range(2):
        strategy = _pareto(space, seed=5)
        run_experiment(space, strategy, 20, tmp_path / f"nni{run}")
        fronts.append([(e.sample, e.accuracy, e.cost) for e in strategy.front()])
    assert fronts[0] == fronts[1] and len(fronts[0]) >= 3


def test_pareto_strategy_under_a_budget_only_proposes_feasible_samples(tmp_path):
    from strategies.budgeted import with_budget

    space = tiny_space()
    budget = Budget(max_params=4_000)
    pareto = _pareto(space, seed=1, budget=budget)
    strategy = with_budget(pareto, space.config, budget)
    run_experiment(space, strategy, 16, tmp_path / "nni")
    trained = trained_models(strategy)
    assert len(trained) == 16
    assert all(profile(sample_to_arch(space.config, m.sample), latency=False).params <= 4_000 for m in trained)
    assert pareto.screened_out > 0 and strategy.budget_filter.screened_out == 0


def test_pareto_strategy_resumes_from_nni_checkpoint(tmp_path):
    space = tiny_space()
    first = _pareto(space, seed=2)
    experiment = run_experiment(space, first, 10, tmp_path / "nni")
    before = first.history
    resumed = _pareto(space, seed=2)
    # NNI restores the strategy from the experiment's checkpoint; the larger trial limit lets it go on.
    run_experiment(space, resumed, 16, tmp_path / "nni", resume_id=experiment.id)
    after = resumed.history
    assert after[:10] == before and len(after) == 16
    samples = [json.dumps(e.sample, sort_keys=True) for e in after]
    assert len(set(samples)) == 16  # the dedup history came back too: nothing trained twice


def test_write_front_writes_architecture_documents_of_the_front(tmp_path):
    from strategies.pareto import front_rows, write_front

    config = tiny_space().config
    rng = random.Random(0)
    rows = []
    for trial in range(1, 13):
        sample = {label: rng.choice(values) for label, values in config.labels().items()}
        cost = profile(sample_to_arch(config, sample), latency=False)
        rows.append({"trial": trial, "status": "failed" if trial == 3 else "succeeded",
                     "val_accuracy": None if trial == 3 else round(rng.random(), 3), "params": cost.params,
                     "flops": cost.flops, **sample})
    (tmp_path / "pareto").mkdir()
    (tmp_path / "pareto" / "trial999.json").write_text("{}")  # a stale front member of an earlier run
    front = write_front(tmp_path, rows, config, "params")
    done = [r for r in rows if r["status"] == "succeeded"]
    expected = sorted(done[i]["trial"] for i in pareto_front([(r["val_accuracy"], r["params"]) for r in done]))
    assert front == expected and 3 not in front and [r["trial"] for r in front_rows(rows, "params")] == front
    files = sorted(p.name for p in (tmp_path / "pareto").iterdir())
    assert files == [f"trial{t:03d}.json" for t in front]
    for trial in front:
        arch = Arch.from_json(tmp_path / "pareto" / f"trial{trial:03d}.json")
        row = rows[trial - 1]
        assert arch == sample_to_arch(config, row) and profile(arch, latency=False).params == row["params"]
    as_text = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]  # rows read from trials.csv
    assert write_front(tmp_path, as_text, config, "params") == front
    with pytest.raises(UserError, match="unknown objective"):
        write_front(tmp_path, rows, config, "latency")


def test_trials_csv_rows_mark_the_front(tmp_path):
    from strategies.artifacts import read_trials_csv, write_trials_csv

    rows = [{"trial": 1, "status": "succeeded", "val_accuracy": 0.5, "params": 100, "flops": 1000, "a": 1},
            {"trial": 2, "status": "succeeded", "val_accuracy": 0.4, "params": 200, "flops": 900, "a": 2}]
    write_trials_csv(tmp_path / "trials.csv", rows, ["a"], front={1})
    fixed = {"seconds": "", "reason": ""}
    assert read_trials_csv(tmp_path / "trials.csv") == [
        {"trial": "1", "status": "succeeded", "val_accuracy": "0.5", "params": "100", "flops": "1000", **fixed,
         "pareto": "1", "a": "1"},
        {"trial": "2", "status": "succeeded", "val_accuracy": "0.4", "params": "200", "flops": "900", **fixed,
         "pareto": "0", "a": "2"}]
    assert list(read_trials_csv(tmp_path / "trials.csv")[0])[7] == "pareto"  # after the fixed columns
    write_trials_csv(tmp_path / "plain.csv", rows, ["a"])
    assert [list(r) for r in read_trials_csv(tmp_path / "plain.csv")] == [
        ["trial", "status", "val_accuracy", "params", "flops", "seconds", "reason", "a"]] * 2


def _plotted(monkeypatch, plot) -> dict:
    """Run ``plot()`` and read back what its figure shows: the grey trial points and the front's line."""
    import matplotlib.pyplot as plt

    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure) or real_close(figure))
    plot()
    (axes,) = figures[0].axes
    (trials,) = axes.collections
    (front,) = axes.lines
    return {"trials": sorted(map(tuple, trials.get_offsets().tolist())), "front": list(map(tuple, front.get_xydata())),
            "labels": [text.get_text() for text in axes.texts], "xlabel": axes.get_xlabel()}


def test_pareto_plot_shows_every_trial_and_the_front(tmp_path, monkeypatch):
    from strategies.artifacts import plot_pareto

    rows = [{"trial": 1, "status": "succeeded", "val_accuracy": 0.5, "params": 100, "flops": 1000},
            {"trial": 2, "status": "succeeded", "val_accuracy": 0.4, "params": 200, "flops": 900},
            {"trial": 3, "status": "failed", "val_accuracy": None, "params": 50, "flops": 10},
            {"trial": 4, "status": "succeeded", "val_accuracy": 0.7, "params": 400, "flops": 3000}]
    shown = _plotted(monkeypatch, lambda: plot_pareto(tmp_path / "p.png", rows, objective="params"))
    assert shown["trials"] == [(100.0, 0.5), (200.0, 0.4), (400.0, 0.7)]  # the failed trial is not a point
    assert shown["front"] == [(100.0, 0.5), (400.0, 0.7)] and shown["labels"] == ["1", "4"]  # by cost, numbered
    assert shown["xlabel"].startswith("params")
    assert png_size(tmp_path / "p.png") == figure_pixels(6, 4, 120)
    by_flops = _plotted(monkeypatch, lambda: plot_pareto(tmp_path / "f.png", rows, objective="flops", front=[2]))
    assert by_flops["front"] == [(900.0, 0.4)] and by_flops["xlabel"].startswith("flops")  # a given front is drawn


