import itertools
import math

import pytest
import torch

from mpn_nas.layers import ROUTING_TYPES, build_router, kept_connections

SHAPES = [(p_in, p_out) for p_in in range(1, 9) for p_out in range(1, 9)]
DENSITIES = (0.25, 0.5, 1.0)


def _cases():
    for routing, (p_in, p_out), density in itertools.product(ROUTING_TYPES, SHAPES, DENSITIES):
        if routing == "none" and p_in != p_out:
            continue
        yield routing, p_in, p_out, density


@pytest.mark.parametrize("spatial", [True, False], ids=["conv", "dense"])
def test_routing_matrix_normalised_masked_and_keeps_k(spatial):
    channels = 6
    for routing, p_in, p_out, density in _cases():
        router = build_router(routing, p_in, p_out, channels, density)
        x = torch.randn(5, p_in, channels, 4, 4) if spatial else torch.randn(5, p_in, channels)
        a = router(x)
        assert a.shape == (5, p_in, p_out)
        if routing == "none":  # one connection per destination, its own path; the mask says so too
            assert torch.equal(a, torch.eye(p_in).expand(5, -1, -1))
            assert router.mask.dtype == torch.bool and torch.equal(router.mask, torch.eye(p_in, dtype=torch.bool))
            assert router.kept == 1
            continue
        if routing == "cross_prediction":  # each source hands out all of its signal
            sums, kept_axis, candidates = a.sum(dim=2), 2, p_out
        else:  # each destination receives a convex mix of its sources
            sums, kept_axis, candidates = a.sum(dim=1), 1, p_in
        torch.testing.assert_close(sums, torch.ones_like(sums))
        mask = router.mask.expand_as(a)
        assert torch.all(a[~mask] == 0), (routing, p_in, p_out, density)
        k = kept_connections(density, candidates)
        assert torch.all(router.mask.sum(dim=kept_axis - 1) == k), (routing, p_in, p_out, density)
        assert torch.all((a > 0).sum(dim=kept_axis) == k), (routing, p_in, p_out, density)


def test_window_keeps_aligned_path_and_is_circulant():
    router = build_router("static", 4, 4, 3, density=0.5)
    # destination j keeps sources j and j+1 (mod 4)
    expected = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(router.mask, expected)
    assert kept_connections(0.01, 8) == 1 and kept_connections(1.0, 8) == 8 and kept_connections(0.5, 3) == 2


@pytest.mark.parametrize("routing", ["static", "cross_prediction", "feature_dependent"])
def test_square_routers_start_favouring_the_aligned_path(routing):
    router = build_router(routing, 4, 4, 8, density=1.0)
    a = router(torch.randn(64, 4, 8, 3, 3)).mean(dim=0)
    diagonal = torch.diagonal(a)
    off_diagonal = (a.sum() - diagonal.sum()) / 12
    assert diagonal.min() > 2 * off_diagonal, a
    if routing == "static":
        torch.testing.assert_close(diagonal, torch.full((4,), 0.5))


@pytest.mark.parametrize("routing", ["static", "cross_prediction", "feature_dependent"])
def test_rectangular_routers_start_uniform(routing):
    router = build_router(routing, 2, 4, 8, density=1.0)
    a = router(torch.randn(16, 2, 8, 3, 3))
    if routing == "static":
        torch.testing.assert_close(a, torch.full_like(a, 0.5))
    else:  # uniform in expectation, small input-dependent deviations
        assert (a - (0.25 if routing == "cross_prediction" else 0.5)).abs().max() < 0.25


@pytest.mark.parametrize("routing", ["cross_prediction", "feature_dependent"])
def test_data_dependent_routers_depend_on_input(routing):
    router = build_router(routing, 4, 4, 8, density=1.0)
    x1, x2 = torch.randn(1, 4, 8, 5, 5), torch.randn(1, 4, 8, 5, 5) * 3 + 1
    assert not torch.allclose(router(x1), router(x2), atol=1e-6)


def test_static_router_same_for_every_input():
    router = build_router("static", 3, 5, 8, density=0.5)
    with torch.no_grad():
        router.logits.normal_()
    a = router(torch.randn(7, 3, 8, 4, 4))
    assert torch.equal(a, a[:1].expand_as(a))


@pytest.mark.parametrize("routing", ["static", "cross_prediction", "feature_dependent"])
def test_gradients_reach_every_router_parameter(routing):
    router = build_router(routing, 4, 3, 8, density=1.0)
    x = torch.randn(6, 4, 8, 4, 4)
    target = torch.randn(6, 4, 3)
    ((router(x) - target) ** 2).sum().backward()
    for name, param in router.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bad, message", [
    (dict(routing="bogus"), "unknown routing 'bogus'; allowed: none, static, cross_prediction, feature_dependent"),
    (dict(routing="none", out_paths=3), "routing 'none' needs equal path counts, got 2 -> 3"),
    (dict(density=0.0), "density must be in (0, 1], got 0.0"),
    (dict(density=1.5), "density must be in (0, 1], got 1.5"),
    (dict(in_paths=0), "path counts must be >= 1, got 0 -> 2"),
])
def test_bad_router_arguments(bad, message):
    args = dict(routing="static", in_paths=2, out_paths=2, channels=4, density=1.0) | bad
    with pytest.raises(ValueError) as refused:
        build_router(**args)
    assert str(refused.value) == message


