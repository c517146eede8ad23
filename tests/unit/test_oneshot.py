"""One-shot search: the primitives' mixed operations (NNI's own checks for mixed operations), the
exactness of sampled subnets, NNI's strategies on the spaces, the expected-cost penalty and budgets."""
import random

import nni
import pytest
import torch
from nni.mutable import frozen_context
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.sampling import MixedOpPathSamplingPolicy
from nni.nas.strategy import DARTS, Proxyless, RandomOneShot
from torch import nn

from oneshot_helpers import ROUTINGS, SMALL, UserSpace, digits_batch
from mpn_nas import Arch, build_model, profile
from mpn_nas.layers import MultiPathBasicBlock, MultiPathConv2d, MultiPathLinear
from mpn_nas.recipe import TrainConfig
from search_spaces import MLPSpace, ResNetSpace
from search_spaces.budget import Budget
from search_spaces.expected_cost import ExpectedCost
from search_spaces.oneshot import (
    DifferentiablePolicy, MixedMultiPathBasicBlock, MixedMultiPathConv2d, MixedMultiPathLinear, ProxylessMixedOpPolicy)
from search_spaces.primitives import MutableMultiPathBasicBlock, MutableMultiPathConv2d, MutableMultiPathLinear

def resample(supernet) -> dict:
    memo = {}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            memo.update(module.resample(memo))
    return memo


# --- NNI's checks for mixed operations (test/algo/nas/oneshot/test_supermodules.py), per primitive ---

def _mixed(module_cls, mixed_cls, policy, **kwargs):
    with frozen_context():  # a dry run, as inside a ModelSpace's __init__
        module = module_cls(**kwargs)
    memo = {label: nn.Parameter(torch.randn(len(spec.values)) * 1e-3) for label, spec in module.simplify().items()}
    mixed = mixed_cls.mutate(module, "op", memo, {"mixed_op_sampling": policy})
    assert isinstance(mixed, mixed_cls)
    return module, mixed


PRIMITIVES = {
    "conv": (MutableMultiPathConv2d, MixedMultiPathConv2d, lambda: dict(
        in_channels=nni.choice("cin", [4, 8]), out_channels=nni.choice("cout", [4, 8]),
        path_count=nni.choice("p", [1, 2, 4]), in_paths=nni.choice("pin", [2, 4]),
        routing=nni.choice("routing", ROUTINGS[1:]), density=nni.choice("density", [0.5, 1.0])), (4, 8, 6, 6)),
    "linear": (MutableMultiPathLinear, MixedMultiPathLinear, lambda: dict(
        in_features=nni.choice("cin", [4, 8]), out_features=nni.choice("cout", [4, 8]),
        path_count=nni.choice("p", [1, 2, 4]), in_paths=nni.choice("pin", [2, 4]),
        routing=nni.choice("routing", ROUTINGS[1:]), density=nni.choice("density", [0.5, 1.0])), (4, 8)),
    "block": (MutableMultiPathBasicBlock, MixedMultiPathBasicBlock, lambda: dict(
        in_channels=nni.choice("cin", [4, 8]), width=nni.choice("cout", [4, 8]), path_count=nni.choice("p", [2, 4]),
        in_paths=nni.choice("pin", [2, 4]), routing=nni.choice("routing", ROUTINGS[1:]),
        density=nni.choice("density", [0.5, 1.0]), stride=1), (4, 8, 6, 6)),
}


def _input(shape, sample):
    """Input of the sampled sizes: ``(B, pin, cin, ...)``."""
    return torch.randn(shape[0], sample["pin"], sample["cin"], *shape[2:])


