"""The adaptive feature extraction baselines (selective kernel, split attention) as blocks of the
multi-path skeleton: shapes, data-dependent attention, exact complexity, gradients, documents."""
import json

import pytest
import torch

from helpers import arch_doc
from mpn_nas import Arch, build_model
from mpn_nas.arch import ArchError
from mpn_nas.complexity import profile
from mpn_nas.export import export_model, run_exported
from mpn_nas.layers import (
    BLOCK_KINDS,
    BranchAttention,
    MultiPathBasicBlock,
    SelectiveKernelBlock,
    SelectiveKernelConv2d,
    SplitAttentionBlock,
    SplitAttentionConv2d,
)
from mpn_nas.limits import estimate

ADAPTIVE = ("selective_kernel", "split_attention")
CONVS = {"selective_kernel": SelectiveKernelConv2d, "split_attention": SplitAttentionConv2d}


def _doc(block: str, paths: int = 2, routing: str = "feature_dependent") -> dict:
    return arch_doc(stem_width=6, stages=[
        {"blocks": 2, "width": 4, "paths": paths, "routing": routing, "stride": 1, "block": block},
        {"blocks": 1, "width": 8, "paths": paths, "routing": routing, "stride": 2, "block": block, "se": True}])


def test_the_table_names_every_block_and_basic_is_the_plain_block():
    assert BLOCK_KINDS == {"basic": MultiPathBasicBlock, "selective_kernel": SelectiveKernelBlock,
                           "split_attention": SplitAttentionBlock}
    model = build_model(Arch.from_dict(_doc("split_attention")))
    assert [type(block) for block in model.blocks] == [SplitAttentionBlock] * 3
    assert isinstance(model.blocks[0].conv1, SplitAttentionConv2d)


@pytest.mark.parametrize("kind", ADAPTIVE)
@pytest.mark.parametrize("routing", ["none", "feature_dependent"])
def test_block_shapes(kind, routing):
    in_paths = 3 if routing == "none" else 2
    block = BLOCK_KINDS[kind](6, 5, 3, in_paths, routing, stride=2, se=True)
    assert block(torch.randn(4, in_paths, 6, 9, 9)).shape == (4, 3, 5, 5, 5)
    conv = CONVS[kind](6, 5, 3, routing, stride=1, in_paths=in_paths)
    assert conv(torch.randn(4, in_paths, 6, 7, 7)).shape == (4, 3, 5, 7, 7)


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_attention_is_a_per_sample_softmax_over_branches_of_each_path_alone(kind):
    torch.manual_seed(0)
    conv = CONVS[kind](4, 3, 2).eval()
    conv.attention.record = True
    x = torch.randn(5, 2, 4, 6, 6)
    out = conv(x)
    weights = conv.attention.last_weights  # (B, p, M, C)
    assert weights.shape == (5, 2, 2, 3)
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(5, 2, 3))
    assert weights.std(dim=0).mean() > 1e-3  # the mix depends on the input, sample by sample
    changed = x.clone()
    changed[:, 0] = torch.randn(5, 4, 6, 6)  # another input on path 0 only
    out_changed = conv(changed)
    assert not torch.allclose(out_changed[:, 0], out[:, 0])
    torch.testing.assert_close(out_changed[:, 1], out[:, 1])  # attention is per path: no mixing across paths


def test_attention_output_is_the_weighted_sum_of_its_branches():
    torch.manual_seed(1)
    attention = BranchAttention(channels=3, branches=2, path_count=2)
    attention.record = True
    branches = torch.randn(4, 2, 6, 5, 5)  # (B, M, p*C, H, W)
    out = attention(branches)
    weights = attention.last_weights.transpose(1, 2).reshape(4, 2, 6, 1, 1)  # (B, M, p*C, 1, 1)
    torch.testing.assert_close(out, (weights * branches).sum(dim=1))


