"""A FLOPs budget and a latency budget, each alone, are enforced by every path that enforces budgets, and
a cost exactly at its limit fits while one unit over does not.

The space here has two samples, SMALL and BIG (stage 2 eight or sixteen channels wide). The limit is set
to BIG's cost (BIG fits: both are trained or proposed) or one unit below it (only SMALL may be). Latency
is measured in the real product; here the measurement is replaced by a deterministic stand-in
(``params / 1024`` ms), so "one unit" is one parameter's worth of latency.
"""
import csv
import json

import pytest

from search_spaces.budget import Budget, arch_cost
from search_spaces.config import load_config, sample_to_arch
from strategy_helpers import proxy_evaluator, run_experiment, trained_models

TWO_SAMPLES = {"widths": [[4], [8, 16]], "blocks": [1], "path_counts": [2], "routings": ["feature_dependent"],
               "densities": [1.0]}
SMALL_WIDTH, BIG_WIDTH = 8, 16
KINDS = ("flops", "latency")


MEASURED = []  # (architecture, device) of every latency "measurement" of the running test


def fake_latency_ms(arch, device: str) -> float:
    """Deterministic stand-in for the measured batch-1 latency."""
    MEASURED.append((arch, device))
    return arch_cost(arch).params / 1024


@pytest.fixture(autouse=True)
def _deterministic_latency(monkeypatch):
    import search_spaces.budget as budget

    MEASURED.clear()
    monkeypatch.setattr(budget, "_latency_ms", fake_latency_ms)
    yield
    assert all(device == "cpu" for _, device in MEASURED)  # budgets are CPU latencies unless told otherwise


def _config():
    return load_config("resnet", TWO_SAMPLES, in_channels=1, input_size=8, num_classes=10)


def _sample(width: int) -> dict:
    sample = {label: values[0] for label, values in _config().labels().items()}
    return dict(sample, **{"stage2.width": width})


def _limit_flag(kind: str, limit) -> list[str]:
    return ["--max-flops", str(limit)] if kind == "flops" else ["--max-latency-ms", repr(limit)]


def _limits(kind: str) -> tuple:
    """(BIG's cost, one unit below it) in the unit of ``kind``."""
    big = sample_to_arch(_config(), _sample(BIG_WIDTH))
    if kind in ("flops", "params"):
        cost = getattr(arch_cost(big), kind)
        return cost, cost - 1
    params = arch_cost(big).params
    return params / 1024, (params - 1) / 1024


def _budget(kind: str, limit) -> Budget:
    return Budget(**{{"flops": "max_flops", "params": "max_params", "latency": "max_latency_ms"}[kind]: limit})


def _widths(samples) -> set:
    return {sample["stage2.width"] for sample in samples}


def test_budget_fields_validation_and_round_trip():
    from mpn_nas.errors import UserError

    budget = Budget(max_params=10, max_flops=20, max_latency_ms=1.5)
    assert budget.to_dict() == {"max_params": 10, "max_flops": 20, "max_latency_ms": 1.5}
    assert Budget(**budget.to_dict()) == budget  # what search.json keeps for --resume
    assert Budget().unlimited
    assert not any(Budget(**{name: 1}).unlimited for name in ("max_params", "max_flops", "max_latency_ms"))
    for name in ("max_params", "max_flops", "max_latency_ms"):
        flag = f"--{name.replace('_', '-')}"
        for bad in (-1, 0):  # the range of the limits table, named in one line
            with pytest.raises(UserError, match=rf"^{flag} must be an? (integer|number) in [\[(]\S+, [\d,e]+\], "
                                                rf"got {bad}$"):
                Budget(**{name: bad})


def test_the_two_samples_differ_in_both_costs():
    small, big = (sample_to_arch(_config(), _sample(w)) for w in (SMALL_WIDTH, BIG_WIDTH))
    assert _config().size() == 2
    assert arch_cost(small).flops < arch_cost(big).flops - 1
    assert fake_latency_ms(small, "cpu") < fake_latency_ms(big, "cpu") - 0.001


