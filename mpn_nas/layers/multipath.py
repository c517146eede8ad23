"""Multi-path layers: ``p`` parallel operations run as one batched op, with a router in front.

Convolutional tensors are ``(B, p, C, H, W)``; dense tensors are ``(B, p, C)``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .routers import build_router


def _bmm_mix(x: torch.Tensor, allocation: torch.Tensor) -> torch.Tensor:
    batch, in_paths = x.shape[:2]
    mixed = torch.bmm(allocation.transpose(1, 2), x.reshape(batch, in_paths, -1))
    return mixed.view(batch, allocation.shape[2], *x.shape[2:])


class _MixPaths(torch.autograd.Function):
    """``bmm`` mix whose input gradient is a fresh, non-view tensor.

    Autograd's own ``bmm`` backward hands the input gradient back through a ``view``; the engine
    cannot accumulate into a view in place, so adding the router's pooling gradient to it cost
    one more full-size allocation and pass. Returned as a plain tensor, the add happens in place.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, allocation: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, allocation)
        return _bmm_mix(x, allocation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        x, allocation = ctx.saved_tensors
        # Under autocast the forward ran in lower precision: compute the backward in the gradient's dtype.
        x, allocation = x.to(grad.dtype), allocation.to(grad.dtype)
        batch, in_paths = x.shape[:2]
        flat_grad = grad.reshape(batch, allocation.shape[2], -1)
        grad_x = grad_allocation = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty(x.shape, dtype=grad.dtype, device=grad.device)
            torch.bmm(allocation, flat_grad, out=grad_x.view(batch, in_paths, -1))
        if ctx.needs_input_grad[1]:
            grad_allocation = torch.bmm(x.reshape(batch, in_paths, -1), flat_grad.transpose(1, 2))
        return grad_x, grad_allocation


def mix_paths(x: torch.Tensor, allocation: torch.Tensor) -> torch.Tensor:
    """``Z_j = sum_i A[:, i, j] * X_i`` as one batched matmul.

    x: ``(B, p_in, ...)``; allocation ``A``: ``(B, p_in, p_out)`` -> ``(B, p_out, ...)``.
    """
    allocation = allocation.to(x.dtype)
    if torch.is_grad_enabled() and (x.requires_grad or allocation.requires_grad):
        return _MixPaths.apply(x, allocation)
    return _bmm_mix(x, allocation)  # tracers, exporters and the meta-device FLOP counter see the plain op


class RoutedMix(nn.Module):
    """Router plus the mix it decides. With routing ``none`` it is the identity and costs nothing.

    Set ``record_routing = True`` to keep the last routing matrix in ``last_routing``.
    """

    def __init__(self, routing: str, in_paths: int, out_paths: int, channels: int, density: float = 1.0) -> None:
        super().__init__()
        self.routing = routing
        self.router = build_router(routing, in_paths, out_paths, channels, density)
        self.record_routing = False
        self.last_routing: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, p_in, ...)`` -> ``(B, p_out, ...)``."""
        if self.routing == "none" and not self.record_routing:
            return x
        allocation = self.router(x)  # A: (B, p_in, p_out)
        if self.record_routing:
            self.last_routing = allocation.detach()
        return x if self.routing == "none" else mix_paths(x, allocation)


class MultiPathConv2d(nn.Module):
    """Router, then ``path_count`` parallel convolutions as one grouped convolution, per-path
    batch norm and ReLU.

    Input ``(B, in_paths, in_channels, H, W)`` -> output ``(B, path_count, out_channels, H', W')``;
    ``in_channels``/``out_channels`` are per path. ``in_paths`` defaults to ``path_count``.
    """

    def __init__(self, in_channels: int, out_channels: int, path_count: int, routing: str = "none",
                 density: float = 1.0, kernel_size: int = 3, stride: int = 1, in_paths: Optional[int] = None,
                 norm: bool = True, activation: bool = True, bias: bool = False) -> None:
        super().__init__()
        in_paths = path_count if in_paths is None else in_paths
        self.path_count, self.out_channels = path_count, out_channels
        self.mix = RoutedMix(routing, in_paths, path_count, in_channels, density)
        self.conv = nn.Conv2d(path_count * in_channels, path_count * out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, groups=path_count, bias=bias)
        self.norm = nn.BatchNorm2d(path_count * out_channels) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def parallel_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The ``path_count`` parallel convolutions (with norm and activation) without the router, on
        already routed ``z``: ``(B, p, C_in, H, W)`` -> ``(B, p, C_out, H', W')``. Blocks and
        supernets call it when they did the routing themselves."""
        batch = z.shape[0]
        y = self.act(self.norm(self.conv(z.flatten(1, 2))))
        return y.view(batch, self.path_count, self.out_channels, *y.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parallel_forward(self.mix(x))


class MultiPathLinear(nn.Module):
    """Router, then ``path_count`` parallel linear layers as one batched matmul, per-path batch
    norm and ReLU.

    Input ``(B, in_paths, in_features)`` -> output ``(B, path_count, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, path_count: int, routing: str = "none",
                 density: float = 1.0, in_paths: Optional[int] = None, norm: bool = True,
                 activation: bool = True, bias: bool = True) -> None:
        super().__init__()
        in_paths = path_count if in_paths is None else in_paths
        self.path_count, self.out_features = path_count, out_features
        self.mix = RoutedMix(routing, in_paths, path_count, in_features, density)
        bound = 1.0 / in_features ** 0.5  # nn.Linear's default initialisation, per path
        self.weight = nn.Parameter(torch.empty(path_count, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(path_count, out_features).uniform_(-bound, bound)) if bias else None
        self.norm = nn.BatchNorm1d(path_count * out_features) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def parallel_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The ``path_count`` parallel linear layers (with norm and activation) without the router, on
        already routed ``z``: ``(B, p, in_features)`` -> ``(B, p, out_features)``."""
        y = torch.bmm(z.transpose(0, 1), self.weight).transpose(0, 1)  # (B, p, out)
        if self.bias is not None:
            y = y + self.bias
        y = self.act(self.norm(y.flatten(1)))
        return y.view(-1, self.path_count, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parallel_forward(self.mix(x))


class MultiPathSqueezeExcitation(nn.Module):
    """Squeeze-excitation applied to each path separately (grouped 1x1 convs on pooled features).

    ``(B, p, C, H, W)`` -> same shape.
    """

    def __init__(self, channels: int, path_count: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.path_count = path_count
        self.gate = nn.Sequential(
            nn.Conv2d(path_count * channels, path_count * hidden, 1, groups=path_count), nn.ReLU(inplace=True),
            nn.Conv2d(path_count * hidden, path_count * channels, 1, groups=path_count), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(3, 4)).flatten(1)[:, :, None, None]  # (B, p*C, 1, 1)
        return x * self.gate(pooled).view(*x.shape[:3], 1, 1)
