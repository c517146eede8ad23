import itertools
import json
import random

import pytest
import torch
from nni.common.hpo_utils.validation import validate_search_space
from nni.nas.space import SimplifiedModelSpace

from helpers import assert_refused
from mpn_nas import Arch, build_model, profile
from mpn_nas.errors import UserError
from mpn_nas.layers import MultiPathConv2d
from search_spaces import MLPSpace, ResNetSpace, arch_from_parameters, default_config, sample_to_arch
from search_spaces.budget import Budget, check_sample, complexity_range, require_feasible
from search_spaces.config import load_config
from search_spaces.hpo import hpo_search_space

DIGITS, CIFAR = dict(in_channels=1, input_size=8, num_classes=10), dict(in_channels=3, input_size=32, num_classes=10)


def random_samples(space_or_config, count, seed=0):
    config = getattr(space_or_config, "config", space_or_config)
    rng = random.Random(seed)
    labels = config.labels()
    return [{label: rng.choice(values) for label, values in labels.items()} for _ in range(count)]


@pytest.mark.parametrize("space_cls", [ResNetSpace, MLPSpace])
def test_trial_model_equals_retrain_model(space_cls):
    """The model NNI's engine trains (space re-created under the sample) and the model retrain builds
    from the exported document have the same parameters and, with the same weights, the same outputs."""
    space = space_cls(**DIGITS)
    executable = SimplifiedModelSpace.from_model(space)
    x = torch.randn(3, 1, 8, 8)
    for sample in random_samples(space, 30):
        trial_model = executable.freeze(sample).executable_model().eval()
        arch = Arch.from_json(space.to_arch(sample).to_json())  # through the JSON document
        retrain_model = build_model(arch).eval()
        assert trial_model.arch == arch
        count = sum(p.numel() for p in retrain_model.parameters())
        assert sum(p.numel() for p in trial_model.parameters()) == count
        retrain_model.load_state_dict(trial_model.network.state_dict())
        torch.testing.assert_close(trial_model(x), retrain_model(x))
        frozen = space.freeze(sample)
        assert type(frozen) is type(retrain_model) and sum(p.numel() for p in frozen.parameters()) == count


@pytest.mark.parametrize("space_cls", [ResNetSpace, MLPSpace])
@pytest.mark.parametrize("shape", [DIGITS, CIFAR], ids=["digits", "cifar"])
def test_hundred_random_samples_build_and_run(space_cls, shape):
    space = space_cls(**shape)
    x = torch.randn(2, shape["in_channels"], shape["input_size"], shape["input_size"])
    seen = set()
    with torch.no_grad():
        for sample in random_samples(space, 100, seed=1):
            arch = space.to_arch(sample)
            seen.add(arch)
            assert build_model(arch).eval()(x).shape == (2, shape["num_classes"])
    assert len(seen) > 90  # the samples really differ


def test_labels_are_stable_and_readable():
    space = ResNetSpace(**DIGITS)
    assert list(space.simplify()) == ["stage1.paths", "stage1.routing", "stage1.density", "stage1.width",
                                      "stage1.blocks", "stage2.paths", "stage2.routing", "stage2.density",
                                      "stage2.width", "stage2.blocks"]
    shared = ResNetSpace(**DIGITS, config={"shared": True})
    assert list(shared.simplify())[:3] == ["paths", "routing", "density"]
    arch = shared.to_arch(random_samples(shared, 1)[0])
    assert len({(s.paths, s.routing) for s in arch.stages}) == 1


def test_repair_rules():
    config = default_config("resnet", **DIGITS)
    base = random_samples(config, 1)[0]
    # rule 1: none between different path counts becomes static
    arch = sample_to_arch(config, dict(base, **{"stage1.paths": 2, "stage2.paths": 4, "stage2.routing": "none"}))
    assert arch.stages[1].routing == "static"
    # rule 2: one path fed by one path routes nothing
    arch = sample_to_arch(config, dict(base, **{"stage1.paths": 1, "stage1.routing": "feature_dependent"}))
    assert arch.stages[0].routing == "none" and arch.stages[0].density == 1.0
    # rule 3: density without a choice of connections is 1
    arch = sample_to_arch(config, dict(base, **{"stage1.paths": 1, "stage2.paths": 4, "stage2.routing": "static",
                                               "stage2.density": 0.5}))
    assert arch.stages[1].density == 1.0
    # a real choice keeps its density
    arch = sample_to_arch(config, dict(base, **{"stage1.paths": 4, "stage2.paths": 4, "stage2.routing": "static",
                                               "stage2.density": 0.5}))
    assert arch.stages[1].density == 0.5


@pytest.mark.parametrize("family", ["resnet", "mlp"])
def test_exported_search_space_is_valid_and_every_combination_maps(family):
    config = default_config(family, **DIGITS)
    exported = hpo_search_space(config)
    assert validate_search_space(exported, raise_exception=True)
    space = (ResNetSpace if family == "resnet" else MLPSpace)(**DIGITS)
    rng = random.Random(2)
    combos = [{k: rng.choice(v["_value"]) for k, v in exported.items()} for _ in range(300)]
    combos += [{k: v["_value"][0] for k, v in exported.items()}, {k: v["_value"][-1] for k, v in exported.items()}]
    for params in combos:
        arch = arch_from_parameters(space, json.loads(json.dumps(params)))  # as a tuner sends them
        assert Arch.from_dict(arch.to_dict()) == arch


def test_parameters_outside_the_space_are_refused():
    space = ResNetSpace(**DIGITS)
    params = random_samples(space, 1)[0]
    with pytest.raises(UserError, match="stage1.paths"):
        arch_from_parameters(space, dict(params, **{"stage1.paths": 3}))
    with pytest.raises(UserError, match="stage2.width"):
        arch_from_parameters(space, {k: v for k, v in params.items() if k != "stage2.width"})


