"""Routers: per-sample allocation matrices between the parallel tensors of two layers.

A router between a layer with ``in_paths`` parallel tensors and one with ``out_paths`` parallel
operations maps ``x`` of shape ``(B, in_paths, C, H, W)`` or ``(B, in_paths, C)`` to ``A`` of shape
``(B, in_paths, out_paths)``; destination path ``j`` then receives ``sum_i A[:, i, j] * x[:, i]``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Softmax weight the aligned connection gets at initialisation: an untrained routed network leans
# towards the plain multi-path one. With 0.9 the softmax sat in its flat region and, after training,
# the routing barely depended on the input (benchmarks/router_learning.py --aligned-weights 0.9 0.5).
ALIGNED_INIT_WEIGHT = 0.5


def kept_connections(density: float, candidates: int) -> int:
    """``k = clamp(round(density * candidates), 1, candidates)``, rounding halves up."""
    return min(max(int(math.floor(density * candidates + 0.5)), 1), candidates)


def aligned_index(index: int, count: int, other_count: int) -> int:
    """The path of the other layer aligned with ``index``: itself when counts match."""
    return (index * other_count) // count


def density_mask(in_paths: int, out_paths: int, density: float, per: str) -> torch.Tensor:
    """Boolean ``(in_paths, out_paths)`` mask of kept connections (banded circulant window).

    ``per="destination"``: each destination keeps ``k`` sources starting at its aligned source.
    ``per="source"``: each source keeps ``k`` destinations starting at its aligned destination.
    Built from Python lists so that it also works under ``torch.device("meta")``.
    """
    if per == "source":
        return density_mask(out_paths, in_paths, density, "destination").T
    if per != "destination":
        raise ValueError(f"per must be 'destination' or 'source', got {per!r}")
    rows = [[False] * out_paths for _ in range(in_paths)]
    k = kept_connections(density, in_paths)
    for j in range(out_paths):
        start = aligned_index(j, out_paths, in_paths)
        for offset in range(k):
            rows[(start + offset) % in_paths][j] = True
    return torch.tensor(rows, dtype=torch.bool)


def initial_logits(in_paths: int, out_paths: int, kept: int,
                   aligned_weight: float = ALIGNED_INIT_WEIGHT) -> torch.Tensor:
    """Logits giving ``aligned_weight`` to the aligned path (square) or uniform allocation
    (rectangular), for a softmax over ``kept`` unmasked candidates."""
    logits = torch.zeros(in_paths, out_paths)
    if in_paths == out_paths and kept > 1:
        gain = math.log(aligned_weight * (kept - 1) / (1 - aligned_weight))
        logits = logits + torch.eye(in_paths) * gain
    return logits


def masked_softmax(logits: torch.Tensor, mask: "torch.Tensor | None", dim: int) -> torch.Tensor:
    """Softmax over ``dim`` of ``(B, in_paths, out_paths)`` logits, with entries outside the boolean
    ``mask`` exactly 0 (``None``: nothing masked)."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=dim)