@pytest.mark.parametrize("kind", ("params", *KINDS))
def test_budget_check_at_the_limit_and_one_unit_over(kind):
    from search_spaces.budget import check_arch

    big = sample_to_arch(_config(), _sample(BIG_WIDTH))
    at, below = _limits(kind)
    fits, cost, problems = check_arch(big, _budget(kind, at))
    assert fits and problems == []
    fits, cost, problems = check_arch(big, _budget(kind, below))
    expected = (f"latency {cost.latency_ms:.3f} ms > {below} ms" if kind == "latency"
                else f"{kind} {getattr(cost, kind):,} > {below:,}")
    assert not fits and problems == [expected]
    # Latency is measured (here: the stand-in called) only when a latency budget is set.
    assert cost.latency_ms == (at if kind == "latency" else None)
    assert len(MEASURED) == (2 if kind == "latency" else 0)
    assert arch_cost(big).latency_ms is None


def test_latency_is_measured_only_when_the_counted_limits_hold_and_on_the_device_given():
    from search_spaces.budget import check_arch, check_sample, require_feasible

    big = sample_to_arch(_config(), _sample(BIG_WIDTH))
    flops_at, flops_below = _limits("flops")
    latency_at, _ = _limits("latency")
    fits, cost, problems = check_arch(big, Budget(max_flops=flops_below, max_latency_ms=latency_at))
    assert not fits and len(problems) == 1 and cost.latency_ms is None and MEASURED == []  # FLOPs already over
    assert check_arch(big, Budget(max_flops=flops_at, max_latency_ms=latency_at))[0]
    assert check_sample(_config(), _sample(BIG_WIDTH), Budget(max_latency_ms=latency_at))[0]
    assert check_sample(_config(), _sample(BIG_WIDTH), Budget(max_latency_ms=latency_at), device="cuda")[0]
    assert check_arch(big, Budget(max_latency_ms=latency_at), device="cuda")[0]
    assert require_feasible(_config(), Budget(max_latency_ms=latency_at), device="cuda").latency_ms is not None
    assert [device for _, device in MEASURED] == ["cpu", "cpu", "cuda", "cuda", "cuda"]
    MEASURED.clear()  # the cuda measurements were asked for
    assert arch_cost(big, with_latency=True).latency_ms == latency_at and MEASURED == [(big, "cpu")]


def test_complexity_range_by_brute_force_and_latency_on_the_device_given():
    import itertools

    from mpn_nas.complexity import Complexity
    from search_spaces.budget import complexity_range

    config = load_config("resnet", dict(TWO_SAMPLES, routings=["feature_dependent", "none"]), in_channels=1,
                         input_size=8, num_classes=10)  # 8 samples; routing "none" has no router weights
    labels = config.labels()
    archs = [sample_to_arch(config, dict(zip(labels, combo))) for combo in itertools.product(*labels.values())]
    costs = [arch_cost(arch) for arch in archs]
    cheapest = min(archs, key=lambda arch: arch_cost(arch).params)
    counted = complexity_range(config)
    smallest = Complexity(min(c.params for c in costs), min(c.flops for c in costs))
    assert counted == {"smallest": smallest, "largest": Complexity(max(c.params for c in costs),
                                                                   max(c.flops for c in costs))}
    assert MEASURED == []
    timed = complexity_range(config, with_latency=True)
    assert timed["smallest"] == Complexity(smallest.params, smallest.flops, fake_latency_ms(cheapest, "cpu"))
    assert MEASURED[0] == (cheapest, "cpu")
    MEASURED.clear()
    complexity_range(config, with_latency=True, device="cuda")
    assert MEASURED == [(cheapest, "cuda")]
    MEASURED.clear()  # asked for


def test_extreme_samples_take_the_ends_of_every_list_and_every_routing_combination():
    from search_spaces.budget import extreme_samples

    config = load_config("resnet", {"widths": [[4, 8], [8, 16]], "blocks": [1, 2], "path_counts": [1, 2, 4],
                                    "routings": ["none", "static"], "densities": [0.5, 1.0]},
                         in_channels=1, input_size=8, num_classes=10)
    lows, highs = extreme_samples(config)
    combos = [{"stage1.routing": a, "stage2.routing": b} for a in ("none", "static") for b in ("none", "static")]
    low = {"stage1.paths": 1, "stage1.density": 0.5, "stage1.width": 4, "stage1.blocks": 1,
           "stage2.paths": 1, "stage2.density": 0.5, "stage2.width": 8, "stage2.blocks": 1}
    high = {"stage1.paths": 4, "stage1.density": 1.0, "stage1.width": 8, "stage1.blocks": 2,
            "stage2.paths": 4, "stage2.density": 1.0, "stage2.width": 16, "stage2.blocks": 2}
    assert lows == [dict(low, **combo) for combo in combos]
    assert highs == [dict(high, **combo) for combo in combos]