@pytest.mark.parametrize("name", PRIMITIVES)
def test_sampling_mode_equals_the_frozen_layer(name):
    """NNI's sampling sanity check and frozen-versus-mutated equality: the mixed operation in
    sampling mode computes exactly what its frozen plain layer (with the sliced weights) computes."""
    module_cls, mixed_cls, kwargs, shape = PRIMITIVES[name]
    module, mixed = _mixed(module_cls, mixed_cls, MixedOpPathSamplingPolicy, **kwargs())
    with torch.no_grad():  # weights and statistics away from their initial values
        for param in mixed.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    rng = random.Random(0)
    for _ in range(12):
        sample = {label: rng.choice(spec.values) for label, spec in module.simplify().items()}
        mixed.resample(dict(sample))
        x = _input(shape, sample)
        mixed.train()
        mixed(x)  # batch norm statistics of this subnet move, in the supernet
        mixed.eval()
        frozen = mixed.freeze(sample).eval()
        assert isinstance(frozen, {"conv": MultiPathConv2d, "linear": MultiPathLinear, "block": MultiPathBasicBlock}[name])
        with torch.no_grad():
            torch.testing.assert_close(mixed(x), frozen(x), rtol=0, atol=1e-5)
        with frozen_context(sample):  # the same layer built directly from the sample has the same shapes
            plain = module_cls(**kwargs())
        assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in frozen.state_dict().items()}


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("policy", [DifferentiablePolicy, ProxylessMixedOpPolicy], ids=["darts", "proxyless"])
def test_differentiable_modes_give_every_architecture_weight_a_gradient(name, policy):
    """NNI's differentiable sanity check: export is a valid sample, export_probs sums to one per
    label, and the loss sends a gradient to every architecture weight that changes the output."""
    module_cls, mixed_cls, kwargs, shape = PRIMITIVES[name]
    module, mixed = _mixed(module_cls, mixed_cls, policy, **kwargs())
    labels = module.simplify()
    exported = mixed.export({})
    assert set(exported) == set(labels) and all(exported[k] in labels[k].values for k in labels)
    probs = mixed.export_probs({})
    assert all(abs(sum(p.values()) - 1) < 1e-6 for p in probs.values())
    touched = set()
    for _ in range(8 if policy is ProxylessMixedOpPolicy else 1):
        sample = mixed.resample({}) or {"pin": max(labels["pin"].values), "cin": max(labels["cin"].values)}
        x = _input(shape, sample)
        mixed.train()
        mixed(x).pow(2).mean().backward()
        touched |= {label for label, alpha in mixed._arch_alpha.items() if alpha.grad is not None
                    and alpha.grad.abs().sum() > 0}
    # the input's own sizes cannot change a loss computed on a given input; every other label must
    assert touched >= set(labels) - {"pin", "cin"} - ({"density"} if name == "block" else set()), touched


# --- subnets of the spaces are the networks retrain builds ----------------------------------------

@pytest.mark.parametrize("space_factory", [lambda: ResNetSpace(), lambda: MLPSpace(), UserSpace],
                         ids=["resnet", "mlp", "user"])
def test_sampled_subnet_equals_frozen_space_with_inherited_weights(space_factory):
    """30 random samples: the supernet in sampling mode gives the outputs of ``space.freeze(sample)``
    (eval mode, max abs difference <= 1e-5), whose parameter count is what profile counts."""
    space = space_factory()
    supernet = RandomOneShot().mutate_model(space)
    images, _ = digits_batch(16)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05)
    for _ in range(5):  # weights and batch-norm statistics away from their initial values
        resample(supernet)
        supernet.train()
        loss = supernet(images).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for _ in range(30):
        sample = resample(supernet)
        supernet.eval()
        with torch.no_grad():
            frozen = space.freeze(sample).eval()
            torch.testing.assert_close(supernet(images), frozen(images), rtol=0, atol=1e-5)
        if hasattr(space, "to_arch"):
            arch = space.to_arch(sample)
            assert type(frozen) is type(build_model(arch))
            assert sum(p.numel() for p in frozen.parameters()) == profile(arch, latency=False).params


def test_freeze_of_an_untrained_space_is_the_builder():
    space = ResNetSpace()
    sample = {label: values[-1] for label, values in space.config.labels().items()}
    frozen = space.freeze(sample)
    reference = build_model(Arch.from_json(space.to_arch(sample).to_json()))
    assert type(frozen) is type(reference)
    assert {k: v.shape for k, v in frozen.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}


def test_a_label_is_shared_by_every_module_that_depends_on_it():
    """stage1.paths is the stem's path count and stage 2's in_paths; stage2.paths is the head's."""
    space = ResNetSpace()
    stem_labels = set(space.stem.simplify())
    assert stem_labels == {"stage1.paths"}
    first_block_stage2 = space.stages[1].blocks[0]
    assert {"stage1.paths", "stage2.paths", "stage1.width", "stage2.width"} <= set(first_block_stage2.simplify())
    assert set(space.head.simplify()) == {"stage2.paths", "stage2.width"}


