"""What the routers of a trained network do: mean routing matrices per class (and per context) and
a path-specialisation score per routed layer.

The specialisation score of a layer is the mutual information, in bits, between a sample's group
(its class, or its context) and the cross-connection that carries its signal, taking each sample's
routing matrix, normalised to sum to 1, as its distribution over the ``p_in * p_out`` connections:

    I(G; K) = sum_g P(g) sum_k P(k | g) log2(P(k | g) / P(k)),   P(k | g) = mean over samples of group g.

It is 0 when every group is routed alike on average (routing ``none``, a uniform or static router)
and at most ``min(log2(groups), log2(p_in * p_out))``: paths that specialise in classes score high.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .layers import MultiPathBasicBlock, MultiPathLinear, RoutedMix


@dataclass
class LayerRouting:
    """The routing of one routed layer over a data set."""

    name: str
    routing: str
    by_class: torch.Tensor  # (classes, p_in, p_out): mean routing matrix of each class
    class_score: float  # bits
    by_context: Optional[torch.Tensor] = None  # (contexts, p_in, p_out)
    context_score: Optional[float] = None

    def to_dict(self) -> dict:
        doc = {"name": self.name, "routing": self.routing, "in_paths": self.by_class.shape[1],
               "out_paths": self.by_class.shape[2], "class_specialisation_bits": self.class_score,
               "mean_routing_by_class": self.by_class.tolist()}
        if self.by_context is not None:
            doc.update(context_specialisation_bits=self.context_score,
                       mean_routing_by_context=self.by_context.tolist())
        return doc


@dataclass
class RoutingReport:
    layers: list[LayerRouting]
    samples: int
    class_names: list[str]
    context_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "classes": self.class_names, "contexts": self.context_names,
                "layers": [layer.to_dict() for layer in self.layers]}


def routing_points(model: nn.Module) -> Iterator[tuple[str, RoutedMix]]:
    """The routers an architecture document controls: each block's input router (resnet) and each
    multi-path dense layer's router (mlp). Routers inside a block, always ``none``, are left out."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, MultiPathBasicBlock):
            yield f"{prefix}conv1.mix", module.conv1.mix
        elif isinstance(module, MultiPathLinear):
            yield f"{prefix}mix", module.mix


@torch.no_grad()
def collect_routing(model: nn.Module, dataset: Dataset, batch_size: int = 256
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every routing point's matrices over ``dataset``: ``{name: (N, p_in, p_out)}``, labels ``(N,)``."""
    points = dict(routing_points(model))
    matrices: dict[str, list[torch.Tensor]] = {name: [] for name in points}
    labels = []
    model.eval()
    for mix in points.values():
        mix.record_routing = True
    try:
        for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            model(images)
            labels.append(targets)
            for name, mix in points.items():
                matrices[name].append(mix.last_routing.float().cpu())
    finally:
        for mix in points.values():
            mix.record_routing, mix.last_routing = False, None
    return {name: torch.cat(parts) for name, parts in matrices.items()}, torch.cat(labels)


def routing_spread(routing: torch.Tensor) -> float:
    """How much a layer's routing depends on its input: the standard deviation over samples of each entry
    of ``routing`` (``(N, p_in, p_out)``), averaged over the entries; 0 for a router that ignores its input."""
    return routing.float().std(dim=0).mean().item()


def group_means(routing: torch.Tensor, groups: torch.Tensor, group_count: int) -> torch.Tensor:
    """Mean ``(p_in, p_out)`` matrix of each group: ``(N, p_in, p_out)`` -> ``(group_count, p_in, p_out)``;
    a group without samples gets zeros."""
    totals = torch.zeros(group_count, *routing.shape[1:], dtype=torch.float64)
    totals.index_add_(0, groups, routing.double())
    counts = torch.bincount(groups, minlength=group_count).clamp(min=1).double()
    return (totals / counts[:, None, None]).float()


def specialisation_score(routing: torch.Tensor, groups: torch.Tensor) -> float:
    """Mutual information (bits) between group and connection; see the module docstring.

    ``routing``: ``(N, p_in, p_out)`` non-negative matrices; ``groups``: ``(N,)`` integer labels.
    """
    weights = routing.flatten(1).double()
    weights = weights / weights.sum(dim=1, keepdim=True)
    present, groups = torch.unique(groups, return_inverse=True)
    conditional = torch.zeros(len(present), weights.shape[1], dtype=torch.float64).index_add_(0, groups, weights)
    sizes = torch.bincount(groups, minlength=len(present)).double()
    conditional = conditional / sizes[:, None]
    prior = sizes / sizes.sum()
    marginal = (prior[:, None] * conditional).sum(dim=0)
    ratio = torch.where(conditional > 0, conditional / marginal.clamp(min=1e-300), torch.ones_like(conditional))
    information = (prior[:, None] * conditional * torch.log2(ratio)).sum().item()
    return max(0.0, information) if math.isfinite(information) else 0.0


def analyse_routing(model: nn.Module, dataset: Dataset, num_classes: int,
                    contexts: Optional[tuple[torch.Tensor, Sequence[str]]] = None,
                    class_names: Optional[Sequence[str]] = None, batch_size: int = 256) -> RoutingReport:
    """Mean routing per class (and per context, when ``contexts`` = ``(codes (N,), names)``) and the
    specialisation scores of every routing point of ``model`` over ``dataset``."""
    matrices, labels = collect_routing(model, dataset, batch_size)
    points = dict(routing_points(model))
    layers = []
    for name, routing in matrices.items():
        layer = LayerRouting(name, points[name].routing, group_means(routing, labels, num_classes),
                             specialisation_score(routing, labels))
        if contexts is not None:
            codes, names = contexts
            layer.by_context = group_means(routing, codes, len(names))
            layer.context_score = specialisation_score(routing, codes)
        layers.append(layer)
    return RoutingReport(layers, len(labels), list(class_names or map(str, range(num_classes))),
                         list(contexts[1]) if contexts is not None else [])


def plot_routing(report: RoutingReport, path: Path) -> None:
    """Heatmaps of the mean routing matrix (rows: source paths, columns: destination paths): one row
    of panels per layer and grouping (class, context), one panel per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for layer in report.layers:
        rows.append((layer, "class", layer.by_class, report.class_names, layer.class_score))
        if layer.by_context is not None:
            rows.append((layer, "context", layer.by_context, report.context_names, layer.context_score))
    columns = max(len(names) for *_, names, _ in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.25 * columns + 1.2, 1.5 * len(rows) + 0.4),
                                squeeze=False)
    image = None
    for row, (layer, grouping, means, names, score) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(names):
                axis.axis("off")
                continue
            image = axis.imshow(means[column].numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
            axis.set_title(names[column], fontsize=8)
        axes[row][0].set_ylabel(f"{layer.name}\n{layer.routing}\nby {grouping}: {score:.3g} bits", fontsize=7)
    if image is not None:
        figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="mean routing weight")
    figure.suptitle("mean routing matrix (rows: source path, columns: destination path)", fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)