@pytest.mark.parametrize("kind", ("params", *KINDS))
def test_a_budget_below_the_smallest_sample_fails_at_once(kind):
    from mpn_nas.errors import UserError
    from search_spaces.budget import require_feasible

    small = arch_cost(sample_to_arch(_config(), _sample(SMALL_WIDTH)))
    if kind in ("flops", "params"):
        smallest = getattr(small, kind)
        below, shown = smallest - 1, f"{smallest:,}"
    else:
        smallest, below, shown = small.params / 1024, (small.params - 1) / 1024, f"{small.params / 1024:,.3f} ms"
    cost = require_feasible(_config(), _budget(kind, smallest))  # the smallest sample exactly at the limit
    assert (cost.params, cost.flops, cost.latency_ms) == (small.params, small.flops,
                                                          smallest if kind == "latency" else None)
    flag = {"flops": "max-flops", "params": "max-params", "latency": "max-latency-ms"}[kind]
    with pytest.raises(UserError) as error:
        require_feasible(_config(), _budget(kind, below))
    assert str(error.value) == (f"budget --{flag} {below:,} is below the smallest architecture in this space "
                                f"({shown}); raise --{flag} to at least {shown.split()[0].replace(',', '')}")


@pytest.mark.parametrize("kind", KINDS)
def test_budget_filter(kind):
    from types import SimpleNamespace

    from strategies.middleware import BudgetFilter

    at, below = _limits(kind)
    small, big = SimpleNamespace(sample=_sample(SMALL_WIDTH)), SimpleNamespace(sample=_sample(BIG_WIDTH))
    at_limit, over = BudgetFilter(_config(), _budget(kind, at)), BudgetFilter(_config(), _budget(kind, below))
    assert at_limit.fits(small) and at_limit.fits(big)
    assert over.fits(small) and not over.fits(big)


def test_budget_filter_measures_on_its_device_and_stops_after_its_patience():
    from types import SimpleNamespace

    from strategies.middleware import BudgetFilter, SampleFits
    from test_duplicates import FakeEngine

    budget = _budget("latency", _limits("latency")[1])  # only SMALL fits
    small, big = SimpleNamespace(sample=_sample(SMALL_WIDTH)), SimpleNamespace(sample=_sample(BIG_WIDTH))
    default = BudgetFilter(_config(), budget)
    assert default.patience == 2000 and default.extra_repr() == f"budget={budget}"
    assert default.fits(small) and SampleFits(_config(), budget)(small.sample)
    assert [device for _, device in MEASURED] == ["cpu", "cpu"]
    on_gpu = BudgetFilter(_config(), budget, device="cuda:1", patience=2)
    assert not on_gpu.fits(big) and SampleFits(_config(), budget, device="cuda:1")(small.sample)
    assert [device for _, device in MEASURED[2:]] == ["cuda:1", "cuda:1"]
    MEASURED.clear()  # the GPU measurements were asked for
    on_gpu.set_engine(FakeEngine())
    on_gpu.submit_models(big)
    assert on_gpu.budget_available() and on_gpu.screened_out == 1
    on_gpu.submit_models(big)  # two over-budget proposals in a row: its patience is spent
    assert not on_gpu.budget_available() and on_gpu.screened_out == 2
    MEASURED.clear()


def _space():
    from search_spaces import ResNetSpace

    return ResNetSpace(in_channels=1, input_size=8, num_classes=10, config=TWO_SAMPLES)


def _run_budgeted(tmp_path, name: str, budget: Budget):
    from strategies.budgeted import with_budget
    from strategies.registry import make_strategy

    space = _space()
    inner = make_strategy(name, 2, seed=0, config=space.config, budget=budget)
    strategy = with_budget(inner, space.config, budget)
    run_experiment(space, strategy, 2, tmp_path / name / str(budget))
    return inner, strategy, [m.sample for m in trained_models(strategy)]


@pytest.mark.parametrize("kind", KINDS)
def test_with_budget_around_nni_random(tmp_path, kind):
    at, below = _limits(kind)
    _, strategy, trained = _run_budgeted(tmp_path, "random", _budget(kind, at))
    assert _widths(trained) == {SMALL_WIDTH, BIG_WIDTH} and strategy.screened_out == 0
    _, strategy, trained = _run_budgeted(tmp_path, "random", _budget(kind, below))
    assert _widths(trained) == {SMALL_WIDTH} and strategy.budget_filter.screened_out > 0


