"""The benchmarks run end to end in a tiny configuration, their flags checked by their effect (a test of
the code path, not of the figures)."""
import json
import statistics
import subprocess
import sys

import pytest
import torch

from helpers import REPO, figure_pixels, load_benchmark, png_size
from mpn_nas import build_model
from mpn_nas.layers import ROUTING_TYPES


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_layer_speed_runs_and_reports_every_implementation(tmp_path):
    out = tmp_path / "speed.md"
    result = _run("layer_speed.py", "--paths", "1", "2", "--batch", "2", "--channels", "2", "--size", "4",
                  "--linear-batch", "4", "--features", "3", "--repeats", "2", "--warmup", "0", "--threads", "1",
                  "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table in result.stdout
    assert "**MultiPathConv2d" in table and "**MultiPathLinear" in table
    assert table.count("\n| 1 |") == 2 and table.count("\n| 2 |") == 2
    assert "malloc: freed memory kept" in table  # the CPU default, as in training
    doc = json.loads(out.with_suffix(".json").read_text())
    medians, times = doc["median_ms"], doc["times_ms"]
    expected = {*ROUTING_TYPES, "naive", "dense"}
    peers = {"peer:selective_kernel", "peer:selective_kernel:plain", "peer:split_attention", "peer:split_attention:plain"}
    assert expected | {"op:grouped", "op:channels_last", "op:loop"} | peers == set(medians["conv"]["2"])
    assert expected | {"op:bmm", "op:loop"} == set(medians["linear"]["1"])
    for kind in ("conv", "linear"):  # the medians written are those of the --repeats rounds timed
        for paths, row in medians[kind].items():
            for name, ms in row.items():
                assert len(times[kind][paths][name]) == 2 and ms == statistics.median(times[kind][paths][name])
            assert f"| {paths} | {row['none']:.2f} |" in table  # the table shows the same medians


@pytest.mark.slow
def test_paper_table_runs_and_matches_parameters(tmp_path, monkeypatch):
    """In-process (the same main() as the script), real training; its flags checked by what they did."""
    import mpn_nas.training as training

    table = load_benchmark("paper_table")
    trained, timed = [], []

    def spied_train(arch, data, config, *args, **kwargs):
        trained.append((arch, config))
        return real_train(arch, data, config, *args, **kwargs)

    def spied_latency(arch, repeats):
        timed.append(arch)
        return 1.0 + len(timed)  # a distinct, known time per round: the medians below are checkable

    real_train = training.train
    monkeypatch.setattr(training, "train", spied_train)
    monkeypatch.setattr(table, "measure_latency_ms", spied_latency)
    threads = torch.get_num_threads()
    out = tmp_path / "table"
    try:
        assert table.main(["--datasets", "digits-contexts", "cifar10", "--variants", "multipath", "feature_dependent",
                           "--seeds", "2", "--epochs", "1", "--jobs", "1", "--device", "cpu", "--latency-rounds", "3",
                           "--data-dir", str(tmp_path / "no-cifar-here"), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # train_one sets the worker's thread count
    # --epochs 1, --seeds 2, --variants: four trainings of one epoch, seeds 0 and 1 of each variant.
    assert [(config.epochs, config.seed, config.device) for _, config in trained] == \
        [(1, 0, "cpu"), (1, 0, "cpu"), (1, 1, "cpu"), (1, 1, "cpu")]
    routings = [{stage.routing for stage in arch.stages} for arch, _ in trained]
    assert routings == [{"none"}, {"feature_dependent"}] * 2
    doc = json.loads(out.with_suffix(".json").read_text())["datasets"]
    assert sorted((r["variant"], r["seed"]) for r in doc["digits-contexts"]["runs"]) == [
        ("feature_dependent", 0), ("feature_dependent", 1), ("multipath", 0), ("multipath", 1)]
    summary = doc["digits-contexts"]["summary"]  # cifar10 skipped: no files
    rows = summary["variants"]
    assert summary["best_routed"] == "feature_dependent"
    reference = rows["feature_dependent"]["params"]
    assert abs(rows["multipath"]["params"] - reference) <= 0.05 * reference
    assert rows["multipath"]["params"] == sum(p.numel() for p in build_model(trained[0][0]).parameters())
    assert rows["multipath"]["vs_best_routed"]["seeds"] == 2
    # --latency-rounds 3: three interleaved rounds over the two variants; each reported time is the median
    # of its variant's rounds (times 2, 4, 6 and 3, 5, 7).
    assert len(timed) == 6 and (rows["multipath"]["latency_ms"], rows["feature_dependent"]["latency_ms"]) == (4.0, 5.0)
    markdown = out.with_suffix(".md").read_text()
    assert "multi-path, routing `none`" in markdown and "`cifar10` skipped: cifar10 files not found" in markdown
    assert "1 epochs" in markdown and "median of 3 interleaved rounds" in markdown
    assert png_size(out.with_suffix(".png")) == figure_pixels(6 * 1, 4.5, 120)  # one panel: the data set run


def test_every_variant_is_matched_within_tolerance():
    table = load_benchmark("paper_table")
    base = table.DIGITS_BASE
    reference = table.param_count(table.resnet_arch(base, paths=base.paths, routing=table.REFERENCE))
    for variant in [v for v in table.VARIANTS if v != "searched"]:  # searched: found by a search, not matched
        arch = table.matched_arch(variant, base, reference, 0.05)
        params = table.param_count(arch)
        if variant == "single":
            assert arch.stages[0].paths == 1 and params < reference / 2
        else:
            assert abs(params - reference) <= 0.05 * reference, variant
    deeper = table.matched_arch("deeper", base, reference, 0.05)
    assert deeper.stages[0].blocks > 1 and deeper.stages[0].paths == 1
    assert table.matched_arch("ensemble", base, reference, 0.05).ensemble_size == base.paths
    with pytest.raises(table.UserError):
        table.matched_arch("widened", base, reference, 0.0001)


def test_layer_speed_can_measure_with_glibc_malloc_defaults(tmp_path):
    result = _run("layer_speed.py", "--paths", "1", "--layers", "linear", "--linear-batch", "4", "--features", "3",
                  "--repeats", "1", "--warmup", "0", "--threads", "1", "--default-malloc")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "malloc: glibc defaults" in result.stdout


def _initial_measures(router_learning, routing: str, aligned_weight: float, seed: int) -> list[dict]:
    """router_learning's measures of the untrained network, built here with the routers' initial aligned
    weight at ``aligned_weight``."""
    from mpn_nas import build_model
    from mpn_nas.data import make_data
    from mpn_nas.layers.routers import Router

    paper_table = sys.modules["paper_table"]
    arch = paper_table.resnet_arch(paper_table.DIGITS_BASE, paths=paper_table.DIGITS_BASE.paths, routing=routing)
    data = make_data("digits-contexts", seed=seed, batch_size=paper_table.DIGITS_BASE.batch_size)
    torch.manual_seed(seed)
    model = build_model(arch)
    for module in model.modules():
        if isinstance(module, Router):
            module.reset_logits(aligned_weight)
    return router_learning.layer_measures(model, data.test_set)


def test_router_learning_reports_trained_and_initial_routing(tmp_path, monkeypatch):
    out = tmp_path / "routers"
    result = _run("router_learning.py", "--routings", "feature_dependent", "--scales", "1", "10", "--aligned-weights",
                  "0.9", "--seeds", "1",
                  "--epochs", "1", "--threads", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [(r["routing"], r["router_lr_scale"]) for r in runs] == [("feature_dependent", 1.0), ("feature_dependent", 10.0)]
    for run in runs:
        assert [layer["layer"] for layer in run["layers"]] == ["blocks.0.conv1.mix", "blocks.1.conv1.mix"]
    table = out.with_suffix(".md").read_text()
    assert table in result.stdout and table.count("`feature_dependent`") == 2

    # The flags by their effect. --aligned-weights 0.9: the untrained networks are those built with the
    # routers' aligned weight at 0.9 (not at the default, 0.5); the same for both scales (same seed).
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    router_learning = load_benchmark("router_learning")
    at_09, at_default = (_initial_measures(router_learning, "feature_dependent", w, 0) for w in (0.9, 0.5))
    keys = ("spread", "context_bits", "class_bits")

    def initial(run):
        return [layer[f"initial_{k}"] for layer in run["layers"] for k in keys]

    def measured(layers):
        return [layer[k] for layer in layers for k in keys]

    assert initial(runs[0]) == initial(runs[1])
    assert initial(runs[0]) == pytest.approx(measured(at_09), rel=1e-4)  # float sums differ with threads
    assert initial(runs[0]) != pytest.approx(measured(at_default), rel=1e-2)
    # --scales: the router learning rate changed what training did to the routers.
    assert [layer["spread"] for layer in runs[0]["layers"]] != [layer["spread"] for layer in runs[1]["layers"]]
    # A feature-dependent router's routing varies with its input, from initialisation on.
    assert all(layer["initial_spread"] > 0 and layer["spread"] > 0 for layer in runs[0]["layers"])
