"""The limits every input is checked against, declared once: architecture fields, the closed-form
cost of a document, and the command line's numeric flags.

Anything that builds or counts a network from untrusted input (``profile``, ``retrain``, a search's
budget screening, the nnictl tuners, ``mpn-nas trial``) goes through :func:`mpn_nas.arch.validate`,
which calls :func:`check_document` *before* any module or tensor exists: a document with 100,000
paths or 10,000,000 blocks is answered in one line instead of exhausting the machine.

:data:`LIMITS` is the one table: the validator, the command line's ``type=`` checks
(:func:`flag_type`), the search space check (:func:`check_space`) and the README's reliability
section (:func:`limits_table_markdown`, checked by a test) all read it.

This module imports nothing heavy (no torch): it runs before anything is allocated.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from .errors import UserError
from .layers.adaptive import SK_DILATIONS, SPLIT_RADIX, attention_width

Number = Union[int, float]

BYTES_PER_VALUE = 4  # float32 parameters and activations
# Training keeps, per parameter, the weight, its gradient and up to two optimiser states (AdamW).
TRAINING_COPIES_PER_PARAM = 4
DEFAULT_MEMORY_FRACTION = 0.5  # of the machine's physical memory, when --max-memory is not given
MAX_MEMORY_ENV = "MPN_NAS_MAX_MEMORY"  # how --max-memory reaches trial processes NNI starts


@dataclass(frozen=True)
class Limit:
    """One row of the table: ``low <= value <= high`` (``low`` excluded when ``low_open``)."""

    name: str  # a document field ("stages[i].paths") or a flag ("--lr")
    kind: str  # "int" or "float"
    low: Number
    high: Number
    why: str
    low_open: bool = False

    def describe(self) -> str:
        low = "(" if self.low_open else "["
        return f"{'an integer' if self.kind == 'int' else 'a number'} in {low}{_fmt(self.low)}, {_fmt(self.high)}]"

    def contains(self, value: Number) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        return above_low and value <= self.high


def _fmt(value: Number) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 100_000 else str(value)
    return f"{value:g}"


_ROWS = [
    # Architecture documents
    Limit("document size", "int", 1, 2 ** 20, "bytes of JSON; real documents are a few KiB"),
    Limit("stages (count)", "int", 1, 32, "deeper than any network the builder is meant for"),
    Limit("stages[i].paths", "int", 1, 64, "routers grow with paths squared"),
    Limit("stages[i].blocks", "int", 1, 64, "building 10^7 blocks never ends"),
    Limit("stages[i].width", "int", 1, 4096, "per path; memory is checked separately"),
    Limit("stem_width", "int", 1, 4096, "per path"),
    Limit("in_channels", "int", 1, 64, "images have 1 to 4 channels"),
    Limit("input_size", "int", 1, 1024, "activations grow with its square"),
    Limit("num_classes", "int", 2, 100_000, "the head grows with it"),
    Limit("ensemble_size", "int", 2, 32, "family ensemble only"),
    Limit("flops", "float", 0, 1e12,
          "estimated FLOPs of one sample, counted as profile counts them (ResNet-50 at 224x224: about 8e9)"),
    # Command-line flags
    Limit("--port", "int", 1, 65535, "TCP port range"),
    Limit("--lr", "float", 0, 10.0, "learning rate", low_open=True),
    Limit("--weight-decay", "float", 0, 1.0, "L2 factor"),
    Limit("--router-lr-scale", "float", 0, 1000.0, "routers' learning rate over --lr", low_open=True),
    Limit("--batch-size", "int", 1, 65536, "memory is checked separately"),
    Limit("--label-smoothing", "float", 0, 0.99, "share of each target spread over the other classes"),
    Limit("--epochs", "int", 1, 100_000, "sanity bound"),
    Limit("--trials", "int", 1, 1_000_000, "sanity bound"),
    Limit("--concurrency", "int", 1, 1024, "trials at once"),
    Limit("--devices", "int", 1, 1024, "processes per machine; also at most its GPUs or CPU cores"),
    Limit("--num-nodes", "int", 1, 4096, "machines of a distributed retrain"),
    Limit("--gpus", "int", 0, 1023, "each index; also below the visible GPU count when CUDA is up"),
    Limit("--seed", "int", 0, 2 ** 32 - 1, "NumPy's seed range"),
    Limit("--max-params", "int", 1, 10 ** 15, "budget; 0 or less would refuse every sample"),
    Limit("--max-flops", "int", 1, 10 ** 18, "budget, one sample"),
    Limit("--max-latency-ms", "float", 0, 1e9, "budget, batch-1 CPU latency", low_open=True),
]
LIMITS: dict[str, Limit] = {row.name: row for row in _ROWS}


# --------------------------------------------------------------------------------------------------
# Memory available to one network
# --------------------------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


def parse_size(text: str) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5g"`` or a byte count -> bytes (> 0)."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"expected a size like 8G, 512M or a byte count, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"must be at least 1 byte, got {text!r}")
    return int(value)


def machine_memory() -> int:
    """Physical memory of this machine in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        return 8 * 2 ** 30