@pytest.mark.parametrize("family,shape", [("resnet", DIGITS), ("mlp", DIGITS), ("resnet", CIFAR)])
def test_budget_screening_agrees_with_profile(family, shape):
    config = default_config(family, **shape)
    budget = Budget(max_params=40_000, max_flops=3_000_000)
    for sample in random_samples(config, 15, seed=3):
        fits, cost, problems = check_sample(config, sample, budget)
        measured = profile(sample_to_arch(config, sample), latency=False)
        assert (cost.params, cost.flops) == (measured.params, measured.flops)
        assert fits == (measured.params <= 40_000 and measured.flops <= 3_000_000)
        assert fits == (not problems)


def test_complexity_range_matches_brute_force_on_a_small_space():
    config = default_config("resnet", **DIGITS).__class__(
        widths=((4, 8), (8,)), strides=(1, 2), blocks=(1,), path_counts=(1, 2), densities=(1.0,),
        routings=("none", "static", "cross_prediction", "feature_dependent"))
    labels = config.labels()
    costs = [profile(sample_to_arch(config, dict(zip(labels, combo))), latency=False)
             for combo in itertools.product(*labels.values())]
    extremes = complexity_range(config)
    assert extremes["smallest"].params == min(c.params for c in costs)
    assert extremes["largest"].params == max(c.params for c in costs)
    assert extremes["smallest"].flops == min(c.flops for c in costs)
    assert extremes["largest"].flops == max(c.flops for c in costs)


def test_infeasible_budget_names_the_smallest_value():
    config = default_config("resnet", **DIGITS)
    smallest = complexity_range(config)["smallest"]
    with pytest.raises(UserError, match=f"{smallest.params:,}"):
        require_feasible(config, Budget(max_params=smallest.params - 1))
    with pytest.raises(UserError, match=f"{smallest.flops:,}"):
        require_feasible(config, Budget(max_flops=100))
    assert require_feasible(config, Budget(max_params=smallest.params)).params == smallest.params


def test_mutable_primitive_freezes_to_plain_layer():
    from nni.nas.nn.pytorch import ModelSpace

    import nni
    from search_spaces import MutableMultiPathConv2d

    class Space(ModelSpace, label_prefix="s"):
        def __init__(self):
            super().__init__()
            self.layer = MutableMultiPathConv2d(4, nni.choice("w", [8, 16]), nni.choice("p", [2, 4]),
                                                routing=nni.choice("r", ["static", "feature_dependent"]))

    space = Space()
    assert set(space.simplify()) == {"s/w", "s/p", "s/r"}
    frozen = space.freeze({"s/w": 16, "s/p": 4, "s/r": "feature_dependent"})
    assert type(frozen.layer) is MultiPathConv2d
    assert frozen.layer(torch.randn(2, 4, 4, 6, 6)).shape == (2, 4, 16, 6, 6)
    assert frozen.layer.mix.router.routing == "feature_dependent"


def test_block_kind_is_a_knob_of_the_space_when_it_has_several_candidates(tmp_path):
    from mpn_nas.layers import BLOCK_KINDS

    plain = load_config("resnet", None, in_channels=1, input_size=8, num_classes=10)
    assert not any(label.endswith(".block") for label in plain.labels())  # old spaces unchanged
    config = load_config("resnet", {"block_kinds": ["basic", "selective_kernel", "split_attention"]},
                         in_channels=1, input_size=8, num_classes=10)
    assert config.labels()["stage2.block"] == ["basic", "selective_kernel", "split_attention"]
    assert config.size() == plain.size() * 3 ** config.stage_count
    sample = {label: values[0] for label, values in config.labels().items()} | {
        "stage1.block": "split_attention", "stage2.block": "selective_kernel"}
    arch = sample_to_arch(config, sample)
    assert [stage.block for stage in arch.stages] == ["split_attention", "selective_kernel"]
    model = build_model(arch)  # the blocks really are the chosen kinds
    assert sum(isinstance(m, BLOCK_KINDS["selective_kernel"]) for m in model.modules()) == arch.stages[1].blocks
    space = ResNetSpace(config=config.to_dict())
    assert "stage1.block" in space.simplify() and space.to_arch(sample) == arch
    for bad, message in [({"block_kinds": ["bottleneck"]}, "block_kinds"),
                         ({"block_kinds": ["split_attention"], "stem_width": 15}, "divisible by 2")]:
        with pytest.raises(UserError, match=message):
            load_config("resnet", bad, in_channels=1, input_size=8, num_classes=10)
    with pytest.raises(UserError, match="block_kinds"):
        load_config("mlp", {"block_kinds": ["basic", "selective_kernel"]}, in_channels=1, input_size=8,
                    num_classes=10)


def test_export_space_command(tmp_path, cli):
    out = tmp_path / "search_space.json"
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps({"path_counts": [2, 4], "routings": ["feature_dependent"], "shared": True}))
    assert cli("export-space", "--space", "resnet", "--space-config", narrow, "-o", out) == (0, [])
    exported = json.loads(out.read_text())
    assert exported["paths"] == {"_type": "choice", "_value": [2, 4]}
    assert exported["routing"]["_value"] == ["feature_dependent"]
    assert validate_search_space(exported, raise_exception=True)
    narrow.write_text(json.dumps({"path_counts": [0, 2]}))
    assert_refused(cli("export-space", "--space-config", narrow, "-o", out), "path_counts")
    narrow.write_text('{"path_counts": [2,')
    assert_refused(cli("export-space", "--space-config", narrow, "-o", out), "not valid JSON")
    assert_refused(cli("export-space", "--space", "vit", "-o", out), "invalid choice", "vit")
