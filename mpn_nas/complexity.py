"""Complexity accounting: parameters, FLOPs (``FlopCounterMode``, routing included) and latency."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from .arch import Arch
from .models import build_model


@dataclass(frozen=True)
class Complexity:
    params: int
    flops: int
    latency_ms: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def sample_input(arch: Arch, batch: int = 1, device: str = "cpu") -> torch.Tensor:
    """A ``(batch, in_channels, input_size, input_size)`` input of the architecture's shape."""
    return torch.randn(batch, arch.in_channels, arch.input_size, arch.input_size, device=device)


def count_params_and_flops(arch: Arch) -> tuple[int, int]:
    """Parameters and FLOPs of one sample, measured on the meta device: no memory, no arithmetic,
    so thousands of architectures can be screened quickly."""
    with torch.device("meta"):
        model = build_model(arch).eval()
        x = sample_input(arch, device="meta")
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(x)
    return params, int(counter.get_total_flops())


def measure_latency_ms(arch: Arch, device: str = "cpu", repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one batch-1 forward pass in eval mode, in milliseconds."""
    model = build_model(arch).to(device).eval()
    x = sample_input(arch, device=device)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def profile(arch: Arch, device: str = "cpu", latency: bool = True, repeats: int = 20) -> Complexity:
    """Parameters, FLOPs for one sample at the architecture's input size, and median latency."""
    params, flops = count_params_and_flops(arch)
    return Complexity(params, flops, measure_latency_ms(arch, device, repeats) if latency else None)