def max_memory() -> int:
    """Bytes one network may need: ``--max-memory`` (via :data:`MAX_MEMORY_ENV`), else
    :data:`DEFAULT_MEMORY_FRACTION` of the machine's memory."""
    text = os.environ.get(MAX_MEMORY_ENV)
    if text:
        try:
            return parse_size(text)
        except ValueError as err:
            raise UserError(f"{MAX_MEMORY_ENV}={text!r}: {err}") from None
    return int(machine_memory() * DEFAULT_MEMORY_FRACTION)


@contextmanager
def max_memory_set(size: Optional[int]) -> Iterator[None]:
    """Within the block, :func:`max_memory` is ``size`` bytes (``None``: unchanged) for this process
    and for the trial processes it starts (they inherit the environment)."""
    previous = os.environ.get(MAX_MEMORY_ENV)
    if size is not None:
        os.environ[MAX_MEMORY_ENV] = str(int(size))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MAX_MEMORY_ENV, None)
        else:
            os.environ[MAX_MEMORY_ENV] = previous


def _size(size: float) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if size >= scale / 8:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


# --------------------------------------------------------------------------------------------------
# Closed-form cost of a document (mirrors mpn_nas.models; tests compare it with the built model)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """Cost of one network, computed from the document's fields alone (nothing allocated).

    ``params`` and ``buffers`` are exact for the builder of this version; ``flops`` counts
    multiply-adds twice, as ``FlopCounterMode`` does, for one sample; ``activations`` is the number
    of values one sample's forward pass keeps for the backward pass (an upper-bound style count).
    """

    params: int
    buffers: int
    flops: int
    activations: int

    def memory_bytes(self, batch_size: int = 1, training: bool = False) -> int:
        """Bytes to run (``training``: to train) the network on ``batch_size`` samples at once."""
        copies = TRAINING_COPIES_PER_PARAM if training else 1
        return BYTES_PER_VALUE * (self.params * copies + self.buffers + self.activations * batch_size)

    def __add__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.params + other.params, self.buffers + other.buffers, self.flops + other.flops,
                        self.activations + other.activations)

    def __mul__(self, times: int) -> "Estimate":
        return Estimate(self.params * times, self.buffers * times, self.flops * times, self.activations * times)


_ZERO = Estimate(0, 0, 0, 0)


def _router(routing: str, in_paths: int, out_paths: int, channels: int) -> Estimate:
    """A router's own cost (:mod:`mpn_nas.layers.routers`); the mix it decides is :func:`_mix`."""
    if routing == "none":
        return _ZERO
    if routing == "static":
        return Estimate(in_paths * out_paths, 0, 0, in_paths * out_paths)
    if routing == "cross_prediction":
        return Estimate(in_paths * channels * out_paths + in_paths * out_paths, 0,
                        2 * in_paths * channels * out_paths, in_paths * (channels + 2 * out_paths))
    hidden = max(out_paths, in_paths * channels // 8)  # feature_dependent
    gate_in, gate_out = in_paths * channels, in_paths * out_paths
    return Estimate(gate_in * hidden + hidden + hidden * gate_out + gate_out, 0,
                    2 * (gate_in * hidden + hidden * gate_out), 2 * gate_in + 2 * hidden + 2 * gate_out)


def _mix(routing: str, in_paths: int, out_paths: int, values_per_path: int) -> Estimate:
    """The batched matmul that mixes paths: ``values_per_path`` values (C, or C*H*W) per path."""
    if routing == "none":
        return _ZERO
    return Estimate(0, 0, 2 * in_paths * out_paths * values_per_path, out_paths * values_per_path)


def _conv(in_channels: int, out_channels: int, paths: int, kernel: int, positions: int, norm: bool = True,
          bias: bool = False) -> Estimate:
    """``paths`` grouped convolutions (per-path channels) over ``positions`` output pixels, with batch norm."""
    weights = paths * in_channels * out_channels * kernel * kernel + (paths * out_channels if bias else 0)
    outputs = paths * out_channels * positions
    return Estimate(weights + (2 * paths * out_channels if norm else 0), 2 * paths * out_channels if norm else 0,
                    2 * paths * in_channels * out_channels * kernel * kernel * positions,
                    outputs * (2 if norm else 1))


def _first_conv(block: str, in_channels: int, out_channels: int, paths: int, positions: int) -> Estimate:
    """A block's first convolution (:data:`mpn_nas.layers.BLOCK_KINDS`): plain, selective kernel
    (one conv per dilation) or split attention (``radix`` groups of ``in_channels / radix`` inputs)."""
    if block == "selective_kernel":
        branches = len(SK_DILATIONS)
        convs = _conv(in_channels, out_channels, paths, 3, positions) * branches
    elif block == "split_attention":
        branches = SPLIT_RADIX
        convs = _conv(in_channels // branches, out_channels, paths * branches, 3, positions)
    else:
        return _conv(in_channels, out_channels, paths, 3, positions)
    return convs + _branch_attention(out_channels, branches, paths, positions)


def _branch_attention(channels: int, branches: int, paths: int, positions: int) -> Estimate:
    """:class:`~mpn_nas.layers.adaptive.BranchAttention`: two grouped 1x1 convs on pooled features,
    then the weighted sum of the branches (stacked and multiplied: two more branch-sized tensors)."""
    hidden, logits = attention_width(channels, branches), branches * channels
    return Estimate(paths * (channels * hidden + hidden + hidden * logits + logits), 0,
                    2 * paths * (channels * hidden + hidden * logits),
                    paths * (hidden + 2 * logits) + 2 * branches * paths * channels * positions)


def _resnet(arch: Any) -> Estimate:
    size, paths = arch.input_size, arch.stages[0].paths
    total = _conv(arch.in_channels, arch.stem_width, paths, 3, size * size)
    channels = arch.stem_width
    for stage in arch.stages:
        for index in range(stage.blocks):
            stride = stage.stride if index == 0 else 1
            out_size = (size - 1) // stride + 1
            positions = out_size * out_size
            total += _router(stage.routing, paths, stage.paths, channels)
            total += _mix(stage.routing, paths, stage.paths, channels * size * size)
            total += _first_conv(getattr(stage, "block", "basic"), channels, stage.width, stage.paths, positions)
            total += _conv(stage.width, stage.width, stage.paths, 3, positions)
            if stage.se:
                hidden = max(1, stage.width // 4)
                total += Estimate(2 * stage.paths * stage.width * hidden + stage.paths * (hidden + stage.width), 0,
                                  4 * stage.paths * stage.width * hidden, 2 * stage.paths * stage.width * positions)
            if stride != 1 or channels != stage.width:
                total += _conv(channels, stage.width, stage.paths, 1, positions)
            total += Estimate(0, 0, 0, stage.paths * stage.width * positions)  # residual sum
            channels, paths, size = stage.width, stage.paths, out_size
    return total + _linear(paths * channels, arch.num_classes)


def _linear(in_features: int, out_features: int) -> Estimate:
    return Estimate(in_features * out_features + out_features, 0, 2 * in_features * out_features, out_features)


def _mlp(arch: Any) -> Estimate:
    paths = arch.stages[0].paths
    stem = paths * arch.stem_width
    total = _linear(arch.in_channels * arch.input_size ** 2, stem) + Estimate(2 * stem, 2 * stem, 0, 2 * stem)
    features = arch.stem_width
    for stage in arch.stages:
        for _ in range(stage.blocks):
            total += _router(stage.routing, paths, stage.paths, features)
            total += _mix(stage.routing, paths, stage.paths, features)
            out = stage.paths * stage.width
            total += Estimate(stage.paths * features * stage.width + out + 2 * out, 2 * out,
                              2 * stage.paths * features * stage.width, 3 * out)
            features, paths = stage.width, stage.paths
    return total + _linear(paths * features, arch.num_classes)


def estimate(arch: Any) -> Estimate:
    """Closed-form cost of a validated architecture (any object with :class:`~mpn_nas.arch.Arch`'s fields)."""
    member_family = arch.member_family if arch.family == "ensemble" else arch.family
    member = _resnet(arch) if member_family == "resnet" else _mlp(arch)
    return member * arch.ensemble_size if arch.family == "ensemble" else member


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------

def check_value(name: str, value: Number) -> None:
    """Refuse ``value`` outside the table's row ``name`` (both bounds) in one line naming it: for
    settings that reach the library without going through the command line's ``type=`` checks."""
    limit = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not limit.contains(value) or (limit.kind == "int" and not float(value).is_integer()):
        raise UserError(f"{name} must be {limit.describe()}, got {value!r}")


def check_field(name: str, value: Number, where: Optional[str] = None) -> None:
    """Refuse ``value`` above the table's row ``name`` (the validators check the type and lower bound
    first), naming ``where``: a document field (default ``name``) or a phrase like ``space config list 'blocks'``."""
    limit = LIMITS[name]
    if value > limit.high:
        subject = where if where and " " in where else f"field {where or name!r}"
        raise UserError(f"{subject} = {_fmt(value)} is above the limit of {_fmt(limit.high)} "
                        f"({limit.why}); see the limits table in the README")


def check_document(arch: Any) -> None:
    """Refuse an architecture (fields already type-checked) above the table, naming the field;
    then its estimated FLOPs and memory. Cheap: arithmetic on the fields only."""
    check_field("stages (count)", len(arch.stages), "stages")
    for name in ("in_channels", "input_size", "num_classes", "stem_width"):
        check_field(name, getattr(arch, name))
    if arch.family == "ensemble":
        check_field("ensemble_size", arch.ensemble_size)
    for i, stage in enumerate(arch.stages):
        for name in ("paths", "blocks", "width"):
            check_field(f"stages[i].{name}", getattr(stage, name), f"stages[{i}].{name}")
    check_cost(estimate(arch), "this architecture")


def check_cost(cost: Estimate, what: str, batch_size: int = 1, training: bool = False, fix: str = "") -> None:
    """Refuse ``cost`` whose FLOPs exceed the table or whose memory exceeds :func:`max_memory`."""
    flops_limit = LIMITS["flops"].high
    if cost.flops > flops_limit:
        raise UserError(f"{what} needs about {cost.flops:.2g} FLOPs per sample, above the limit of "
                        f"{flops_limit:.0e}{fix or '; reduce width, paths, blocks or input_size'}")
    needed, available = cost.memory_bytes(batch_size, training), max_memory()
    if needed > available:
        doing = f"to train at batch size {batch_size}" if training else "for one sample"
        raise UserError(f"{what} needs about {_size(needed)} {doing} ({cost.params:,} parameters), more than the "
                        f"{_size(available)} allowed{fix or '; reduce width, paths, blocks or input_size'}, or "
                        "raise --max-memory")


def check_training(arch: Any, batch_size: int) -> None:
    """Refuse to train ``arch`` at ``batch_size`` when weights, gradients, optimiser states and the
    batch's activations would not fit :func:`max_memory`."""
    check_cost(estimate(arch), "this architecture", batch_size, training=True,
               fix="; lower --batch-size, use a smaller architecture")


def check_space(config: Any) -> None:
    """Refuse a search space config whose candidate lists exceed the table, naming the list, or whose
    largest architecture would not fit (naming the list whose largest candidate matters most).

    ``config`` has :class:`~search_spaces.config.SpaceConfig`'s fields (already type-checked).
    """
    for name in ("in_channels", "input_size", "num_classes", "stem_width"):
        check_field(name, getattr(config, name), f"space config field {name!r}")
    check_field("stages (count)", len(config.widths), "the stage count of space config field 'widths'")
    lists = {"path_counts": ("stages[i].paths", config.path_counts), "blocks": ("stages[i].blocks", config.blocks),
             **{f"widths[{i}]": ("stages[i].width", w) for i, w in enumerate(config.widths)}}
    for list_name, (row, values) in lists.items():
        check_field(row, max(values), f"the largest candidate of space config list {list_name!r}")

    def largest(shrunk: str = "") -> Estimate:
        pick = {name: (min if name == shrunk else max)(values) for name, (_, values) in lists.items()}
        costs = []
        for routing in config.routings:
            stages = [SimpleNamespace(blocks=pick["blocks"], width=pick[f"widths[{i}]"], paths=pick["path_counts"],
                                      routing=routing, stride=stride, se=False)
                      for i, stride in enumerate(config.strides)]
            costs.append(estimate(SimpleNamespace(family=config.family, in_channels=config.in_channels,
                                                  input_size=config.input_size, num_classes=config.num_classes,
                                                  stem_width=config.stem_width, stages=stages, ensemble_size=1)))
        return max(costs, key=lambda cost: cost.memory_bytes())

    top = largest()
    worst = min(lists, key=lambda name: largest(name).memory_bytes())  # shrinking it helps most
    check_cost(top, "the largest architecture of this space config",
               fix=f"; lower the largest candidate of {worst!r} ({max(lists[worst][1])})")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def flag_type(name: str) -> Callable[[str], Number]:
    """argparse ``type=`` for the flag ``name`` of the table: parses and range-checks it."""
    limit = LIMITS[name]

    def parse(text: str) -> Number:
        try:
            value: Number = int(text) if limit.kind == "int" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {limit.describe()}, got {text!r}") from None
        if not math.isfinite(value) or not limit.contains(value):
            raise argparse.ArgumentTypeError(f"must be {limit.describe()}, got {text}")
        return value

    parse.__name__ = name.lstrip("-").replace("-", "_")  # argparse names the type in some messages
    parse.limit = limit  # type: ignore[attr-defined]  # read by the command line's help
    return parse


def memory_flag(text: str) -> int:
    """argparse ``type=`` for ``--max-memory``: a size like ``8G``."""
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def gpu_list(text: str) -> list[int]:
    """argparse ``type=`` for ``--gpus 0,1``: distinct indices within the table (and the visible GPUs)."""
    check = flag_type("--gpus")
    indices = [check(part.strip()) for part in text.split(",") if part.strip()]
    if not indices or len(set(indices)) != len(indices):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated GPU indices like 0,1, got {text!r}")
    visible = _visible_gpus()
    if visible is not None and max(indices) >= visible:
        raise argparse.ArgumentTypeError(f"GPU {max(indices)} does not exist; this machine shows {visible} GPU(s)")
    return indices


def _visible_gpus() -> Optional[int]:
    """How many CUDA GPUs torch sees, or None when CUDA is not available (nothing to check against)."""
    import torch  # only when --gpus is given

    return torch.cuda.device_count() if torch.cuda.is_available() else None


# --------------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------------

def limits_table_markdown(rows: Iterable[Limit] = _ROWS) -> str:
    """The README's limits table (a test checks that the README holds exactly this text)."""
    lines = ["| field or flag | allowed | why |", "|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row.name}` | {row.describe()} | {row.why} |")
    lines.append(f"| memory of one network | parameters x {BYTES_PER_VALUE} B + activations of one sample (training: "
                 f"parameters x {TRAINING_COPIES_PER_PARAM} copies + activations x batch) <= `--max-memory` | "
                 f"default {DEFAULT_MEMORY_FRACTION:.0%} of the machine's memory; `{MAX_MEMORY_ENV}` passes it "
                 "to trial processes |")
    return "\n".join(lines)
