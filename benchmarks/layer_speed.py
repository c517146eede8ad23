"""Forward+backward time of the multi-path layers: routing overhead, against a loop over paths and a
dense layer of equal FLOPs.

For each layer kind (``MultiPathConv2d`` on ``(B, p, C, H, W)``, ``MultiPathLinear`` on ``(B, p, F)``)
and each path count ``p``, these implementations run interleaved in one process, call by call, for
``--repeats`` rounds; each time is printed as a ratio to a baseline, the median over rounds of the
per-round ratio, so that load from other processes, which hits one round's calls alike, cancels out:

- the layer with each routing type (``none``, ``static``, ``cross_prediction``, ``feature_dependent``);
- ``naive``: the same layer with the same weights (routing ``feature_dependent``), computed with Python
  loops over paths (checked to give the same output before it is timed);
- ``dense``: one plain convolution (or linear layer) with ``round(C * sqrt(p))`` channels, the same
  FLOPs as the ``p`` parallel operations;
- how the parallel operations alone run: grouped convolution, grouped convolution in channels-last
  memory (conversions included), a loop over paths (``bmm`` or a loop for the dense layer);
- the peers' data-dependent layers on the same ``p`` paths (routing ``none``): selective kernel
  (SKNet) and split attention (ResNeSt), each against its own plain counterpart, the same
  convolutions with the branches summed instead of attended, so that the routing overhead
  (``feature_dependent`` / ``none``) sits beside theirs.

    python benchmarks/layer_speed.py                       # CIFAR-like shapes, p = 1, 2, 4, 8, 16
    python benchmarks/layer_speed.py --out benchmarks/results/layer_speed.md

On CPU the benchmark first keeps freed memory in the process, as training does
(``mpn_nas.cpu_allocator``); ``--default-malloc`` measures with glibc's defaults instead.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mpn_nas.cpu_allocator import keep_freed_memory
from mpn_nas.layers import ROUTING_TYPES, MultiPathConv2d, MultiPathLinear, SelectiveKernelConv2d, SplitAttentionConv2d
from mpn_nas.layers.routers import CrossPredictionRouter, FeatureDependentRouter, Router

NAIVE_ROUTING = "feature_dependent"


# --- the naive reference: the same computation, one path at a time ------------------------------------

def naive_routing(router: Router, x: torch.Tensor) -> torch.Tensor:
    """The router's ``(B, p_in, p_out)`` matrix, pooling and predicting one source path at a time."""
    pooled = [x[:, i].mean(dim=(2, 3)) if x.dim() == 5 else x[:, i] for i in range(x.shape[1])]
    if isinstance(router, FeatureDependentRouter):
        features = torch.cat(pooled, dim=1)
        logits = router.gate(features - features.mean(dim=1, keepdim=True)).view(-1, router.in_paths, router.out_paths)
    elif isinstance(router, CrossPredictionRouter):
        logits = torch.stack([pooled[i] @ router.weight[i] + router.bias[i] for i in range(len(pooled))], dim=1)
    else:
        return router(x)
    return router.normalise(logits)


def naive_mix(x: torch.Tensor, routing: torch.Tensor) -> list[torch.Tensor]:
    """``Z_j = sum_i A[:, i, j] * X_i`` as a loop over destinations and sources."""
    extra = (1,) * (x.dim() - 2)
    return [sum(routing[:, i, j].view(-1, *extra) * x[:, i] for i in range(x.shape[1]))
            for j in range(routing.shape[2])]


