import warnings

import pytest
import torch
from torch import nn

from helpers import load_benchmark
from mpn_nas.layers import (
    ROUTING_TYPES,
    IdentityRouter,
    MultiPathBasicBlock,
    MultiPathConv2d,
    MultiPathDenseStem,
    MultiPathLinear,
    mix_paths,
)


def test_one_path_conv_equals_plain_conv():
    layer = MultiPathConv2d(3, 5, path_count=1, routing="none", norm=False, activation=False)
    plain = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    plain.weight.data.copy_(layer.conv.weight.data)
    x = torch.randn(4, 3, 9, 9)
    torch.testing.assert_close(layer(x.unsqueeze(1)).squeeze(1), plain(x))


def test_one_path_linear_equals_plain_linear():
    layer = MultiPathLinear(6, 4, path_count=1, routing="none", norm=False, activation=False)
    plain = nn.Linear(6, 4)
    plain.weight.data.copy_(layer.weight.data[0].T)
    plain.bias.data.copy_(layer.bias.data[0])
    x = torch.randn(7, 6)
    torch.testing.assert_close(layer(x.unsqueeze(1)).squeeze(1), plain(x))


def test_none_conv_paths_are_independent_operations():
    p = 4
    layer = MultiPathConv2d(3, 5, path_count=p, routing="none", stride=2, norm=False, activation=False)
    x = torch.randn(2, p, 3, 8, 8)
    out = layer(x)
    for i in range(p):
        weight = layer.conv.weight[i * 5:(i + 1) * 5]
        torch.testing.assert_close(out[:, i], nn.functional.conv2d(x[:, i], weight, stride=2, padding=1))


def test_none_linear_paths_are_independent_operations():
    p = 3
    layer = MultiPathLinear(6, 4, path_count=p, routing="none", norm=False, activation=False)
    x = torch.randn(5, p, 6)
    out = layer(x)
    for i in range(p):
        torch.testing.assert_close(out[:, i], x[:, i] @ layer.weight[i] + layer.bias[i])


@pytest.mark.parametrize("routing", ["static", "cross_prediction", "feature_dependent"])
def test_routed_conv_mixes_paths_as_documented(routing):
    layer = MultiPathConv2d(3, 5, path_count=3, in_paths=2, routing=routing, norm=False, activation=False)
    x = torch.randn(2, 2, 3, 6, 6)
    a = layer.mix.router(x)
    out = layer(x)
    for j in range(3):
        z_j = sum(a[:, i, j, None, None, None] * x[:, i] for i in range(2))
        weight = layer.conv.weight[j * 5:(j + 1) * 5]
        torch.testing.assert_close(out[:, j], nn.functional.conv2d(z_j, weight, padding=1), rtol=1e-4, atol=1e-5)


def test_changing_one_path_input_changes_other_paths_only_when_routed():
    x = torch.randn(2, 4, 3, 6, 6)
    x2 = x.clone()
    x2[:, 0] += 1.0
    for routing in ROUTING_TYPES:
        layer = MultiPathConv2d(3, 5, path_count=4, routing=routing, density=1.0).eval()
        changed = (layer(x) - layer(x2)).abs().amax(dim=(0, 2, 3, 4)) > 1e-6
        if routing == "none":
            assert changed.tolist() == [True, False, False, False]
        else:
            assert changed.all(), routing


def test_routing_recorded_only_when_asked():
    layer = MultiPathLinear(6, 4, path_count=3, routing="feature_dependent")
    x = torch.randn(5, 3, 6)
    layer(x)
    assert layer.mix.last_routing is None
    layer.mix.record_routing = True
    layer(x)
    assert layer.mix.last_routing.shape == (5, 3, 3) and not layer.mix.last_routing.requires_grad


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("routing", ROUTING_TYPES)
def test_parameter_growth_linear_in_paths_quadratic_in_width(routing):
    width, p = 16, 4
    one = _params(MultiPathConv2d(width, width, 1, "none", norm=False))
    multi = _params(MultiPathConv2d(width, width, p, routing, norm=False))
    wide = _params(MultiPathConv2d(p * width, p * width, 1, "none", norm=False))
    router = _params(MultiPathConv2d(width, width, p, routing, norm=False).mix)
    assert multi - router == p * one
    assert wide == p * p * one
    assert router < 0.1 * multi  # routing is a small overhead


