"""Adaptive feature extraction baselines as residual blocks of the multi-path skeleton, and the table
of block kinds the architecture document names.

Both peers the routed networks are compared with pick, per sample, a softmax mix of parallel
branches of one layer; they differ in what the branches are:

- **selective kernel** (SKNet, Li et al. 2019): the same input through convolutions of different
  receptive fields (3x3, and 3x3 dilated by 2 for SKNet's 5x5), fused per channel by a softmax over
  kernels computed from the pooled sum of the branches;
- **split attention** (ResNeSt, Zhang et al. 2020; timm's ``SplitAttn``): one grouped convolution
  whose ``radix`` groups each see a slice of the input channels, fused by the same kind of softmax
  over the radix groups.

Both share :class:`BranchAttention` (ResNeSt's split attention generalises SK's fusion). Each block
is :class:`~mpn_nas.layers.blocks.MultiPathBasicBlock` with its first convolution replaced, like
timm's ``resnest.py`` plugs its block into the shared ResNet: the router at the block input,
the second convolution, squeeze-excitation and the residual stay the same, so on one path the
blocks are the peers' own and on ``p`` paths they compose with routing.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .blocks import MultiPathBasicBlock
from .multipath import RoutedMix

# Dilations of the selective-kernel branches: 3x3 with dilation 2 sees SKNet's 5x5 field at 3x3's cost.
SK_DILATIONS = (1, 2)
# Radix groups of split attention; ResNeSt's default.
SPLIT_RADIX = 2
# Hidden width of the attention: ResNeSt's max(C * branches // 4, floor) with a floor of 4 instead
# of 32, since the compared networks have 4-16 channels a path and 32 would dominate their budget.
ATTENTION_REDUCTION = 4
ATTENTION_MIN_HIDDEN = 4


def attention_width(channels: int, branches: int) -> int:
    """Hidden width of :class:`BranchAttention`: ``max(channels * branches // 4, 4)``."""
    return max(channels * branches // ATTENTION_REDUCTION, ATTENTION_MIN_HIDDEN)


class BranchAttention(nn.Module):
    """Per-sample softmax over ``branches`` parallel tensors, per path and channel.

    ``(B, M, p * C, H, W)`` branches -> ``(B, p * C, H, W)``: ``sum_m a[:, m] * branch_m`` with
    ``a = softmax_m(fc2(relu(fc1(pool(sum_m branch_m)))))``; ``fc1``/``fc2`` are 1x1 convolutions
    grouped by path, so each path attends over its own branches only (no mixing across paths: that
    is what routing does). Set ``record = True`` to keep the last ``(B, p, M, C)`` weights in ``last_weights``.
    """

    def __init__(self, channels: int, branches: int, path_count: int) -> None:
        super().__init__()
        hidden = attention_width(channels, branches)
        self.channels, self.branches, self.path_count = channels, branches, path_count
        self.fc1 = nn.Conv2d(path_count * channels, path_count * hidden, 1, groups=path_count)
        self.fc2 = nn.Conv2d(path_count * hidden, path_count * branches * channels, 1, groups=path_count)
        self.record = False
        self.last_weights: Optional[torch.Tensor] = None

    def forward(self, branches: torch.Tensor) -> torch.Tensor:
        batch = branches.shape[0]
        pooled = branches.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # (B, p*C, 1, 1)
        logits = self.fc2(torch.relu(self.fc1(pooled)))  # (B, p*M*C, 1, 1), path-major
        weights = torch.softmax(logits.view(batch, self.path_count, self.branches, self.channels), dim=2)
        if self.record:
            self.last_weights = weights.detach()
        weights = weights.transpose(1, 2).reshape(batch, self.branches, self.path_count * self.channels, 1, 1)
        return (branches * weights).sum(dim=1)


class SelectiveKernelConv2d(nn.Module):
    """Router, then per path: conv-BN-ReLU branches of different dilation fused by :class:`BranchAttention`.

    ``(B, in_paths, in_channels, H, W)`` -> ``(B, path_count, out_channels, H/stride, W/stride)``.
    Exposes ``mix`` and ``parallel_forward`` like :class:`~mpn_nas.layers.MultiPathConv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, path_count: int, routing: str = "none",
                 density: float = 1.0, stride: int = 1, in_paths: Optional[int] = None) -> None:
        super().__init__()
        in_paths = path_count if in_paths is None else in_paths
        self.path_count, self.out_channels = path_count, out_channels
        self.mix = RoutedMix(routing, in_paths, path_count, in_channels, density)
        channels_in, channels_out = path_count * in_channels, path_count * out_channels
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=dilation, dilation=dilation,
                                    groups=path_count, bias=False),
                          nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))
            for dilation in SK_DILATIONS)
        self.attention = BranchAttention(out_channels, len(SK_DILATIONS), path_count)

    def parallel_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The selective-kernel convolution alone, on already routed ``z``: ``(B, p, C_in, H, W)``."""
        batch, flat = z.shape[0], z.flatten(1, 2)
        fused = self.attention(torch.stack([branch(flat) for branch in self.branches], dim=1))
        return fused.view(batch, self.path_count, self.out_channels, *fused.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parallel_forward(self.mix(x))


class SplitAttentionConv2d(nn.Module):
    """Router, then per path: one 3x3 conv-BN-ReLU of ``radix`` groups (each on ``in_channels / radix``
    input channels, ``out_channels`` outputs), fused by :class:`BranchAttention` over the groups.

    ``(B, in_paths, in_channels, H, W)`` -> ``(B, path_count, out_channels, H/stride, W/stride)``;
    ``in_channels`` must be divisible by ``radix``. Exposes ``mix`` and ``parallel_forward``.
    """

    def __init__(self, in_channels: int, out_channels: int, path_count: int, routing: str = "none",
                 density: float = 1.0, stride: int = 1, in_paths: Optional[int] = None,
                 radix: int = SPLIT_RADIX) -> None:
        super().__init__()
        if in_channels % radix:
            raise ValueError(f"split attention (radix {radix}) needs in_channels divisible by {radix}, got {in_channels}")
        in_paths = path_count if in_paths is None else in_paths
        self.path_count, self.out_channels, self.radix = path_count, out_channels, radix
        self.mix = RoutedMix(routing, in_paths, path_count, in_channels, density)
        # Group g = path * radix + r reads slice r of the path's input channels and writes
        # out_channels: the output is path-major, then radix group, then channel.
        self.conv = nn.Conv2d(path_count * in_channels, path_count * radix * out_channels, 3, stride=stride,
                              padding=1, groups=path_count * radix, bias=False)
        self.norm = nn.BatchNorm2d(path_count * radix * out_channels)
        self.attention = BranchAttention(out_channels, radix, path_count)

    def parallel_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The split-attention convolution alone, on already routed ``z``: ``(B, p, C_in, H, W)``."""
        batch = z.shape[0]
        y = torch.relu(self.norm(self.conv(z.flatten(1, 2))))  # (B, p*R*C, H', W')
        size = y.shape[2:]
        branches = y.view(batch, self.path_count, self.radix, self.out_channels, *size).transpose(1, 2)
        fused = self.attention(branches.reshape(batch, self.radix, self.path_count * self.out_channels, *size))
        return fused.view(batch, self.path_count, self.out_channels, *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parallel_forward(self.mix(x))


class SelectiveKernelBlock(MultiPathBasicBlock):
    """:class:`MultiPathBasicBlock` whose first convolution is :class:`SelectiveKernelConv2d`
    (timm's ``SelectiveKernelBasic``). Shapes as the basic block."""

    first_conv = SelectiveKernelConv2d
    about = (f"selective kernel (SKNet): first convolution as {len(SK_DILATIONS)} 3x3 branches of dilation "
             f"{', '.join(map(str, SK_DILATIONS))}, per-sample softmax over them")


class SplitAttentionBlock(MultiPathBasicBlock):
    """:class:`MultiPathBasicBlock` whose first convolution is :class:`SplitAttentionConv2d`
    (ResNeSt's split attention in a basic block). Shapes as the basic block."""

    first_conv = SplitAttentionConv2d
    channel_divisor = SPLIT_RADIX
    about = (f"split attention (ResNeSt): first convolution as {SPLIT_RADIX} radix groups, per-sample softmax "
             f"over them; input channels divisible by {SPLIT_RADIX}")


# The block kinds a stage's ``block`` field names: the document validation, the builder, the cost
# estimate, the benchmarks and the README read this table.
BLOCK_KINDS: dict[str, type[MultiPathBasicBlock]] = {
    "basic": MultiPathBasicBlock,
    "selective_kernel": SelectiveKernelBlock,
    "split_attention": SplitAttentionBlock,
}
DEFAULT_BLOCK = "basic"


def block_kinds_markdown() -> str:
    """The README's table of block kinds, from :data:`BLOCK_KINDS`."""
    rows = [f"| `{name}` | `{block.__name__}` | {block.about} |" for name, block in BLOCK_KINDS.items()]
    return "\n".join(["| `block` | class | what |", "|---|---|---|", *rows])


def block_problem(kind: str, in_channels: int) -> Optional[str]:
    """Why a block of ``kind`` cannot take ``in_channels`` per path, or ``None``."""
    divisor = BLOCK_KINDS[kind].channel_divisor
    if in_channels % divisor:
        return f"{kind} needs input channels divisible by {divisor}, got {in_channels}"
    return None