class _SpatialMean(torch.autograd.Function):
    """``x.mean(dim=(3, 4))`` whose backward returns a broadcast view instead of a full-size tensor.

    Autograd's own mean materialises ``grad / (H * W)`` at the input's size and then adds it,
    out of place, to the gradient the mix sends to the same input: two passes over the largest
    tensor of the layer. A zero-stride view lets the engine add it in place into the mix's gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.input_shape = x.shape
        return x.mean(dim=(3, 4))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        height, width = ctx.input_shape[3:]
        return (grad / (height * width))[..., None, None].expand(ctx.input_shape)


def pool_paths(x: torch.Tensor) -> torch.Tensor:
    """Global average pool of each path: ``(B, p, C, H, W)`` or ``(B, p, C)`` to ``(B, p, C)``."""
    if x.dim() != 5:
        return x
    # The custom backward only matters when autograd records; tracers and exporters see a plain mean.
    return _SpatialMean.apply(x) if torch.is_grad_enabled() and x.requires_grad else x.mean(dim=(3, 4))


class Router(nn.Module):
    """Base class: holds the density mask and applies the masked softmax."""

    routing: str = ""
    reads_features = False  # whether the allocation depends on the input (then it needs the channel count)
    softmax_dim: int = 1  # 1: over sources per destination; 2: over destinations per source
    mask_per: str = "destination"

    def __init__(self, in_paths: int, out_paths: int, density: float = 1.0) -> None:
        super().__init__()
        if in_paths < 1 or out_paths < 1:
            raise ValueError(f"path counts must be >= 1, got {in_paths} -> {out_paths}")
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        self.in_paths, self.out_paths, self.density = in_paths, out_paths, density
        self.register_buffer("mask", density_mask(in_paths, out_paths, density, self.mask_per), persistent=False)
        candidates = in_paths if self.mask_per == "destination" else out_paths
        self.kept = kept_connections(density, candidates)
        # All-to-all routing has nothing to mask: skip the masked_fill and its backward.
        self.masked = self.kept < candidates

    def normalise(self, logits: torch.Tensor) -> torch.Tensor:
        """Masked softmax of ``(B, in_paths, out_paths)`` logits; masked entries are exactly 0."""
        return masked_softmax(logits, self.mask if self.masked else None, self.softmax_dim)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The logits :meth:`normalise` turns into ``A`` (one-shot supernets mix them over densities)."""
        raise NotImplementedError

    @classmethod
    def for_layer(cls, in_paths: int, out_paths: int, channels: int, density: float = 1.0) -> "Router":
        """The router between ``in_paths`` sources of ``channels`` channels and ``out_paths``
        destinations; routers that do not read the features ignore ``channels``."""
        if cls.reads_features:
            return cls(in_paths, out_paths, channels, density)
        return cls(in_paths, out_paths, density)

    def logit_bias(self) -> "torch.Tensor | None":
        """The parameter holding the logits' input-independent part, ``(in_paths, out_paths)`` values."""
        return None

    def reset_logits(self, aligned_weight: float = ALIGNED_INIT_WEIGHT) -> None:
        """Set :meth:`logit_bias` to :func:`initial_logits` (``benchmarks/router_learning.py`` varies
        ``aligned_weight``); routers without logits have nothing to set."""
        bias = self.logit_bias()
        if bias is not None:
            with torch.no_grad():
                bias.copy_(initial_logits(self.in_paths, self.out_paths, self.kept, aligned_weight).view_as(bias))

    def extra_repr(self) -> str:
        return f"{self.in_paths} -> {self.out_paths}, density={self.density}"