def _randomise_batch_norms(module: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that a wrong channel slice shows."""
    for norm in module.modules():
        if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.5, 0.5)


def _path_conv(layer: MultiPathConv2d, z_j: torch.Tensor, j: int, stride: int = 1) -> torch.Tensor:
    """Path ``j`` of a multi-path conv layer (its conv and batch norm channels) on routed ``z_j``: (B, C, H, W)."""
    c = layer.out_channels
    weight = layer.conv.weight[j * c:(j + 1) * c]
    y = nn.functional.conv2d(z_j, weight, stride=stride, padding=weight.shape[-1] // 2)
    norm = layer.norm
    return nn.functional.batch_norm(y, norm.running_mean[j * c:(j + 1) * c], norm.running_var[j * c:(j + 1) * c],
                                    norm.weight[j * c:(j + 1) * c], norm.bias[j * c:(j + 1) * c], eps=norm.eps)


def _path_se(se, y_j: torch.Tensor, j: int) -> torch.Tensor:
    """Path ``j``'s squeeze-excitation on ``y_j`` ``(B, C, H, W)``, from its slices of the grouped gate."""
    squeeze, _, excite, _ = se.gate
    hidden, channels = squeeze.out_channels // se.path_count, y_j.shape[1]
    pooled = y_j.mean(dim=(2, 3), keepdim=True)
    gate = torch.relu(nn.functional.conv2d(pooled, squeeze.weight[j * hidden:(j + 1) * hidden],
                                           squeeze.bias[j * hidden:(j + 1) * hidden]))
    gate = torch.sigmoid(nn.functional.conv2d(gate, excite.weight[j * channels:(j + 1) * channels],
                                              excite.bias[j * channels:(j + 1) * channels]))
    return y_j * gate


@pytest.mark.parametrize("routing, paths, stride, width, se", [("cross_prediction", 3, 2, 16, True),
                                                                ("static", 2, 1, 8, False)])
def test_basic_block_output_computed_by_hand(routing, paths, stride, width, se):
    """relu(se(bn2(conv2(relu(bn1(conv1(z_j)))))) + shortcut(z_j)) per path j, z_j the routed input."""
    in_paths, channels = 2, 8
    block = MultiPathBasicBlock(channels, width, path_count=paths, in_paths=in_paths, routing=routing, stride=stride,
                                se=se)
    _randomise_batch_norms(block)
    block.eval()
    x = torch.randn(3, in_paths, channels, 8, 8)
    with torch.no_grad():
        out = block(x)
        assert out.shape == (3, paths, width, 8 // stride, 8 // stride)
        a = block.conv1.mix.router(x)
        for j in range(paths):
            z_j = sum(a[:, i, j, None, None, None] * x[:, i] for i in range(in_paths))
            y_j = _path_conv(block.conv2, torch.relu(_path_conv(block.conv1, z_j, j, stride)), j)
            if se:
                y_j = _path_se(block.se, y_j, j)
            shortcut = _path_conv(block.shortcut, z_j, j, stride) if stride != 1 else z_j
            torch.testing.assert_close(out[:, j], torch.relu(y_j + shortcut), rtol=1e-4, atol=1e-5)
    assert isinstance(block.shortcut, nn.Identity) == (stride == 1 and width == channels)


def test_mix_gradients_match_autograd_and_input_gradient_is_not_a_view():
    x = torch.randn(3, 4, 2, 3, 3, dtype=torch.double, requires_grad=True)
    routing = torch.softmax(torch.randn(3, 4, 2, dtype=torch.double), dim=1).requires_grad_()
    assert torch.autograd.gradcheck(mix_paths, (x, routing))
    grad = torch.randn(3, 2, 2, 3, 3, dtype=torch.double)
    expected = torch.autograd.grad(torch.einsum("bij,bi...->bj...", routing, x), (x, routing), grad)
    captured = {}
    x.register_hook(lambda g: captured.setdefault("grad", g))
    mix_paths(x, routing).backward(grad)
    torch.testing.assert_close(x.grad, expected[0])
    torch.testing.assert_close(routing.grad, expected[1])
    # A view could not take the router's pooling gradient in place (the point of the custom backward).
    assert captured["grad"]._base is None


@pytest.mark.parametrize("family", ["resnet", "mlp"])
def test_first_router_sees_distinct_paths_and_learns(family):
    from mpn_nas import Arch, build_model
    stages = [{"blocks": 1, "width": 4, "paths": 3, "routing": "feature_dependent"}]
    arch = Arch.from_dict({"format": "mpn-nas/arch", "version": 1, "family": family, "in_channels": 1,
                           "input_size": 8, "num_classes": 10, "stem_width": 8, "stages": stages})
    model = build_model(arch)
    stem_out = model.stem(torch.randn(5, 1, 8, 8)).unflatten(1, (3, -1))
    assert not torch.allclose(stem_out[:, 0], stem_out[:, 1])
    model(torch.randn(5, 1, 8, 8)).logsumexp(dim=1).sum().backward()
    first_router = model.blocks[0].conv1.mix.router if family == "resnet" else model.blocks[0].mix.router
    assert all(param.grad.abs().sum() > 0 for param in first_router.parameters())


def test_mix_backward_under_autocast_returns_full_precision_gradients():
    x = torch.randn(3, 4, 2, 3, 3, requires_grad=True)
    routing = torch.softmax(torch.randn(3, 4, 4), dim=1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = mix_paths(x, routing)
    assert mixed.dtype == torch.bfloat16
    mixed.float().sum().backward()
    assert x.grad.dtype == torch.float32 and routing.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, routing.sum(dim=2)[..., None, None, None].expand_as(x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("routing", ROUTING_TYPES)
def test_fast_layer_matches_naive_loop_in_outputs_and_gradients(kind, routing):
    speed = load_benchmark("layer_speed")
    if kind == "conv":
        layer, x = MultiPathConv2d(3, 5, 4, routing, stride=2), torch.randn(6, 4, 3, 8, 8)
        naive = speed.naive_conv_forward
    else:
        layer, x = MultiPathLinear(6, 5, 4, routing), torch.randn(6, 4, 6)
        naive = speed.naive_linear_forward
    grad_out = torch.randn_like(layer(x))
    results = []
    for forward in (layer, lambda t: naive(layer, t)):
        layer.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_()
        out = forward(inputs)
        out.backward(grad_out)
        results.append((out.detach(), inputs.grad, [p.grad.clone() for p in layer.parameters()]))
    (fast_out, fast_dx, fast_dw), (naive_out, naive_dx, naive_dw) = results
    torch.testing.assert_close(fast_out, naive_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_dx, naive_dx, rtol=1e-4, atol=1e-5)
    for fast, slow in zip(fast_dw, naive_dw):
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def _path_norm(norm: nn.BatchNorm1d, y_j: torch.Tensor, j: int) -> torch.Tensor:
    """Path ``j``'s slice of a path-major batch norm (eval mode) on ``y_j``: ``(B, C)``."""
    c = slice(j * y_j.shape[1], (j + 1) * y_j.shape[1])
    return nn.functional.batch_norm(y_j, norm.running_mean[c], norm.running_var[c], norm.weight[c], norm.bias[c],
                                    eps=norm.eps)


def test_linear_layer_by_default_is_unrouted_linear_norm_relu_per_path():
    p = 3
    layer = MultiPathLinear(6, 4, path_count=p)
    _randomise_batch_norms(layer)
    layer.eval()
    x = torch.randn(5, p, 6)
    with torch.no_grad():
        out = layer(x)
        for j in range(p):
            expected = torch.relu(_path_norm(layer.norm, x[:, j] @ layer.weight[j] + layer.bias[j], j))
            torch.testing.assert_close(out[:, j], expected)
    assert (out == 0).any()  # the ReLU clipped something: the check above saw it


def test_linear_layer_without_bias_and_with_fewer_input_paths_and_a_density():
    layer = MultiPathLinear(6, 4, path_count=2, bias=False, norm=False, activation=False)
    x = torch.randn(5, 2, 6)
    assert layer.bias is None
    torch.testing.assert_close(layer(x), torch.stack([x[:, j] @ layer.weight[j] for j in range(2)], dim=1))
    routed = MultiPathLinear(6, 4, path_count=3, in_paths=2, routing="static", norm=False, activation=False)
    x = torch.randn(5, 2, 6)
    a = routed.mix.router(x)
    assert a.shape == (5, 2, 3)
    out = routed(x)
    for j in range(3):
        z_j = sum(a[:, i, j, None] * x[:, i] for i in range(2))
        torch.testing.assert_close(out[:, j], z_j @ routed.weight[j] + routed.bias[j])
    # Density 0.5 of 3 sources keeps round(1.5) = 2 per destination, from its aligned source on (circulant).
    sparse = MultiPathLinear(6, 4, path_count=3, routing="static", density=0.5)
    kept = sparse.mix.router(torch.randn(5, 3, 6))[0] > 0
    assert kept.tolist() == [[True, False, True], [True, True, False], [False, True, True]]


def test_linear_weights_and_biases_start_uniform_in_nn_linears_range():
    torch.manual_seed(0)
    layer = MultiPathLinear(16, 32, path_count=4)
    bound = 1 / 16 ** 0.5  # nn.Linear's: 1 / sqrt(in_features)
    for values in (layer.weight, layer.bias):  # 2048 and 128 draws: both ends of the range are reached
        assert -bound <= values.min() < -0.9 * bound and 0.9 * bound < values.max() <= bound


def test_dense_stem_is_linear_norm_relu_per_path_on_the_flattened_input():
    p, width = 3, 4
    stem = MultiPathDenseStem(12, width, path_count=p)
    _randomise_batch_norms(stem)
    stem.eval()
    x = torch.randn(5, 3, 2, 2)
    linear = stem[1]
    with torch.no_grad():
        out = stem(x)
        assert out.shape == (5, p, width)
        for j in range(p):
            rows = slice(j * width, (j + 1) * width)
            y_j = x.flatten(1) @ linear.weight[rows].T + linear.bias[rows]
            torch.testing.assert_close(out[:, j], torch.relu(_path_norm(stem[2], y_j, j)))
    assert (out == 0).any()


@pytest.mark.parametrize("needs_grad", ["x", "allocation"])
def test_mix_backward_for_either_input_alone(needs_grad):
    x = torch.randn(3, 4, 2, 3, dtype=torch.double, requires_grad=needs_grad == "x")
    allocation = torch.softmax(torch.randn(3, 4, 2, dtype=torch.double), dim=1).requires_grad_(needs_grad != "x")
    grad = torch.randn(3, 2, 2, 3, dtype=torch.double)
    captured = {}
    if needs_grad == "x":
        x.register_hook(lambda g: captured.setdefault("grad", g))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch resizing an `out=` buffer of the wrong shape
        mix_paths(x, allocation).backward(grad)
    if needs_grad == "x":  # dZ/dX_i = sum_j A[:, i, j] dZ_j
        torch.testing.assert_close(x.grad, torch.einsum("bij,bj...->bi...", allocation, grad))
        assert allocation.grad is None
        assert captured["grad"]._base is None  # the custom backward ran (autograd's bmm hands back a view)
    else:  # dZ/dA[:, i, j] = <X_i, dZ_j>
        torch.testing.assert_close(allocation.grad, torch.einsum("bi...,bj...->bij", x, grad))
        assert x.grad is None


def test_mix_gradient_and_identity_routing_follow_the_inputs_device_and_dtype():
    """The meta device stands in for a GPU: a tensor made on the default device would not match it."""
    x = torch.randn(2, 3, 4, device="meta", requires_grad=True)
    allocation = torch.randn(2, 3, 2, device="meta", requires_grad=True)
    mix_paths(x, allocation).sum().backward()
    assert x.grad.device.type == "meta" and x.grad.shape == x.shape
    on_meta = IdentityRouter(3, 3)(torch.randn(2, 3, 4, dtype=torch.double, device="meta"))
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.double and on_meta.shape == (2, 3, 3)
    identity = IdentityRouter(3, 3)(torch.randn(2, 3, 4, dtype=torch.double))
    torch.testing.assert_close(identity, torch.eye(3, dtype=torch.double).expand(2, 3, 3))


def test_mix_casts_the_allocation_to_the_inputs_dtype():
    x = torch.randn(3, 4, 2, 3, dtype=torch.double)
    allocation = torch.softmax(torch.randn(3, 4, 2), dim=1)  # float32, as a router under autocast may give
    mixed = mix_paths(x, allocation)
    assert mixed.dtype == torch.double
    torch.testing.assert_close(mixed, torch.einsum("bij,bi...->bj...", allocation.double(), x))


def test_conv_stem_is_conv_norm_relu_per_path():
    from mpn_nas.layers import MultiPathStem

    p, width = 3, 2
    stem = MultiPathStem(2, width, path_count=p)
    _randomise_batch_norms(stem)
    stem.eval()
    x = torch.randn(4, 2, 5, 5)
    with torch.no_grad():
        out = stem(x)
        assert out.shape == (4, p, width, 5, 5)
        conv, norm = stem[0], stem[1]
        for j in range(p):
            rows = slice(j * width, (j + 1) * width)
            y = nn.functional.conv2d(x, conv.weight[rows], padding=1)
            y = nn.functional.batch_norm(y, norm.running_mean[rows], norm.running_var[rows], norm.weight[rows],
                                         norm.bias[rows], eps=norm.eps)
            torch.testing.assert_close(out[:, j], torch.relu(y))
    assert (out == 0).any()


def test_squeeze_excitation_hidden_width_is_channels_over_four_at_least_one():
    from mpn_nas.layers import MultiPathSqueezeExcitation

    # per path: C -> max(1, C // 4) -> C, 1x1 convolutions with biases
    assert _params(MultiPathSqueezeExcitation(4, 3)) == 3 * ((4 * 1 + 1) + (1 * 4 + 4))
    assert _params(MultiPathSqueezeExcitation(16, 2)) == 2 * ((16 * 4 + 4) + (4 * 16 + 16))


def test_basic_block_defaults_stride_one_without_squeeze_excitation_and_passes_the_density():
    """relu(bn2(conv2(relu(bn1(conv1(z))))) + z) per path: same size, identity shortcut, no SE by default."""
    block = MultiPathBasicBlock(4, 4, path_count=3, in_paths=3, routing="static", density=0.5)
    _randomise_batch_norms(block)
    block.eval()
    x = torch.randn(2, 3, 4, 6, 6)
    with torch.no_grad():
        out = block(x)
        assert out.shape == x.shape
        a = block.conv1.mix.router(x)
        assert (a[0] > 0).tolist() == [[True, False, True], [True, True, False], [False, True, True]]
        for j in range(3):
            z_j = sum(a[:, i, j, None, None, None] * x[:, i] for i in range(3))
            y_j = _path_conv(block.conv2, torch.relu(_path_conv(block.conv1, z_j, j)), j)
            torch.testing.assert_close(out[:, j], torch.relu(y_j + z_j), rtol=1e-4, atol=1e-5)


def test_conv_layer_defaults_and_options_by_hand():
    """Default routing none (paths independent), a density reaching the router, a bias, a 5x5 kernel padded to size."""
    x = torch.randn(2, 2, 3, 7, 7)
    plain = MultiPathConv2d(3, 4, path_count=2, kernel_size=5, bias=True, norm=False, activation=False)
    out = plain(x)
    assert out.shape == (2, 2, 4, 7, 7)
    for j in range(2):
        rows = slice(j * 4, (j + 1) * 4)
        expected = nn.functional.conv2d(x[:, j], plain.conv.weight[rows], plain.conv.bias[rows], padding=2)
        torch.testing.assert_close(out[:, j], expected)
    sparse = MultiPathConv2d(3, 4, path_count=3, routing="static", density=0.5)
    kept = sparse.mix.router(torch.randn(2, 3, 3, 5, 5))[0] > 0
    assert kept.tolist() == [[True, False, True], [True, True, False], [False, True, True]]


def test_unrouted_mix_passes_its_input_through_and_records_the_identity_when_asked():
    from mpn_nas.layers import RoutedMix

    mix = RoutedMix("none", 3, 3, channels=4)
    calls = []
    mix.router.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 4)
    assert mix(x) is x and calls == []  # costs nothing: not even the router runs
    mix.record_routing = True
    assert mix(x) is x and calls == [1]
    torch.testing.assert_close(mix.last_routing, torch.eye(3).expand(2, 3, 3))
    static = RoutedMix("static", 3, 3, channels=4)  # density 1 by default: every connection kept
    assert (static.router(x) > 0).all()
    sparse = RoutedMix("static", 3, 3, channels=4, density=0.5)
    assert (sparse.router(x)[0] > 0).tolist() == [[True, False, True], [True, True, False], [False, True, True]]