@pytest.mark.parametrize("name", ["evolution", "pareto"])
@pytest.mark.parametrize("kind", KINDS)
def test_feasible_sampling_strategies(tmp_path, name, kind):
    """Budget-aware evolution and the Pareto strategy reject over-budget candidates themselves."""
    at, below = _limits(kind)
    inner, _, trained = _run_budgeted(tmp_path, name, _budget(kind, at))
    assert _widths(trained) == {SMALL_WIDTH, BIG_WIDTH} and inner.screened_out == 0
    inner, strategy, trained = _run_budgeted(tmp_path, name, _budget(kind, below))
    assert _widths(trained) == {SMALL_WIDTH}
    assert inner.screened_out > 0 and strategy.budget_filter.screened_out == 0


@pytest.mark.parametrize("tuner_name", ["BudgetedTPE", "BudgetedEvolution", "BudgetedRandom"])
@pytest.mark.parametrize("kind", KINDS)
def test_nnictl_tuners(tmp_path, kind, tuner_name):
    import nni

    from search_spaces.hpo import hpo_search_space
    from strategies import tuners

    (tmp_path / "space.json").write_text(json.dumps(TWO_SAMPLES))
    proposed = {}
    for limit in _limits(kind):
        tuner = getattr(tuners, tuner_name)(space="resnet", shape="digits", space_config=str(tmp_path / "space.json"),
                                            seed=0, **{f"max_{'flops' if kind == 'flops' else 'latency_ms'}": limit})
        tuner.update_search_space(hpo_search_space(_config()))
        widths = []
        for parameter_id in range(12):
            try:
                parameters = tuner.generate_parameters(parameter_id)
            except nni.NoMoreTrialError:  # the tuner deduplicates: two samples are soon all proposed
                break
            widths.append(parameters["stage2.width"])
            tuner.receive_trial_result(parameter_id, parameters, 0.5)
        proposed[limit] = (set(widths), tuner.rejected)
    at, below = _limits(kind)
    assert proposed[at] == ({SMALL_WIDTH, BIG_WIDTH}, 0)
    assert proposed[below][0] == {SMALL_WIDTH} and proposed[below][1] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_search_command(tmp_path, monkeypatch, capsys, kind):
    import strategies.evaluation as evaluation
    from mpn_nas.cli import main

    monkeypatch.setattr(evaluation, "make_evaluator", lambda **settings: proxy_evaluator())  # no training
    (tmp_path / "space.json").write_text(json.dumps(TWO_SAMPLES))
    for limit, name in zip(_limits(kind), ("at", "below")):
        out = tmp_path / name
        status = main(["search", "--space-config", str(tmp_path / "space.json"), "--trials", "2", "--epochs", "1",
                       "--device", "cpu", "--out", str(out), "--quiet", *_limit_flag(kind, limit)])
        assert status == 0, capsys.readouterr().err
        with open(out / "trials.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        summary = json.loads((out / "summary.json").read_text())
        widths = {int(row["stage2.width"]) for row in rows}
        if name == "at":
            assert widths == {SMALL_WIDTH, BIG_WIDTH} and summary["screened_out"] == 0
        else:
            assert widths == {SMALL_WIDTH} and summary["screened_out"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_trial_command(tmp_path, monkeypatch, capsys, kind):
    import nni

    import strategies.evaluation as evaluation
    from mpn_nas.cli import main

    trained = []
    monkeypatch.setattr(nni, "get_next_parameter", lambda: _sample(BIG_WIDTH))
    monkeypatch.setattr(evaluation, "train_arch_and_report", lambda arch, config, **settings: trained.append(arch) or 0.5)
    (tmp_path / "space.json").write_text(json.dumps(TWO_SAMPLES))
    at, below = _limits(kind)
    command = ["trial", "--space-config", str(tmp_path / "space.json"), "--epochs", "1", "--device", "cpu"]
    assert main([*command, *_limit_flag(kind, at)]) == 0, capsys.readouterr().err
    assert trained == [sample_to_arch(_config(), _sample(BIG_WIDTH))]
    capsys.readouterr()
    assert main([*command, *_limit_flag(kind, below)]) == 2
    assert "over budget" in capsys.readouterr().err and len(trained) == 1