def test_routers_built_directly_default_to_full_density():
    from mpn_nas.layers import CrossPredictionRouter, FeatureDependentRouter, IdentityRouter, StaticRouter

    for router in (IdentityRouter(3, 3), StaticRouter(3, 2), CrossPredictionRouter(3, 2, 4),
                   FeatureDependentRouter(3, 2, 4)):
        assert router.density == 1.0 and not router.masked, router


def test_feature_dependent_gate_width_by_hand():
    from mpn_nas.layers import FeatureDependentRouter
    from mpn_nas.layers.routers import gate_width

    assert gate_width(3, 2, 16) == 6  # max(2, 3 * 16 // 8)
    assert gate_width(2, 5, 8) == 5  # max(5, 2 * 8 // 8): at least one hidden unit per destination
    assert gate_width(3, 2, 16, reduction=4) == 12
    first, _, second = FeatureDependentRouter(3, 2, 16).gate
    assert (first.in_features, first.out_features, second.out_features) == (48, 6, 6)


def test_cross_prediction_weights_start_uniform_in_nn_linears_range():
    from mpn_nas.layers import CrossPredictionRouter

    torch.manual_seed(0)
    weight = CrossPredictionRouter(4, 4, 64).weight  # 1024 draws: both ends of the range are reached
    bound = 1 / 64 ** 0.5
    assert -bound <= weight.min() < -0.9 * bound and 0.9 * bound < weight.max() <= bound


@pytest.mark.parametrize("routing", ["none", "static"])
def test_input_independent_routing_matrix_in_the_inputs_dtype(routing):
    """Routers without weights on the input cast their matrix to its dtype (the others' weights set theirs)."""
    a = build_router(routing, 3, 3, 4)(torch.randn(2, 3, 4, dtype=torch.double))
    assert a.dtype == torch.double
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 3, dtype=torch.double))


def test_initial_logits_by_hand():
    """Square: log(w (k - 1) / (1 - w)) on the diagonal, so the softmax over k kept gives the aligned path w."""
    from mpn_nas.layers.routers import initial_logits

    torch.testing.assert_close(initial_logits(3, 3, 3), torch.eye(3) * math.log(2.0))  # 0.5 * 2 / 0.5
    torch.testing.assert_close(initial_logits(3, 3, 2, aligned_weight=0.9), torch.eye(3) * math.log(9.0))
    assert torch.equal(initial_logits(3, 3, 1, aligned_weight=0.9), torch.zeros(3, 3))  # one kept: nothing to lean
    assert torch.equal(initial_logits(3, 2, 3, aligned_weight=0.9), torch.zeros(3, 2))  # rectangular: uniform


def test_reset_logits_to_another_aligned_weight():
    from mpn_nas.layers import StaticRouter

    router = StaticRouter(3, 3)
    router.reset_logits(0.9)
    a = router(torch.randn(1, 3, 2))[0]
    torch.testing.assert_close(a, torch.full((3, 3), 0.05) + torch.eye(3) * 0.85)


def test_gate_width_follows_the_reduction_given():
    from mpn_nas.layers import FeatureDependentRouter

    assert FeatureDependentRouter(3, 2, 16, reduction=4).gate[0].out_features == 12  # max(2, 48 // 4)


def test_pooling_gradient_is_a_broadcast_view_not_a_full_size_tensor():
    from mpn_nas.layers.routers import pool_paths

    x = torch.randn(2, 3, 4, 5, 5, requires_grad=True)
    captured = {}
    x.register_hook(lambda g: captured.setdefault("grad", g))
    pool_paths(x).backward(torch.ones(2, 3, 4))
    assert captured["grad"].stride()[-2:] == (0, 0)  # zero strides over H and W: nothing materialised
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 25))


def test_default_density_is_one_for_every_way_of_building_a_router():
    from mpn_nas.layers import Router, StaticRouter

    for router in (build_router("static", 3, 3, 4), StaticRouter.for_layer(3, 3, 4), Router(3, 3)):
        assert router.density == 1.0 and router.kept == 3 and not router.masked


def test_density_mask_refuses_an_unknown_orientation():
    from mpn_nas.layers import density_mask

    with pytest.raises(ValueError) as refused:
        density_mask(3, 3, 0.5, "row")
    assert str(refused.value) == "per must be 'destination' or 'source', got 'row'"


def test_the_mask_is_not_saved_with_the_weights():
    """It follows from the architecture; checkpoints hold only the learned logits."""
    router = build_router("static", 3, 3, 4, density=0.5)
    assert list(router.state_dict()) == ["logits"]