@pytest.mark.parametrize("kind", ADAPTIVE)
@pytest.mark.parametrize("paths,routing", [(1, "none"), (3, "cross_prediction")])
def test_parameters_and_flops_equal_profile_and_the_closed_form_estimate(kind, paths, routing):
    arch = Arch.from_dict(_doc(kind, paths, routing))
    plain = Arch.from_dict(_doc("basic", paths, routing))
    model = build_model(arch)
    measured = profile(arch, latency=False)
    assert measured.params == sum(p.numel() for p in model.parameters()) == estimate(arch).params
    assert measured.flops == estimate(arch).flops
    attention = sum(p.numel() for m in model.modules() if isinstance(m, BranchAttention) for p in m.parameters())
    assert attention > 0
    if kind == "selective_kernel":  # a second conv per block, plus the attention
        assert measured.params > profile(plain, latency=False).params + attention
    else:  # the radix groups together have the plain conv's weights: only attention and BN are extra
        conv_weights = sum(m.conv1.conv.weight.numel() for m in model.blocks)
        plain_weights = sum(m.conv1.conv.weight.numel() for m in build_model(plain).blocks)
        assert conv_weights == plain_weights
    assert measured.flops > profile(plain, latency=False).flops


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_gradients_reach_the_attention_weights(kind):
    torch.manual_seed(2)
    model = build_model(Arch.from_dict(_doc(kind)))
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,)))
    loss.backward()
    attentions = [m for m in model.modules() if isinstance(m, BranchAttention)]
    assert len(attentions) == 3
    for attention in attentions:
        for layer in (attention.fc1, attention.fc2):
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_document_round_trips_json_build_and_onnx_export(kind, tmp_path):
    arch = Arch.from_dict(_doc(kind))
    path = tmp_path / "arch.json"
    arch.to_json(path)
    assert [stage["block"] for stage in json.loads(path.read_text())["stages"]] == [kind, kind]
    again = Arch.from_json(path)
    assert again == arch
    torch.manual_seed(3)
    model = build_model(again).eval()
    images = torch.randn(3, 1, 8, 8)
    exported = export_model(model, again, "onnx", tmp_path / "model.onnx")
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(run_exported(exported, images), expected, rtol=1e-4, atol=1e-5)


def test_documents_without_the_field_stay_valid_and_are_written_as_before():
    doc = arch_doc()
    arch = Arch.from_dict(doc)
    assert all(stage.block == "basic" for stage in arch.stages)
    assert arch.to_dict()["stages"] == doc["stages"]  # no "block" key added to basic documents
    assert Arch.from_dict(dict(doc, stages=[dict(s, block="basic") for s in doc["stages"]])) == arch


@pytest.mark.parametrize("change,fragments", [
    (dict(block="dense"), ("stages[0].block", "basic, selective_kernel, split_attention", "'dense'")),
    (dict(block=["split_attention"]), ("stages[0].block", "must be one of")),
    (dict(block="split_attention"), ("stages[0].block", "divisible by 2", "got 7")),
])
def test_bad_block_fields_are_refused_naming_the_field(change, fragments):
    doc = arch_doc(stem_width=7)
    doc["stages"][0].update(change)
    with pytest.raises(ArchError) as caught:
        Arch.from_dict(doc)
    assert all(fragment in str(caught.value) for fragment in fragments), str(caught.value)


def test_split_attention_checks_later_blocks_of_a_stage_too():
    doc = arch_doc(stem_width=8)
    doc["stages"][0].update(block="split_attention", width=5, blocks=2)  # second block takes 5 channels
    with pytest.raises(ArchError, match=r"stages\[0\]\.block.*got 5"):
        Arch.from_dict(doc)