# --- NNI's one-shot strategies on the spaces --------------------------------------------------------

# --- the expected cost and the budgets --------------------------------------------------------------

def _alphas(supernet) -> dict:
    return {label: alpha for module in supernet.modules() if hasattr(module, "_arch_alpha")
            for label, alpha in module._arch_alpha.items()}


@pytest.mark.parametrize("space_cls", [ResNetSpace, MLPSpace])
def test_expected_cost_at_one_hot_probabilities_is_the_profiled_cost(space_cls):
    space = space_cls(config=SMALL if space_cls is ResNetSpace else {"widths": [[8, 16], [8, 16]]})
    supernet = DARTS().mutate_model(space)
    costs = {metric: ExpectedCost(supernet, metric, digits_batch(2)[0]) for metric in ("params", "flops")}
    alphas, labels = _alphas(supernet), space.config.labels()
    rng = random.Random(1)
    for _ in range(6):
        sample = {label: rng.choice(values) for label, values in labels.items()}
        with torch.no_grad():
            for label, alpha in alphas.items():
                alpha.fill_(-40.0)
                alpha[labels[label].index(sample[label])] = 40.0
        counted = profile(space.to_arch(sample), latency=False)
        with torch.no_grad():
            assert round(float(costs["params"]())) == counted.params
            assert round(float(costs["flops"]())) == counted.flops


@pytest.mark.parametrize("strategy_cls", [DARTS, Proxyless])
def test_budget_penalty_moves_the_architecture_weights(strategy_cls):
    from strategies.oneshot import BudgetPenalty

    supernet = strategy_cls().mutate_model(ResNetSpace(config=SMALL))
    penalty = BudgetPenalty(supernet, Budget(max_params=1_000), digits_batch(2)[0])
    value = penalty()
    assert value > 0  # the uniform architecture is far over 1,000 parameters
    value.backward()
    alphas = _alphas(supernet)
    for label in ("stage1.paths", "stage1.width", "stage2.paths", "stage2.width", "stage2.blocks"):
        assert alphas[label].grad.abs().sum() > 0, label
    # descending the penalty makes the expected size smaller
    before = penalty.expected()["params"]
    with torch.no_grad():
        for alpha in alphas.values():
            if alpha.grad is not None:
                alpha -= 1.0 * alpha.grad / (alpha.grad.norm() + 1e-12)
    assert penalty.expected()["params"] < before


def test_spos_samples_only_subnets_within_the_budget():
    from strategies.middleware import SampleFits

    space = ResNetSpace(config=SMALL)
    budget = Budget(max_params=6_000)
    fits = SampleFits(space.config, budget)
    strategy = RandomOneShot(filter=fits)
    supernet = strategy.mutate_model(space)
    from nni.nas.oneshot.pytorch.sampling import RandomSamplingLightningModule

    module = RandomSamplingLightningModule(nn.Module(), fits)
    module.supernet_modules = lambda: [m for m in supernet.modules() if isinstance(m, BaseSuperNetModule)]
    for _ in range(40):
        sample = module.resample()
        assert profile(space.to_arch(sample), latency=False).params <= 6_000


@pytest.mark.parametrize("engine_options", [dict(engine="ts"), dict(concurrency=2)])
def test_oneshot_strategy_refuses_multi_trial_engine_options_in_one_line(tmp_path, engine_options):
    from mpn_nas.errors import UserError
    from strategies.search import SearchSettings, run_search

    out = tmp_path / "out"
    with pytest.raises(UserError, match="in this process") as refused:
        run_search(SearchSettings(out=out, strategy="spos", quiet=True, training=TrainConfig(device="cpu"),
                                  **engine_options))
    assert "\n" not in str(refused.value) and not out.exists()  # nothing written


def test_rank_correlations_on_hand_written_cases():
    import importlib.util

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("oneshot_vs_multitrial", REPO / "benchmarks" / "oneshot_vs_multitrial.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert bench.kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant pair
    assert bench.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)  # tied ranks share 0.5