def naive_conv_forward(layer: MultiPathConv2d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with routing, mix and convolutions looped over paths."""
    routed = naive_mix(x, naive_routing(layer.mix.router, x))
    width = layer.out_channels
    conv = layer.conv
    outputs = [F.conv2d(z, conv.weight[j * width:(j + 1) * width], stride=conv.stride, padding=conv.padding)
               for j, z in enumerate(routed)]
    y = layer.act(layer.norm(torch.cat(outputs, dim=1)))
    return y.view(x.shape[0], layer.path_count, width, *y.shape[2:])


def naive_linear_forward(layer: MultiPathLinear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with routing, mix and matrix products looped over paths."""
    routed = naive_mix(x, naive_routing(layer.mix.router, x))
    outputs = [z @ layer.weight[j] + layer.bias[j] for j, z in enumerate(routed)]
    return layer.act(layer.norm(torch.cat(outputs, dim=1))).view(x.shape[0], layer.path_count, -1)


# --- the parallel operations alone, executed three ways ------------------------------------------------

def grouped_conv(conv: nn.Conv2d, z: torch.Tensor) -> torch.Tensor:
    return conv(z.flatten(1, 2))


def channels_last_conv(conv: nn.Conv2d, z: torch.Tensor) -> torch.Tensor:
    """Grouped conv in channels-last memory, paying the layout conversions a layer would pay."""
    out = conv(z.flatten(1, 2).contiguous(memory_format=torch.channels_last))
    return out.contiguous()


def looped_conv(conv: nn.Conv2d, z: torch.Tensor) -> torch.Tensor:
    width = conv.out_channels // conv.groups
    return torch.cat([F.conv2d(z[:, j], conv.weight[j * width:(j + 1) * width], padding=conv.padding)
                      for j in range(z.shape[1])], dim=1)


def batched_linear(weight: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.bmm(z.transpose(0, 1), weight)


def looped_linear(weight: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.stack([z[:, j] @ weight[j] for j in range(z.shape[1])])


# --- the peers' adaptive layers without their attention --------------------------------------------------

def plain_selective_kernel(layer: SelectiveKernelConv2d, z: torch.Tensor) -> torch.Tensor:
    """``layer``'s branches (3x3 and dilated 3x3 conv-BN-ReLU) summed: selective kernel minus selection."""
    flat = z.flatten(1, 2)
    summed = sum(branch(flat) for branch in layer.branches)
    return summed.view(z.shape[0], layer.path_count, layer.out_channels, *summed.shape[2:])


def plain_split_attention(layer: SplitAttentionConv2d, z: torch.Tensor) -> torch.Tensor:
    """``layer``'s radix-grouped conv-BN-ReLU with the groups summed: split attention minus attention."""
    y = torch.relu(layer.norm(layer.conv(z.flatten(1, 2))))
    summed = y.view(z.shape[0], layer.path_count, layer.radix, layer.out_channels, *y.shape[2:]).sum(dim=2)
    return summed


ADAPTIVE = {"selective_kernel": (SelectiveKernelConv2d, plain_selective_kernel),
            "split_attention": (SplitAttentionConv2d, plain_split_attention)}


# --- timing ----------------------------------------------------------------------------------------------

Step = Callable[[], None]


def forward_backward(module_or_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     params: Sequence[torch.Tensor]) -> Step:
    """One training step's worth of work: forward, then backward of a fixed random output gradient."""
    with torch.no_grad():
        grad = torch.randn_like(module_or_fn(x))

    def step() -> None:
        x.grad = None
        for param in params:
            param.grad = None
        module_or_fn(x).backward(grad)
    return step


def interleaved_times(steps: dict[str, Step], repeats: int, warmup: int, sync: Callable[[], None]
                      ) -> dict[str, list[float]]:
    """Milliseconds of each step in each of ``repeats`` rounds; a round times every step once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(warmup + repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            if index >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of ``name``'s time over ``baseline``'s in the same round: steps of one round
    run moments apart, so load from other processes cancels out of each ratio."""
    return statistics.median(t / b for t, b in zip(times[name], times[baseline]))


def dense_width(width: int, paths: int) -> int:
    """Width of one dense operation with the FLOPs of ``paths`` operations of ``width``."""
    return max(1, round(width * math.sqrt(paths)))


def routed_steps(x: torch.Tensor, make_layer: Callable[[str], nn.Module],
                 naive_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
                 ) -> tuple[dict[str, Step], dict[str, nn.Module]]:
    """Steps of the layer with each routing type, and of the naive loop over paths with the
    ``NAIVE_ROUTING`` layer's weights; returns the steps and the layers by routing type."""
    steps: dict[str, Step] = {}
    layers = {routing: make_layer(routing) for routing in ROUTING_TYPES}
    for routing, layer in layers.items():
        steps[routing] = forward_backward(layer, x, list(layer.parameters()))
    reference = layers[NAIVE_ROUTING].eval()
    with torch.no_grad():  # the timed loop is only worth reporting if it computes the same thing
        torch.testing.assert_close(naive_forward(reference, x), reference(x), rtol=1e-4, atol=1e-4)
    reference.train()
    steps["naive"] = forward_backward(lambda t: naive_forward(reference, t), x, list(reference.parameters()))
    return steps, layers


def conv_steps(paths: int, args: argparse.Namespace, device: torch.device) -> dict[str, Step]:
    c, size = args.channels, args.size
    x = torch.randn(args.batch, paths, c, size, size, device=device, requires_grad=True)
    steps, layers = routed_steps(x, lambda routing: MultiPathConv2d(c, c, paths, routing).to(device),
                                 naive_conv_forward)
    wide = dense_width(c, paths)
    dense = nn.Sequential(nn.Conv2d(wide, wide, 3, padding=1, bias=False), nn.BatchNorm2d(wide), nn.ReLU()).to(device)
    x_dense = torch.randn(args.batch, wide, size, size, device=device, requires_grad=True)
    steps["dense"] = forward_backward(dense, x_dense, list(dense.parameters()))
    conv = layers["none"].conv
    for name, execute in (("grouped", grouped_conv), ("channels_last", channels_last_conv), ("loop", looped_conv)):
        steps[f"op:{name}"] = forward_backward(lambda t, run=execute: run(conv, t), x, [conv.weight])
    for name, (layer_type, plain) in ADAPTIVE.items():  # routing none: only the peers' own overhead
        try:
            layer = layer_type(c, c, paths).to(device)
        except ValueError as err:  # split attention on an odd channel count
            print(f"{name} left out: {err}", file=sys.stderr)
            continue
        steps[f"peer:{name}"] = forward_backward(layer.parallel_forward, x, list(layer.parameters()))
        steps[f"peer:{name}:plain"] = forward_backward(lambda t, run=plain, module=layer: run(module, t), x,
                                                       list(layer.parameters()))
    return steps


def linear_steps(paths: int, args: argparse.Namespace, device: torch.device) -> dict[str, Step]:
    f = args.features
    x = torch.randn(args.linear_batch, paths, f, device=device, requires_grad=True)
    steps, layers = routed_steps(x, lambda routing: MultiPathLinear(f, f, paths, routing).to(device),
                                 naive_linear_forward)
    wide = dense_width(f, paths)
    dense = nn.Sequential(nn.Linear(wide, wide), nn.BatchNorm1d(wide), nn.ReLU()).to(device)
    x_dense = torch.randn(args.linear_batch, wide, device=device, requires_grad=True)
    steps["dense"] = forward_backward(dense, x_dense, list(dense.parameters()))
    weight = layers["none"].weight
    for name, execute in (("bmm", batched_linear), ("loop", looped_linear)):
        steps[f"op:{name}"] = forward_backward(lambda t, run=execute: run(weight, t), x, [weight])
    return steps


def ratio_table(kind: str, results: dict[int, dict[str, list[float]]]) -> str:
    """Markdown: median milliseconds of routing ``none``, everything else as a ratio to a stated baseline."""
    ops = [name for name in next(iter(results.values())) if name.startswith("op:")]
    peers = [name for name in ADAPTIVE if f"peer:{name}" in next(iter(results.values()))]
    header = (["p", "`none` ms"] + [f"`{r}` / `none`" for r in ROUTING_TYPES[1:]]
              + [f"naive / `{NAIVE_ROUTING}`", "dense equal-FLOPs / `none`"] + [f"{op[3:]} / {ops[0][3:]}" for op in ops[1:]]
              + [f"`{peer}` / plain" for peer in peers])
    lines = [f"**{kind}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for paths, times in results.items():
        row = [str(paths), f"{statistics.median(times['none']):.2f}"]
        row += [f"{ratio(times, r, 'none'):.3f}" for r in ROUTING_TYPES[1:]]
        row += [f"{ratio(times, 'naive', NAIVE_ROUTING):.2f}", f"{ratio(times, 'dense', 'none'):.2f}"]
        row += [f"{ratio(times, op, ops[0]):.2f}" for op in ops[1:]]
        row += [f"{ratio(times, f'peer:{peer}', f'peer:{peer}:plain'):.3f}" for peer in peers]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--layers", nargs="+", choices=("conv", "linear"), default=["conv", "linear"])
    parser.add_argument("--batch", type=int, default=32, help="conv batch size")
    parser.add_argument("--channels", type=int, default=16, help="conv channels per path (CIFAR stage 1: 16)")
    parser.add_argument("--size", type=int, default=32, help="conv feature map size")
    parser.add_argument("--linear-batch", type=int, default=128)
    parser.add_argument("--features", type=int, default=128, help="dense features per path")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: keep freed memory, as training does on CPU)")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables (.md) and medians (.json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    malloc = "glibc defaults" if args.default_malloc or not keep_freed_memory() else "freed memory kept"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    builders = {"conv": conv_steps, "linear": linear_steps}
    shapes = {"conv": f"MultiPathConv2d, input (B={args.batch}, p, C={args.channels}, {args.size}, {args.size}), "
                      f"3x3, C -> C per path",
              "linear": f"MultiPathLinear, input (B={args.linear_batch}, p, F={args.features}), F -> F per path"}
    times: dict[str, dict[int, dict[str, list[float]]]] = {}
    sections = [f"Forward+backward, {device}, {torch.get_num_threads()} thread(s), {args.repeats} rounds of "
                f"interleaved calls; ratios are medians of per-round ratios; malloc: {malloc}; torch {torch.__version__}.",
                ""]
    for kind in args.layers:
        times[kind] = {}
        for paths in args.paths:
            times[kind][paths] = interleaved_times(builders[kind](paths, args, device), args.repeats, args.warmup, sync)
            print(f"{kind} p={paths}: " + ", ".join(f"{k} {statistics.median(v):.2f} ms"
                                                     for k, v in times[kind][paths].items()), file=sys.stderr, flush=True)
        sections += [ratio_table(shapes[kind], times[kind]), ""]
    text = "\n".join(sections)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        medians = {kind: {paths: {name: statistics.median(values) for name, values in row.items()}
                          for paths, row in rows.items()} for kind, rows in times.items()}
        args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                             "median_ms": medians, "times_ms": times}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