def test_mlp_refuses_a_block_kind():
    doc = arch_doc(family="mlp")
    for stage in doc["stages"]:
        stage.update(stride=1, se=False)
    doc["stages"][1]["block"] = "selective_kernel"
    with pytest.raises(ArchError, match=r"stages\[1\]\.block' applies to the resnet family only"):
        Arch.from_dict(doc)


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_layer_speeds_plain_counterpart_is_the_same_convolutions_without_attention(kind):
    import importlib.util
    import sys

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("layer_speed", REPO / "benchmarks" / "layer_speed.py")
    speed = importlib.util.module_from_spec(spec)
    sys.modules["layer_speed"] = speed
    spec.loader.exec_module(speed)
    layer_type, plain = speed.ADAPTIVE[kind]
    torch.manual_seed(4)
    layer = layer_type(4, 3, 2).eval()
    with torch.no_grad():  # uniform attention: each of the M branches weighs 1/M for every input
        layer.attention.fc2.weight.zero_()
        layer.attention.fc2.bias.zero_()
        z = torch.randn(3, 2, 4, 6, 6)
        torch.testing.assert_close(plain(layer, z) / layer.attention.branches, layer.parallel_forward(z))


def test_readme_holds_the_block_kinds_table():
    from helpers import REPO
    from mpn_nas.layers.adaptive import block_kinds_markdown

    table = block_kinds_markdown()
    assert all(f"| `{name}` | `{block.__name__}` |" in table for name, block in BLOCK_KINDS.items())
    assert table in (REPO / "README.md").read_text()


@pytest.mark.parametrize("kind", ADAPTIVE)
def test_convolutions_default_to_stride_one_and_pass_the_density_to_their_router(kind):
    conv = CONVS[kind](4, 3, 3, "static", density=0.5)
    assert conv(torch.randn(2, 3, 4, 5, 5)).shape == (2, 3, 3, 5, 5)
    # Density 0.5 of 3 sources keeps 2 per destination: its aligned source and the next one.
    assert conv.mix.router.mask.tolist() == [[True, False, True], [True, True, False], [False, True, True]]


def test_split_attention_refuses_channels_its_radix_does_not_divide():
    with pytest.raises(ValueError) as refused:
        SplitAttentionConv2d(3, 4, 2)
    assert str(refused.value) == "split attention (radix 2) needs in_channels divisible by 2, got 3"


def test_selective_kernel_branches_are_conv_norm_relu_by_hand():
    """Each branch: 3x3 convolution of its dilation (padding = dilation), batch norm, ReLU, per path."""
    torch.manual_seed(2)
    p, c_in, c_out = 2, 3, 4
    conv = SelectiveKernelConv2d(c_in, c_out, p)
    for branch in conv.branches:
        norm = branch[1]
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.bias.data.uniform_(-0.5, 0.5)
    conv.eval()
    conv.attention.record = True
    x = torch.randn(3, p, c_in, 6, 6)
    with torch.no_grad():
        out = conv(x)
        weights = conv.attention.last_weights  # (B, p, M, C)
        for j in range(p):
            rows = slice(j * c_out, (j + 1) * c_out)
            fused = 0
            for m, (branch, dilation) in enumerate(zip(conv.branches, (1, 2))):
                conv_m, norm = branch[0], branch[1]
                y = torch.nn.functional.conv2d(x[:, j], conv_m.weight[rows], padding=dilation, dilation=dilation)
                y = torch.nn.functional.batch_norm(y, norm.running_mean[rows], norm.running_var[rows],
                                                   norm.weight[rows], norm.bias[rows], eps=norm.eps)
                fused = fused + weights[:, j, m, :, None, None] * torch.relu(y)
            torch.testing.assert_close(out[:, j], fused)


def test_attention_width_by_hand():
    from mpn_nas.layers.adaptive import attention_width

    assert attention_width(16, 2) == 8  # 16 * 2 // 4
    assert attention_width(4, 2) == 4  # 4 * 2 // 4 = 2, raised to the floor of 4
    assert BranchAttention(16, 2, 1).fc1.out_channels == 8


def test_attention_records_its_weights_only_when_asked():
    attention = BranchAttention(channels=3, branches=2, path_count=2)
    assert attention.last_weights is None
    attention(torch.randn(4, 2, 6, 5, 5))
    assert attention.last_weights is None