class IdentityRouter(Router):
    """``none``: path ``i`` feeds path ``i`` only (independent paths)."""

    routing = "none"

    def __init__(self, in_paths: int, out_paths: int, density: float = 1.0) -> None:
        if in_paths != out_paths:
            raise ValueError(f"routing 'none' needs equal path counts, got {in_paths} -> {out_paths}")
        super().__init__(in_paths, out_paths, density)
        self.mask = torch.eye(in_paths, dtype=torch.bool)  # density has no meaning without cross-connections
        self.kept = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, p, ...)`` -> identity ``A``: ``(B, p, p)``."""
        eye = torch.eye(self.in_paths, device=x.device, dtype=x.dtype)
        return eye.expand(x.shape[0], -1, -1)


class StaticRouter(Router):
    """``static``: one learned logit matrix shared by every input (cross-stitch-like baseline)."""

    routing = "static"

    def __init__(self, in_paths: int, out_paths: int, density: float = 1.0) -> None:
        super().__init__(in_paths, out_paths, density)
        self.logits = nn.Parameter(torch.zeros(in_paths, out_paths))
        self.reset_logits()

    def logit_bias(self) -> torch.Tensor:
        return self.logits

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Logits before the masked softmax: ``(1, in_paths, out_paths)``, broadcast over the batch."""
        return self.logits.to(x.dtype).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_paths, ...)`` -> ``A``: ``(B, in_paths, out_paths)``, equal for every sample."""
        return self.normalise(self.scores(x)).expand(x.shape[0], -1, -1)


class CrossPredictionRouter(Router):
    """``cross_prediction``: each source predicts, from its own pooled features, its split among
    the destinations. The ``in_paths`` predictors run as one batched matmul."""

    routing = "cross_prediction"
    reads_features = True
    softmax_dim = 2
    mask_per = "source"

    def __init__(self, in_paths: int, out_paths: int, channels: int, density: float = 1.0) -> None:
        super().__init__(in_paths, out_paths, density)
        bound = 1.0 / math.sqrt(channels)
        self.weight = nn.Parameter(torch.empty(in_paths, channels, out_paths).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(in_paths, out_paths))
        self.reset_logits()

    def logit_bias(self) -> torch.Tensor:
        return self.bias

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Logits before the masked softmax: ``(B, in_paths, out_paths)``."""
        pooled = pool_paths(x)  # (B, p_in, C)
        # One matmul per source, batched over sources: half the time of the equivalent einsum on CPU.
        return torch.bmm(pooled.transpose(0, 1), self.weight).transpose(0, 1) + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_paths, C[, H, W])`` -> ``A``: ``(B, in_paths, out_paths)``."""
        return self.normalise(self.scores(x))


def gate_width(in_paths: int, out_paths: int, channels: int, reduction: int = 8) -> int:
    """Hidden width of the ``feature_dependent`` gate: ``max(out_paths, in_paths * channels // reduction)``."""
    return max(out_paths, in_paths * channels // reduction)


class FeatureDependentRouter(Router):
    """``feature_dependent``: one gate on the pooled features of all sources computes every
    cross-connection weight at once (cheaper than one predictor per source)."""

    routing = "feature_dependent"
    reads_features = True

    def __init__(self, in_paths: int, out_paths: int, channels: int, density: float = 1.0,
                 reduction: int = 8) -> None:
        super().__init__(in_paths, out_paths, density)
        hidden = gate_width(in_paths, out_paths, channels, reduction)
        self.gate = nn.Sequential(
            nn.Linear(in_paths * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, in_paths * out_paths)
        )
        self.reset_logits()

    def logit_bias(self) -> torch.Tensor:
        return self.gate[2].bias  # (in_paths * out_paths,)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Logits before the masked softmax: ``(B, in_paths, out_paths)``."""
        pooled = pool_paths(x).flatten(1)  # (B, p_in * C)
        # Pooled post-ReLU features are all positive and alike in size, so each hidden unit saw one
        # large input-independent offset and was either dead for every input or live for every input.
        pooled = pooled - pooled.mean(dim=1, keepdim=True)
        return self.gate(pooled).view(-1, self.in_paths, self.out_paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_paths, C[, H, W])`` -> ``A``: ``(B, in_paths, out_paths)``."""
        return self.normalise(self.scores(x))


# The routing types by name, as architecture documents, spaces and the command line spell them.
# Adding one: its Router subclass above (with ``routing`` set) and a row here.
ROUTERS: dict[str, type[Router]] = {cls.routing: cls for cls in (
    IdentityRouter, StaticRouter, CrossPredictionRouter, FeatureDependentRouter)}
ROUTING_TYPES = tuple(ROUTERS)


def build_router(routing: str, in_paths: int, out_paths: int, channels: int, density: float = 1.0) -> Router:
    """Router of the given type between ``in_paths`` sources of ``channels`` channels and ``out_paths``."""
    if routing not in ROUTERS:
        raise ValueError(f"unknown routing {routing!r}; allowed: {', '.join(ROUTING_TYPES)}")
    return ROUTERS[routing].for_layer(in_paths, out_paths, channels, density)
